"""Argument checks shared by the public functions.

Every error is raised as `raise error("...", Kind)`, which prefixes the message with the public function called:
`@public` (or `with entry("Name"):` outside the package) records it for the call, the outermost one winning, and
`within(detail)` adds which part of the input is checked. The checks run while a function is traced, on shapes,
dtypes and concrete values, so they fire under `jit` at no cost in the compiled program; traced values pass through.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import numbers
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

F32 = np.finfo(np.float32)
LOG_ALPHA_MIN, LOG_ALPHA_MAX = -87.0, 88.0  # exp(log_alpha) is a normal float32 in [log(F32.tiny), log(F32.max)].

_F = TypeVar("_F", bound=Callable[..., Any])
_ENTRY: contextvars.ContextVar[str | None] = contextvars.ContextVar("entropy_jax_entry_point", default=None)


def caller() -> str:
  """The name of the outermost public function being called, for messages."""
  return _ENTRY.get() or "entropy_jax"


def error(message: str, kind: type[Exception] = ValueError) -> Exception:
  """`kind("<caller>: <message>")`, the one way the library words an error: `raise _checks.error(...)`."""
  return kind(f"{caller()}: {message}")


@contextlib.contextmanager
def _naming(name: str) -> Iterator[None]:
  token = _ENTRY.set(name)
  try:
    yield
  finally:
    _ENTRY.reset(token)


def entry(name: str) -> contextlib.AbstractContextManager[None]:
  """Within the block, errors name `name`, unless an outer entry point is active."""
  return _naming(_ENTRY.get() or name)


def within(detail: str) -> contextlib.AbstractContextManager[None]:
  """Within the block, errors name the caller followed by `(detail)`: what part of its input is checked."""
  return _naming(f"{caller()} ({detail})")


def public(fn: _F) -> _F:
  """Marks `fn` as a public entry point: the checks it runs name it."""

  @functools.wraps(fn)
  def wrapper(*args: Any, **kwargs: Any) -> Any:
    with entry(fn.__name__):
      return fn(*args, **kwargs)

  return wrapper  # type: ignore[return-value]


def as_array(name: str, x: Any) -> jax.Array:
  """`jnp.asarray(x)`, raising a `TypeError` that names `x` if it is no array."""
  try:  # jnp.asarray would read a string as a dtype name.
    return jnp.asarray(None if isinstance(x, (str, bytes)) else x)
  except (TypeError, ValueError):
    raise error(f"`{name}` must be a number or array; got {x!r} of type {type(x).__name__}.", TypeError) from None


def floating(name: str, x: Any) -> jax.Array:
  """Returns `x` as an array, raising `TypeError` unless it is floating point."""
  x = as_array(name, x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise error(f"`{name}` must be a floating-point array; got dtype {x.dtype}.", TypeError)
  return x


def shaped(name: str, x: jax.Array, ok: bool, expected: str) -> jax.Array:
  """Returns `x`, raising `ValueError` unless `ok`: "`name` must have shape <expected>; got shape ..."."""
  if not ok:
    raise error(f"`{name}` must have shape {expected}; got shape {x.shape}.")
  return x


def nonempty(name: str, x: jax.Array) -> jax.Array:
  """Returns `x`, raising `ValueError` if its leading (batch) axis is empty."""
  if x.shape[0] == 0:
    raise error(f"`{name}` has an empty batch (shape {x.shape}); the entropy of an empty batch is undefined.")
  return x


def scalar(name: str, x: Any) -> jax.Array:
  """Returns `x` as a floating scalar array, raising unless its shape is ()."""
  x = floating(name, x)
  return shaped(name, x, x.ndim == 0, "() (under a population, vmap the function so each member sees a scalar)")


def batch_vector(name: str, x: Any, batch: int) -> jax.Array:
  """Returns `x` as a float scalar or `[batch]` array; a plain int (a target of `-action_dim`) is taken as a float."""
  if isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_)):
    x = float(x)
  x = floating(name, x)
  return shaped(name, x, x.ndim == 0 or x.shape == (batch,), f"() or ({batch},), to match the batch")


def accumulation_dtype(*xs: jax.Array) -> Any:
  """The dtype to reduce in: the inputs' float type, never below float32 (bfloat16 and float16 reduce in float32)."""
  return jnp.promote_types(jnp.result_type(*xs), jnp.float32)


def continuous_log_probs(log_probs: Any) -> jax.Array:
  """`[B]` or `[B, 1]` floating log-probabilities, B >= 1, as `[B]`."""
  x = floating("log_probs", log_probs)
  shaped("log_probs", x, x.ndim in (1, 2) and x.shape[1:] in ((), (1,)), "[B] or [B, 1]")
  return nonempty("log_probs", x).reshape(-1)


def sample_weights(weights: Any, batch: int) -> jax.Array | None:
  """`None`, or `[batch]` floating per-sample weights."""
  if weights is None:
    return None
  w = floating("weights", weights)
  return shaped("weights", w, w.shape == (batch,), f"({batch},), to match the batch")


def discrete_inputs(probs: Any, log_probs: Any, mask: Any) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """`[B, A]` floating `probs` and `log_probs` (B, A >= 1) and an optional `[B, A]` bool mask."""
  probs = floating("probs", probs)
  nonempty("probs", shaped("probs", probs, probs.ndim == 2 and probs.shape[1] >= 1, "[B, A] with A >= 1"))
  log_probs = floating("log_probs", log_probs)
  if log_probs.shape != probs.shape:
    raise error(f"`probs` and `log_probs` must have the same shape [B, A]; got {probs.shape} and {log_probs.shape}.")
  if mask is not None:
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
      raise error(f"`mask` must be bool; got dtype {mask.dtype}.", TypeError)
    shaped("mask", mask, mask.shape == probs.shape, f"{probs.shape}, that of `probs`")
  return probs, log_probs, mask


