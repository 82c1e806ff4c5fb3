"""Argument checks shared by the public functions.

Every error names the public function the user called, the argument, what
was expected and what came. The name is not passed down: `@public` records
it for the duration of a call and `caller()` reads it back. The outermost
public function wins (`fixed_alpha_state` builds with `init_entropy_state`,
and its errors say `fixed_alpha_state`); a caller outside the package names
itself with `with entry("EntropyModule"):`; `within(detail)` says which part
of the input is checked ("init_entropy_state (the schedule's value at step
0)"). The checks run while a function is traced, so they fire under `jit` and
`vmap` too and cost nothing in the compiled program.

Arrays are checked on static information (shape, rank, dtype). Numbers a
constructor takes (an initial alpha, a target, a learning rate) are checked
after conversion to float32, the dtype of the state: a value float64 holds
but float32 overflows, flushes to zero or makes subnormal is rejected before
any array is built. Traced values cannot be inspected and pass through.

The errors are `ValueError` or `TypeError`, what a Python caller catches
(`chex.assert_*` raise `AssertionError` with generic text).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import numbers
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

F32 = np.finfo(np.float32)
F32_TINY = float(F32.tiny)  # The smallest normal float32, 1.1754944e-38.
F32_MAX = float(F32.max)  # 3.4028235e+38.

_F = TypeVar("_F", bound=Callable[..., Any])
_ENTRY: contextvars.ContextVar[str | None] = contextvars.ContextVar("entropy_jax_entry_point", default=None)


# ----------------------------------------------------------------------------
# The public function being called.


def caller() -> str:
  """The name of the outermost public function being called, for messages."""
  return _ENTRY.get() or "entropy_jax"


def error(message: str, kind: type[Exception] = ValueError) -> Exception:
  """`kind("<caller>: <message>")`, the one way the library words an error: `raise _checks.error(...)`."""
  return kind(f"{caller()}: {message}")


@contextlib.contextmanager
def entry(name: str) -> Iterator[None]:
  """Within the block, errors name `name`, unless an outer entry point is active."""
  token = _ENTRY.set(name) if _ENTRY.get() is None else None
  try:
    yield
  finally:
    if token is not None:
      _ENTRY.reset(token)


@contextlib.contextmanager
def within(detail: str) -> Iterator[None]:
  """Within the block, errors name the caller followed by `(detail)`: what part of its input is checked."""
  token = _ENTRY.set(f"{caller()} ({detail})")
  try:
    yield
  finally:
    _ENTRY.reset(token)


def public(fn: _F) -> _F:
  """Marks `fn` as a public entry point: the checks it runs name it."""

  @functools.wraps(fn)
  def wrapper(*args: Any, **kwargs: Any) -> Any:
    with entry(fn.__name__):
      return fn(*args, **kwargs)

  return wrapper  # type: ignore[return-value]


# ----------------------------------------------------------------------------
# Trace-time checks of arrays.


def as_array(name: str, x: Any) -> jax.Array:
  """`jnp.asarray(x)`, raising a `TypeError` that names `x` if it is no array."""
  message = f"{caller()}: `{name}` must be a number or numeric array; got {x!r} of type {type(x).__name__}."
  if isinstance(x, (str, bytes)):  # jnp.asarray would read a string as a dtype name.
    raise TypeError(message)
  try:
    return jnp.asarray(x)
  except (TypeError, ValueError) as e:
    raise TypeError(message) from e


def floating(name: str, x: Any) -> jax.Array:
  """Returns `x` as an array, raising `TypeError` unless it is floating point."""
  x = as_array(name, x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{caller()}: `{name}` must be a floating-point array; got dtype {x.dtype}.")
  return x


def scalar(name: str, x: Any) -> jax.Array:
  """Returns `x` as a floating scalar array, raising unless its shape is ()."""
  x = floating(name, x)
  if x.ndim != 0:
    raise ValueError(
      f"{caller()}: `{name}` must be a scalar (shape ()); got shape {x.shape}."
      " Under a population, vmap the function so each member sees a scalar."
    )
  return x


def batch_vector(name: str, x: Any, batch: int) -> jax.Array:
  """Returns `x` as an array of shape [batch], or a scalar, or raises.

  A plain Python int (such as a target of `-action_dim`) is taken as a float.
  """
  if isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_)):
    x = float(x)
  x = floating(name, x)
  if x.ndim == 0:
    return x
  if x.shape != (batch,):
    raise ValueError(
      f"{caller()}: `{name}` must be a scalar or have shape ({batch},) to match the batch; got shape {x.shape}."
    )
  return x


def nonempty_batch(name: str, shape: tuple[int, ...]) -> None:
  """Raises `ValueError` if the leading (batch) axis of `shape` is empty."""
  if shape[0] == 0:
    raise ValueError(
      f"{caller()}: `{name}` has an empty batch (shape {shape}); the entropy of"
      " an empty batch is undefined. Expected at least one sample."
    )


def accumulation_dtype(*xs: jax.Array) -> Any:
  """The dtype to reduce in: the inputs' float type, but never below float32.

  bfloat16 and float16 inputs are accumulated in float32; float32 stays
  float32; float64 (under `jax_enable_x64`) stays float64.
  """
  return jnp.promote_types(jnp.result_type(*xs), jnp.float32)


# ----------------------------------------------------------------------------
# Value checks of concrete numbers.


def concrete(name: str, value: Any) -> np.ndarray | None:
  """`value` as a real-valued NumPy array, or None if it is traced.

  NumPy is used so that the checks also run while a constructor is traced
  (`jax.jit`, `jax.eval_shape`) on concrete arguments.

  Raises:
    TypeError: `value` is not a real number or array of real numbers.
  """
  if isinstance(value, jax.core.Tracer):
    return None
  try:
    arr = np.asarray(value)
  except (TypeError, ValueError) as e:
    raise TypeError(f"{caller()}: `{name}` must be a number; got {value!r}.") from e
  if arr.dtype == object:
    raise TypeError(
      f"{caller()}: `{name}` must be a number or numeric array; got {value!r} of type {type(value).__name__}."
    )
  if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
    raise TypeError(f"{caller()}: `{name}` must be a real number; got {value!r}.")
  return arr


def first_bad(arr: np.ndarray, bad: np.ndarray) -> str:
  """The first offending value of `arr`, with its index if `arr` is not a scalar."""
  if arr.ndim == 0:
    return repr(arr.item())
  index = tuple(int(i) for i in np.argwhere(bad)[0])
  return f"{arr[index].item()!r} at index {index[0] if len(index) == 1 else index}"


def float32_value(name: str, value: Any, *, label: str | None = None) -> jax.Array:
  """`value` as float32, rejecting what float32 cannot hold.

  Zero is fine; any other value must be a normal float32 after conversion:
  not overflowing to infinity, not underflowing to zero or to a subnormal
  (which XLA may flush to zero).

  Args:
    name: the argument's name, quoted in messages.
    value: the number or array.
    label: replaces "`name`" in messages (for a value that is not an argument).

  Raises:
    ValueError: a NaN, an infinity, or a value outside the normal float32
      range; the message names the first such element.
  """
  arr = concrete(name, value)
  if arr is not None:
    with np.errstate(over="ignore", under="ignore"):
      f32 = arr.astype(np.float32)
    ok = np.isfinite(f32) & ((f32 == 0) | (np.abs(f32) >= F32_TINY)) & ((arr == 0) | (f32 != 0))
    if not np.all(ok):
      raise ValueError(
        f"{caller()}: {label or f'`{name}`'} must be finite and representable in float32 (zero, or a"
        f" magnitude in [{F32_TINY:.7g}, {F32_MAX:.7g}]); got {first_bad(arr, ~ok)}."
      )
  return jnp.asarray(value, jnp.float32)


def in_range(
  name: str,
  value: Any,
  *,
  low: float,
  high: float,
  low_open: bool = False,
  high_open: bool = False,
) -> None:
  """Raises `ValueError` unless every element of a concrete `value` lies in the interval."""
  arr = concrete(name, value)
  if arr is None:
    return
  above = arr > low if low_open else arr >= low
  below = arr < high if high_open else arr <= high
  ok = above & below
  if not np.all(ok):
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    raise ValueError(f"{caller()}: `{name}` must lie in {interval}; got {first_bad(arr, ~ok)}.")


def positive(name: str, value: Any) -> jax.Array:
  """`value` as float32: a normal float32 number > 0."""
  out = float32_value(name, value)
  arr = concrete(name, value)
  if arr is not None and not np.all(arr > 0):
    raise ValueError(f"{caller()}: `{name}` must be positive; got {first_bad(arr, ~(arr > 0))}.")
  return out


def non_negative(name: str, value: Any) -> jax.Array:
  """`value` as float32, >= 0 (`inf` allowed: a threshold that always holds)."""
  arr = concrete(name, value)
  if arr is not None and not np.all(arr >= 0):
    raise ValueError(f"{caller()}: `{name}` must be >= 0; got {first_bad(arr, ~(arr >= 0))}.")
  return jnp.asarray(value, jnp.float32)


def decay_factor(value: Any, name: str = "decay") -> jax.Array:
  """`value` as float32 in (0, 1]."""
  out = float32_value(name, value)
  in_range(name, value, low=0.0, high=1.0, low_open=True)
  return out


def int_steps(name: str, value: Any, *, minimum: int) -> jax.Array:
  """`value` as int32, an integer (or integer array) >= `minimum`."""
  if not isinstance(value, jax.core.Tracer):
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
      raise TypeError(f"{caller()}: `{name}` must be an int or int array; got {value!r} of dtype {arr.dtype}.")
    if not np.all(arr >= minimum):
      raise ValueError(f"{caller()}: `{name}` must be >= {minimum}; got {value!r}.")
    if not np.all(arr <= np.iinfo(np.int32).max):
      raise ValueError(f"{caller()}: `{name}` must fit in int32; got {value!r}.")
  return jnp.asarray(value, jnp.int32)


def positive_int(name: str, value: Any) -> int:
  """Returns `value` as an int, raising unless it is an integer >= 1."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f"{caller()}: `{name}` must be a positive int; got {value!r} of type {type(value).__name__}.")
  if value < 1:
    raise ValueError(f"{caller()}: `{name}` must be a positive int; got {value!r}.")
  return int(value)


