"""What `entropy_jax.compat` takes from torch's side, without importing torch: tensors as inputs, a torch
optimizer's `state_dict()` (Velora's), and the optimizers that pickle by name."""

from __future__ import annotations

import sys
from typing import Any

import jax
import numpy as np

from entropy_jax import _checks

_ADAM = {"betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False, "maximize": False}
_ADAM_FIELDS = {"step": "count", "exp_avg": "mu", "exp_avg_sq": "nu"}
# Each named optimizer as torch.optim writes it: its param_groups entries (PyTorch's defaults, which the named
# optimizers reproduce), and what it keeps per parameter, with the optax field each fills ("" for none).
TORCH_OPTIMIZERS: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
  "Adam": ({**_ADAM, "weight_decay": 0, "decoupled_weight_decay": False}, _ADAM_FIELDS),
  "AdamW": ({**_ADAM, "weight_decay": 0.01, "decoupled_weight_decay": True}, _ADAM_FIELDS),
  "SGD": ({"momentum": 0, "dampening": 0, "weight_decay": 0, "nesterov": False, "maximize": False}, {}),
  "RMSprop": (
    {"alpha": 0.99, "eps": 1e-8, "weight_decay": 0, "momentum": 0, "centered": False, "maximize": False},
    {"step": "", "square_avg": "nu"},
  ),
}
_SINCE_TORCH_2_6 = "decoupled_weight_decay"  # Older torch leaves it out; AdamW's weight_decay still tells them apart.
_RANGES = {"step": "a whole number in [0, 2**31)", "exp_avg_sq": "a number >= 0", "square_avg": "a number >= 0"}


def is_torch(x: Any) -> bool:
  """Whether `x` (an object or a class) is torch's, by its type's module."""
  return (x if isinstance(x, type) else type(x)).__module__.split(".")[0] == "torch"


def as_jax(x: Any, name: str) -> Any:
  """A NumPy or JAX array as it is; a torch tensor detached, other floating dtypes (bfloat16, which NumPy lacks,
  float16, float64) made float32, and viewed through DLPack on JAX's accelerator, else as a NumPy array."""
  if isinstance(x, (np.ndarray, jax.Array)):
    return x
  if not (is_torch(x) and hasattr(x, "__dlpack__")):
    message = f"`{name}` must be a NumPy array, a JAX array or a torch tensor; got {type(x)}"
    raise TypeError(f"{_checks.caller()}: {message}.")
  tensor = x.detach()
  if tensor.device.type == "meta":
    raise ValueError(f"{_checks.caller()}: `{name}` is on torch's meta device, which holds no values; got {tensor!r}.")
  if tensor.is_floating_point() and tensor.dtype != sys.modules["torch"].float32:
    tensor = tensor.float()
  on_jax_device = tensor.device.type == jax.default_backend().replace("gpu", "cuda") != "cpu"
  return jax.dlpack.from_dlpack(tensor.contiguous()) if on_jax_device else tensor.cpu().numpy()


def host_copy(x: Any) -> np.ndarray:
  """A new NumPy array of `x` (a torch tensor, a JAX or NumPy array, or a number)."""
  return x.detach().cpu().numpy().copy() if is_torch(x) else np.array(x)


def by_name(optim: Any, owner: str) -> Any:
  """`optim`, a name or an optax factory, where pickle can rebuild it by name; else a `TypeError` saying why."""
  module = sys.modules.get(getattr(optim, "__module__", None) or "")
  if isinstance(optim, str) or getattr(module, getattr(optim, "__qualname__", ""), None) is optim:
    return optim
  raise TypeError(
    f"{owner} cannot be pickled or copied: it keeps its optimizer by name, and {optim!r} has none that imports"
    f" (a lambda, a closure or a local function). Build it with {list(TORCH_OPTIMIZERS)} or a module-level"
    " optax factory, or save state_dict() and load it into a module built with the same factory."
  )


def velora_state(optim_state: Any, name: str, lr: float) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """`(optax fields, step count)` of a torch optimizer's `state_dict()` of one parameter (Velora's
  `entropy_optim`), which must be one torch's `name` with PyTorch's defaults and learning rate `lr` could
  have written; else `ValueError` naming the field, its value and the value expected."""
  where = f"{_checks.caller()}: Velora's optimizer state"
  if name not in TORCH_OPTIMIZERS:
    raise ValueError(f"{where} loads into a module with an optimizer of {list(TORCH_OPTIMIZERS)}; this one: {name}.")
  expected, fields = TORCH_OPTIMIZERS[name]
  try:
    (group,), per_parameter = optim_state["param_groups"], optim_state["state"]
    if set(per_parameter) - {0} or len(group.get("params", [0])) != 1:
      raise ValueError
    saved = {k: v for k, v in per_parameter.get(0, {}).items() if v is not None}
  except (TypeError, KeyError, ValueError, AttributeError):
    raise ValueError(f"{where}: not a torch optimizer's state of one parameter: {optim_state!r:.200}.") from None
  for key, want in {"lr": lr, **expected}.items():
    got = group.get(key, want if key == _SINCE_TORCH_2_6 else None)
    if (tuple(got) if isinstance(got, list) else got) != want:
      source = "this module's lr" if key == "lr" else f"torch.optim.{name}'s default, which this module's {name} runs"
      has = f"{key}={got!r}" if key in group else f"no {key}"
      raise ValueError(f"{where}: param_groups has {has}; expected {want!r} ({source}).")
  if saved and set(saved) != set(fields):
    raise ValueError(f"{where}: its fields are {sorted(saved)}; torch.optim.{name} keeps {sorted(fields)}.")
  values = {}
  for key, value in saved.items():
    try:
      v = np.asarray(host_copy(value), np.float64)
    except (TypeError, ValueError):
      v = np.asarray(np.nan)
    whole = key != "step" or (v == np.floor(v) and v < 2**31)
    if v.shape != () or not (abs(v) <= _checks.F32.max and whole and (key not in _RANGES or v >= 0)):
      raise ValueError(f"{where}: {key} is {value!r}; expected a finite scalar, {_RANGES.get(key, 'a float32')}.")
    values[key] = v
  moved = {fields[k]: v.astype(np.int32 if k == "step" else np.float32) for k, v in values.items() if fields[k]}
  return moved, values.get("step", np.zeros(())).astype(np.int32)
