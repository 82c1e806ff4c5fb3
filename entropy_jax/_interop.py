"""What a Velora user passes, taken as JAX takes it: devices and tensors.

Velora's modules take a `device` (a string or a `torch.device`) and torch
tensors. The compat classes accept the same without importing torch: a torch
object is recognised by its type's module and read through its public
attributes (`device.type`, `device.index`) or protocols (DLPack).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

ARRAY_TYPES = (np.ndarray, jax.Array)  # taken as they are

_BACKENDS = {"cpu": "cpu", "cuda": "gpu", "gpu": "gpu", "rocm": "gpu", "tpu": "tpu"}


def resolve_device(device: Any, where: str = "resolve_device") -> jax.Device | None:
  """Maps `None`, a `jax.Device`, `"cpu"`, `"cuda:0"`, `"gpu:1"` or a `torch.device` to a device.

  Raises:
    TypeError: `device` is none of these.
    ValueError: the string is not understood, or the device does not exist on
      this machine (the message lists the available ones).
  """
  if device is None or isinstance(device, jax.Device):
    return device
  if isinstance(device, str):
    spec = device
  elif _is_torch(device) and hasattr(device, "type") and hasattr(device, "index"):
    spec = device.type if device.index is None else f"{device.type}:{device.index}"
  else:
    raise TypeError(
      f"{where}: `device` must be None, a jax.Device, a torch.device or a string such"
      f" as 'cpu' or 'cuda:0'; got {device!r} of type {type(device).__name__}."
    )
  platform, _, index = spec.strip().lower().partition(":")
  backend = _BACKENDS.get(platform)
  if backend is None or (index and not index.isdigit()):
    raise ValueError(
      f"{where}: cannot parse device {device!r}; expected 'cpu', 'cuda',"
      " 'gpu' or 'tpu', optionally followed by ':<index>'."
    )
  available = [str(d) for d in jax.devices()]
  try:
    devices = jax.devices(backend)
  except RuntimeError:
    raise ValueError(
      f"{where}: device {device!r} is not available: this JAX has no {backend} backend. Available devices: {available}."
    ) from None
  i = int(index) if index else 0
  if i >= len(devices):
    raise ValueError(
      f"{where}: device {device!r} is not available: there are"
      f" {len(devices)} {backend} devices ({[str(d) for d in devices]})."
    )
  return devices[i]


def as_input_array(x: Any, name: str, where: str) -> Any:
  """A NumPy or JAX array as it is; a torch tensor converted; anything else refused.

  A torch tensor is detached (one straight from a policy has
  `requires_grad`), then handed over through DLPack, without a copy where
  JAX and torch share the device; a tensor on a device JAX does not use is
  first copied to the host.

  Raises:
    TypeError: `x` is not a NumPy array, a JAX array or a torch tensor.
  """
  if isinstance(x, ARRAY_TYPES):
    return x
  if _is_torch(x) and hasattr(x, "detach") and hasattr(x, "__dlpack__"):
    tensor = x.detach()
    if tensor.device.type != "cpu" and jax.default_backend() == "cpu":
      tensor = tensor.cpu()
    try:
      return jnp.from_dlpack(tensor)
    except Exception:
      return np.asarray(tensor.cpu().contiguous().numpy())
  raise TypeError(
    f"{where}: `{name}` must be a NumPy array, a JAX array or a torch tensor;"
    f" got {type(x).__module__}.{type(x).__qualname__}."
  )


def _is_torch(x: Any) -> bool:
  return type(x).__module__.split(".")[0] == "torch"
