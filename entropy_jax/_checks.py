"""Argument checks shared by the constructors, losses and updates.

Two kinds of check live here:

* Trace-time checks of arrays (shape, rank, dtype). They read only static
  information, so they run once while a function is traced and cost nothing
  in the compiled program.
* Value checks of the numbers a user gives a constructor (an initial alpha,
  a target, a learning rate). The state holds float32, so each number is
  checked *after* conversion to float32: a value that is finite in float64
  but overflows, underflows to zero or turns subnormal in float32 is
  rejected before any array is built. Traced values (inside `jit` or `vmap`)
  cannot be inspected and pass through.

Every message names the function, the argument, what was expected and what
came, and the error is a `ValueError` or `TypeError`, what a Python caller
catches. (`chex.assert_*` raise `AssertionError` with generic text; the
library uses chex for its array types, and the tests use its assertions.)
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

F32 = np.finfo(np.float32)
F32_TINY = float(F32.tiny)  # The smallest normal float32, 1.1754944e-38.
F32_MAX = float(F32.max)  # 3.4028235e+38.


# ----------------------------------------------------------------------------
# Trace-time checks of arrays.


def as_array(name: str, x: Any, where: str) -> jax.Array:
  """`jnp.asarray(x)`, raising a `TypeError` that names `x` if it is no array."""
  message = f"{where}: `{name}` must be a number or numeric array; got {x!r} of type {type(x).__name__}."
  if isinstance(x, (str, bytes)):  # jnp.asarray would read a string as a dtype name.
    raise TypeError(message)
  try:
    return jnp.asarray(x)
  except (TypeError, ValueError) as e:
    raise TypeError(message) from e


def floating(name: str, x: Any, where: str) -> jax.Array:
  """Returns `x` as an array, raising `TypeError` unless it is floating point."""
  x = as_array(name, x, where)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(f"{where}: `{name}` must be a floating-point array; got dtype {x.dtype}.")
  return x


def scalar(name: str, x: Any, where: str) -> jax.Array:
  """Returns `x` as a floating scalar array, raising unless its shape is ()."""
  x = floating(name, x, where)
  if x.ndim != 0:
    raise ValueError(
      f"{where}: `{name}` must be a scalar (shape ()); got shape {x.shape}."
      " Under a population, vmap the function so each member sees a scalar."
    )
  return x


def batch_vector(name: str, x: Any, batch: int, where: str) -> jax.Array:
  """Returns `x` as an array of shape [batch], or a scalar, or raises.

  A plain Python int (such as a target of `-action_dim`) is taken as a float.
  """
  if isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_)):
    x = float(x)
  x = floating(name, x, where)
  if x.ndim == 0:
    return x
  if x.shape != (batch,):
    raise ValueError(
      f"{where}: `{name}` must be a scalar or have shape ({batch},) to match the batch; got shape {x.shape}."
    )
  return x


def nonempty_batch(name: str, shape: tuple[int, ...], where: str) -> None:
  """Raises `ValueError` if the leading (batch) axis of `shape` is empty."""
  if shape[0] == 0:
    raise ValueError(
      f"{where}: `{name}` has an empty batch (shape {shape}); the entropy of"
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


def concrete(name: str, value: Any, where: str) -> np.ndarray | None:
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
    raise TypeError(f"{where}: `{name}` must be a number; got {value!r}.") from e
  if arr.dtype == object:
    raise TypeError(
      f"{where}: `{name}` must be a number or numeric array; got {value!r} of type {type(value).__name__}."
    )
  if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
    raise TypeError(f"{where}: `{name}` must be a real number; got {value!r}.")
  return arr


def first_bad(arr: np.ndarray, bad: np.ndarray) -> str:
  """The first offending value of `arr`, with its index if `arr` is not a scalar."""
  if arr.ndim == 0:
    return repr(arr.item())
  index = tuple(int(i) for i in np.argwhere(bad)[0])
  return f"{arr[index].item()!r} at index {index[0] if len(index) == 1 else index}"


def float32_value(name: str, value: Any, where: str, *, label: str | None = None) -> jax.Array:
  """`value` as float32, rejecting what float32 cannot hold.

  Zero is fine; any other value must be a normal float32 after conversion:
  not overflowing to infinity, not underflowing to zero or to a subnormal
  (which XLA may flush to zero).

  Args:
    name: the argument's name, quoted in messages.
    value: the number or array.
    where: the caller's name.
    label: replaces "`name`" in messages (for a value that is not an argument).

  Raises:
    ValueError: a NaN, an infinity, or a value outside the normal float32
      range; the message names the first such element.
  """
  arr = concrete(name, value, where)
  if arr is not None:
    with np.errstate(over="ignore", under="ignore"):
      f32 = arr.astype(np.float32)
    ok = np.isfinite(f32) & ((f32 == 0) | (np.abs(f32) >= F32_TINY)) & ((arr == 0) | (f32 != 0))
    if not np.all(ok):
      raise ValueError(
        f"{where}: {label or f'`{name}`'} must be finite and representable in float32 (zero, or a"
        f" magnitude in [{F32_TINY:.7g}, {F32_MAX:.7g}]); got {first_bad(arr, ~ok)}."
      )
  return jnp.asarray(value, jnp.float32)


def in_range(
  name: str,
  value: Any,
  where: str,
  *,
  low: float,
  high: float,
  low_open: bool = False,
  high_open: bool = False,
) -> None:
  """Raises `ValueError` unless every element of a concrete `value` lies in the interval."""
  arr = concrete(name, value, where)
  if arr is None:
    return
  above = arr > low if low_open else arr >= low
  below = arr < high if high_open else arr <= high
  ok = above & below
  if not np.all(ok):
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    raise ValueError(f"{where}: `{name}` must lie in {interval}; got {first_bad(arr, ~ok)}.")


def positive(name: str, value: Any, where: str) -> jax.Array:
  """`value` as float32: a normal float32 number > 0."""
  out = float32_value(name, value, where)
  arr = concrete(name, value, where)
  if arr is not None and not np.all(arr > 0):
    raise ValueError(f"{where}: `{name}` must be positive; got {first_bad(arr, ~(arr > 0))}.")
  return out


def non_negative(name: str, value: Any, where: str) -> jax.Array:
  """`value` as float32, >= 0 (`inf` allowed: a threshold that always holds)."""
  arr = concrete(name, value, where)
  if arr is not None and not np.all(arr >= 0):
    raise ValueError(f"{where}: `{name}` must be >= 0; got {first_bad(arr, ~(arr >= 0))}.")
  return jnp.asarray(value, jnp.float32)


def decay_factor(value: Any, where: str, name: str = "decay") -> jax.Array:
  """`value` as float32 in (0, 1]."""
  out = float32_value(name, value, where)
  in_range(name, value, where, low=0.0, high=1.0, low_open=True)
  return out


def int_steps(name: str, value: Any, where: str, *, minimum: int) -> jax.Array:
  """`value` as int32, an integer (or integer array) >= `minimum`."""
  if not isinstance(value, jax.core.Tracer):
    arr = np.asarray(value)
    if not np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
      raise TypeError(f"{where}: `{name}` must be an int or int array; got {value!r} of dtype {arr.dtype}.")
    if not np.all(arr >= minimum):
      raise ValueError(f"{where}: `{name}` must be >= {minimum}; got {value!r}.")
    if not np.all(arr <= np.iinfo(np.int32).max):
      raise ValueError(f"{where}: `{name}` must fit in int32; got {value!r}.")
  return jnp.asarray(value, jnp.int32)


def positive_int(name: str, value: Any, where: str) -> int:
  """Returns `value` as an int, raising unless it is an integer >= 1."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(f"{where}: `{name}` must be a positive int; got {value!r} of type {type(value).__name__}.")
  if value < 1:
    raise ValueError(f"{where}: `{name}` must be a positive int; got {value!r}.")
  return int(value)