def concrete(name: str, value: Any) -> np.ndarray | None:
  """`value` as a real-valued NumPy array, or None if it is traced (NumPy also runs while a constructor is traced)."""
  if isinstance(value, jax.core.Tracer):
    return None
  try:
    arr = np.asarray(value)
  except (TypeError, ValueError):
    arr = np.asarray(None)
  if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
    raise error(f"`{name}` must be a real number; got {value!r}.", TypeError)
  return arr


def first_bad(arr: np.ndarray, bad: np.ndarray) -> str:
  """The first offending value of `arr`, with its index if `arr` is not a scalar."""
  if arr.ndim == 0:
    return str(arr[()])
  index = tuple(int(i) for i in np.argwhere(bad)[0])
  return f"{arr[index]!s} at index {index[0] if len(index) == 1 else index}"


def check(label: str, arr: np.ndarray | None, ok: Callable[[np.ndarray], Any], expected: str) -> None:
  """Raises `ValueError` "<label> must <expected>; got <the first value where not ok>" unless `ok(arr)` holds."""
  if arr is not None:
    with np.errstate(all="ignore"):
      good = np.asarray(ok(arr))
    if not np.all(good):
      raise error(f"{label} must {expected}; got {first_bad(arr, ~good)}.")


def float32_value(name: str, value: Any, *, label: str | None = None) -> jax.Array:
  """`value` as float32, rejecting NaN, infinities and values float32 overflows (`label` replaces "`name`")."""
  expected = f"be finite and representable in float32 (|x| <= {F32.max:.4g})"
  check(label or f"`{name}`", concrete(name, value), lambda a: np.isfinite(a.astype(np.float32)), expected)
  return jnp.asarray(value, jnp.float32)


def log_alpha(name: str, alpha: Any) -> jax.Array:
  """`log(alpha)` in float32, after checking every alpha lies in `[exp(LOG_ALPHA_MIN), exp(LOG_ALPHA_MAX)]`."""
  log = lambda a: np.log(a.astype(np.float32).astype(np.float64))  # NaN below 0, -inf at 0.
  usable = lambda a: (log(a) >= LOG_ALPHA_MIN) & (log(a) <= LOG_ALPHA_MAX)
  bounds = f"[{math.exp(LOG_ALPHA_MIN):.4g}, {math.exp(LOG_ALPHA_MAX):.4g}]"
  bounds += f" (log alpha in [{LOG_ALPHA_MIN:g}, {LOG_ALPHA_MAX:g}])"
  check(f"`{name}`", concrete(name, alpha), usable, f"be positive and lie in the usable range {bounds}")
  return jnp.log(jnp.asarray(alpha, jnp.float32))


def in_range(name: str, value: Any, *, low: float, high: float, low_open=False, high_open=False) -> jax.Array:
  """`value` as float32, raising `ValueError` unless every element of a concrete `value` lies in the interval."""
  ok = lambda a: ((a > low) if low_open else (a >= low)) & ((a < high) if high_open else (a <= high))
  check(f"`{name}`", concrete(name, value), ok, f"lie in {'(['[not low_open]}{low:g}, {high:g}{')]'[not high_open]}")
  return jnp.asarray(value, jnp.float32)


def positive(name: str, value: Any) -> jax.Array:
  """`value` as float32, finite and > 0."""
  check(f"`{name}`", concrete(name, value), lambda a: a > 0, "be > 0")
  return float32_value(name, value)


def non_negative(name: str, value: Any) -> jax.Array:
  """`value` as float32, >= 0 (`inf` allowed: a threshold that always holds)."""
  check(f"`{name}`", concrete(name, value), lambda a: a >= 0, "be >= 0")
  return jnp.asarray(value, jnp.float32)


def int_steps(name: str, value: Any, *, minimum: int) -> jax.Array:
  """`value` as int32, an integer (or integer array) in `[minimum, 2**31 - 1]`."""
  if not isinstance(value, jax.core.Tracer):
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.integer):
      raise error(f"`{name}` must be an int or int array; got {value!r} of dtype {arr.dtype}.", TypeError)
    check(f"`{name}`", arr, lambda a: (a >= minimum) & (a <= np.iinfo(np.int32).max), f"lie in [{minimum}, 2**31 - 1]")
  return jnp.asarray(value, jnp.int32)


def positive_int(name: str, value: Any) -> int:
  """Returns `value` as an int, raising unless it is an integer >= 1."""
  kind = ValueError if isinstance(value, numbers.Integral) and not isinstance(value, bool) else TypeError
  if kind is TypeError or value < 1:
    of_type = f" of type {type(value).__name__}" if kind is TypeError else ""
    raise error(f"`{name}` must be a positive int; got {value!r}{of_type}.", kind)
  return int(value)


def learning_rates(opt_state: Any) -> None:
  """Rejects an injected learning rate that is < 0 (0 starts a warm-up) or not finite in float32."""
  usable = lambda a: np.isfinite(a.astype(np.float32)) & (a >= 0)
  for path, value in optax.tree_utils.tree_get_all_with_path(opt_state, "learning_rate"):
    if isinstance(value, (jax.Array, np.ndarray)) and not isinstance(value, jax.core.Tracer):
      label = f"the optimizer's `learning_rate` at {jax.tree_util.keystr(path)}"
      check(label, np.asarray(value), usable, "be finite and representable in float32, and >= 0")