# ----------------------------------------------------------------------------
# The losses' inputs (shared by the losses, the updates and `debug`).


def continuous_log_probs(log_probs: Any) -> jax.Array:
  """`[B]` or `[B, 1]` floating log-probabilities, non-empty, as `[B]`."""
  log_probs = floating("log_probs", log_probs)
  ok = log_probs.ndim == 1 or (log_probs.ndim == 2 and log_probs.shape[1] == 1)
  if not ok:
    raise ValueError(f"{caller()}: `log_probs` must have shape [B] or [B, 1]; got shape {log_probs.shape}.")
  nonempty_batch("log_probs", log_probs.shape)
  return log_probs.reshape(log_probs.shape[0])


def sample_weights(weights: Any, batch: int) -> jax.Array | None:
  """`None`, or `[batch]` floating per-sample weights."""
  if weights is None:
    return None
  weights = floating("weights", weights)
  if weights.shape != (batch,):
    raise ValueError(f"{caller()}: `weights` must have shape ({batch},) to match the batch; got shape {weights.shape}.")
  return weights


def discrete_inputs(probs: Any, log_probs: Any, mask: Any) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """`[B, A]` floating `probs` and `log_probs` (B, A >= 1) and an optional `[B, A]` bool mask."""
  probs = floating("probs", probs)
  log_probs = floating("log_probs", log_probs)
  if probs.ndim != 2:
    raise ValueError(f"{caller()}: `probs` must have shape [B, A]; got shape {probs.shape}.")
  if log_probs.shape != probs.shape:
    raise ValueError(
      f"{caller()}: `probs` and `log_probs` must have the same shape [B, A]; got {probs.shape} and {log_probs.shape}."
    )
  nonempty_batch("probs", probs.shape)
  if probs.shape[1] == 0:
    raise ValueError(f"{caller()}: `probs` has no actions (shape {probs.shape}); expected A >= 1.")
  if mask is not None:
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
      raise TypeError(f"{caller()}: `mask` must be bool; got dtype {mask.dtype}.")
    if mask.shape != probs.shape:
      raise ValueError(f"{caller()}: `mask` must have the shape of `probs`, {probs.shape}; got {mask.shape}.")
  return probs, log_probs, mask


def learning_rates(opt_state: Any) -> None:
  """Rejects an injected `learning_rate` that is negative or not a usable float32.

  Only hyperparameters held in the state (`optax.inject_hyperparams`) can be
  read; a rate baked into `optax.adam(lr)` is out of reach. Zero is allowed:
  a warm-up schedule starts there (use `optax.set_to_zero()` for a fixed alpha).
  """
  for path, value in optax.tree_utils.tree_get_all_with_path(opt_state, "learning_rate"):
    if isinstance(value, jax.core.Tracer) or not isinstance(value, (jax.Array, np.ndarray)):
      continue
    label = f"the optimizer's `learning_rate` at {jax.tree_util.keystr(path)}"
    float32_value("learning_rate", np.asarray(value), label=label)
    if not np.all(np.asarray(value) >= 0):
      raise ValueError(f"{caller()}: {label} must be >= 0; got {np.asarray(value)}.")
