"""Trace-time argument checks shared by the losses and updates.

Every check here reads only static information (shapes, dtypes, Python
numbers), so it runs once while a function is traced and costs nothing in the
compiled program. Messages name the expected and the received value.
"""

from __future__ import annotations

import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def as_array(name: str, x: Any, where: str) -> jax.Array:
  """`jnp.asarray(x)`, raising a `TypeError` that names `x` if it is no array."""
  try:
    return jnp.asarray(x)
  except (TypeError, ValueError) as e:
    raise TypeError(
        f"{where}: `{name}` must be a number or numeric array; got {x!r}"
        f" of type {type(x).__name__}."
    ) from e


def _concrete(name: str, value: Any, where: str) -> np.ndarray:
  """A concrete `value` as a NumPy array, inspected with NumPy so that the
  checks also run while `init_*` is traced (`jax.jit`, `jax.eval_shape`)."""
  try:
    arr = np.asarray(value)
  except (TypeError, ValueError) as e:
    raise TypeError(f"{where}: `{name}` must be a number; got {value!r}.") from e
  if arr.dtype == object:
    raise TypeError(
        f"{where}: `{name}` must be a number or numeric array; got {value!r}"
        f" of type {type(value).__name__}."
    )
  return arr


def floating(name: str, x: Any, where: str) -> jax.Array:
  """Returns `x` as an array, raising `TypeError` unless it is floating point."""
  x = as_array(name, x, where)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(
        f"{where}: `{name}` must be a floating-point array; got dtype {x.dtype}."
    )
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
        f"{where}: `{name}` must be a scalar or have shape ({batch},) to match"
        f" the batch; got shape {x.shape}."
    )
  return x


def nonempty_batch(name: str, shape: tuple[int, ...], where: str) -> None:
  if shape[0] == 0:
    raise ValueError(
        f"{where}: `{name}` has an empty batch (shape {shape}); the entropy of"
        " an empty batch is undefined. Expected at least one sample."
    )


def positive_finite(name: str, value: Any, where: str) -> None:
  """Raises `ValueError` unless a concrete `value` is a finite number > 0.

  Traced values (inside jit or vmap) cannot be inspected and pass through.
  """
  if isinstance(value, jax.core.Tracer):
    return
  arr = _concrete(name, value, where)
  if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(
      arr.dtype, np.complexfloating
  ):
    raise TypeError(f"{where}: `{name}` must be a real number; got {value!r}.")
  if not bool(np.all(np.isfinite(arr))) or not bool(np.all(arr > 0)):
    raise ValueError(
        f"{where}: `{name}` must be positive and finite; got {value!r}."
    )


def finite(name: str, value: Any, where: str) -> None:
  """Raises `ValueError` unless a concrete `value` is finite."""
  if isinstance(value, jax.core.Tracer):
    return
  arr = _concrete(name, value, where)
  if not np.issubdtype(arr.dtype, np.number):
    raise TypeError(f"{where}: `{name}` must be a real number; got {value!r}.")
  if not bool(np.all(np.isfinite(arr))):
    raise ValueError(f"{where}: `{name}` must be finite; got {value!r}.")


def positive_int(name: str, value: Any, where: str) -> int:
  """Returns `value` as an int, raising unless it is an integer >= 1."""
  if isinstance(value, bool) or not isinstance(value, numbers.Integral):
    raise TypeError(
        f"{where}: `{name}` must be a positive int; got {value!r}"
        f" of type {type(value).__name__}."
    )
  if value < 1:
    raise ValueError(f"{where}: `{name}` must be a positive int; got {value!r}.")
  return int(value)


def accumulation_dtype(*xs: jax.Array) -> jnp.dtype:
  """The dtype to reduce in: the inputs' float type, but never below float32.

  bfloat16 and float16 inputs are accumulated in float32; float32 stays
  float32; float64 (under `jax_enable_x64`) stays float64.
  """
  dtype = jnp.result_type(*xs)
  return jnp.promote_types(dtype, jnp.float32)
