"""Velora 0.2.0's `EntropyModule` and `EntropyModuleDiscrete` (constructor, attributes, methods, repr), which Velora's
agents run with; no maths: `compute_loss` calls the core's jitted update. Built with a `torch.optim` class or a
`torch.device`, or given a torch tensor, a module serves torch: a new tensor per read, as Velora's `log_alpha.exp()`."""

from __future__ import annotations

import dataclasses
import functools
import numbers
import sys
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from entropy_jax import _checks, optimizers
from entropy_jax.checkpoint import decode_state, encode_state, signature
from entropy_jax.state import EntropyState, init_entropy_state
from entropy_jax.targets import DISCRETE_TARGET_RATIO, continuous_target, discrete_target
from entropy_jax.update import continuous_update, discrete_update

__all__ = ["EntropyModule", "EntropyModuleDiscrete", "EntropyParameters", "LossMismatchError", "NonFiniteLossError"]

STATE_DICT_FORMAT, STATE_DICT_VERSION = "entropy_jax.compat", 3
# PyTorch's optimizers by name, with PyTorch's defaults (see `entropy_jax.optimizers`).
NAMED_OPTIMIZERS = {"Adam": optimizers.adam, "AdamW": optimizers.adamw, "SGD": optax.sgd, "RMSprop": optimizers.rmsprop}
_OPTAX_FIELDS = {"exp_avg": "mu", "exp_avg_sq": "nu", "square_avg": "nu"}  # A torch optimizer's fields, in optax.
_RANGES = {"step": "a whole number >= 0", "exp_avg_sq": "finite and >= 0", "square_avg": "finite and >= 0"}
_HOW = ("params", "foreach", "fused", "capturable", "differentiable")  # param_groups entries of how, not of what.
_is_torch = lambda x: (x if isinstance(x, type) else type(x)).__module__.split(".")[0] == "torch"


def _read_back(update: Callable) -> Callable:
  """The core's `update`, jitted, returning also what the host reads, in one transfer: loss, alpha, log_alpha, skip."""

  def run(state, *args, **kwargs):
    new, metrics = update(state, *args, **kwargs)
    skipped = (new.skipped != state.skipped).astype(jnp.float32)
    return new, metrics, jnp.stack([metrics["loss"], metrics["alpha"], new.log_alpha, skipped])

  return jax.jit(run, static_argnames="masked_target_ratio" if update is discrete_update else ())


_continuous, _discrete = _read_back(continuous_update), _read_back(discrete_update)


class LossMismatchError(ValueError):
  """`gradient_step` got a loss other than the one `compute_loss` just returned."""


class NonFiniteLossError(ValueError):
  """The inputs of `compute_loss` gave a NaN or infinite update; nothing changed."""


@dataclasses.dataclass(frozen=True)
class EntropyParameters(Mapping):
  """The module's settings, as attributes and as the read-only mapping Velora's pydantic models take."""

  lr: float
  initial_alpha: float
  target: float

  model_dump = lambda self: dict(vars(self))  # A plain dict, as pydantic's `model_dump()`.
  __getitem__ = lambda self, key: vars(self)[key]
  __iter__ = lambda self: iter(vars(self))
  __len__ = lambda self: 3


# Equal settings, one transformation (a static field of the state): one compile.
_named = functools.lru_cache(maxsize=64)(lambda name, lr: NAMED_OPTIMIZERS[name](learning_rate=lr))


def _optimizer(optim: Any, lr: float) -> tuple[str, optax.GradientTransformation]:
  # `(the name repr shows, the transformation)` of a name, a `torch.optim` class or an optax factory.
  name = optim.__name__ if isinstance(optim, type) and _is_torch(optim) else "SGD" if optim is optax.sgd else optim
  known = f"{list(NAMED_OPTIMIZERS)} or an optax factory"
  if isinstance(name, str):
    if name not in NAMED_OPTIMIZERS:
      raise ValueError(f"{_checks.caller()}: unknown optimizer {name!r}; known: {known}.")
    return name, _named(name, lr)
  tx = optim(learning_rate=lr) if callable(optim) and not isinstance(optim, optax.GradientTransformation) else None
  if not isinstance(tx, optax.GradientTransformation):
    raise TypeError(f"{_checks.caller()}: `optim` must be {known}; got {optim!r}.")
  return getattr(optim, "__name__", type(optim).__name__), tx


def _device(device: Any) -> jax.Device | None:
  if device is None or isinstance(device, jax.Device):
    return device
  kind, _, index = (str(device) if isinstance(device, str) or _is_torch(device) else "?").lower().partition(":")
  try:  # torch's "cuda" (and "rocm") is JAX's "gpu".
    return jax.devices({"cuda": "gpu", "rocm": "gpu"}.get(kind, kind))[int(index or 0)]
  except (RuntimeError, IndexError, ValueError):  # An unknown or absent backend, or no such index.
    message = f"`device` {device!r} is not a device of this JAX; it has {jax.devices()}"
    raise ValueError(f"{_checks.caller()}: {message}.") from None


class _EntropyModuleBase:
  """Threads may share a module: each thread's `compute_loss` / `gradient_step` pair is its own, and every step counts.
  `gradient_step` keeps the update `compute_loss` made if the state is still the one it started from, else (another
  thread stepped in between) runs it again on the same inputs and the current state, under the module's lock: as
  the log-form gradient `H - target` does not depend on `log_alpha`, that is Hogwild's update with none lost."""

  _DEFAULT_TARGET: Callable[[int], float]
  action_dim: int  #: The action dimension (continuous) or the number of actions (discrete).
  initial_alpha: float  #: The starting temperature, as given.
  lr: float  #: The learning rate the optimizer was built with, as given.
  device: Any  #: The device as given; None stands for JAX's default device.
  optim: optax.GradientTransformation  #: The optax transformation that updates `log_alpha`.
  _optim_name: str

  def __init__(self, action_dim: int, *, initial_alpha=1.0, optim="Adam", lr=3e-4, device=None, target_entropy=None):
    with _checks.entry(type(self).__name__):  # The core's checks (initial_alpha, the target) name this class.
      if isinstance(action_dim, bool) or not isinstance(action_dim, numbers.Integral) or action_dim < 1:
        raise ValueError(f"{_checks.caller()}: `action_dim` must be a positive int; got {action_dim!r}.")
      if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 1.2e-38 <= lr <= 3.4e38:
        raise ValueError(f"{_checks.caller()}: `lr` must be a positive number float32 holds; got {lr!r}.")
      self.action_dim, self.initial_alpha, self.lr, self.device = int(action_dim), initial_alpha, lr, device
      self._optim_name, self.optim = _optimizer(optim, lr)
      self._args: tuple = (action_dim, initial_alpha, optim, lr, target_entropy)  # For pickling.
      target = self._DEFAULT_TARGET(self.action_dim) if target_entropy is None else target_entropy
      state = init_entropy_state(target, initial_alpha=initial_alpha, optimizer=self.optim)
      self._jax_device: jax.Device | None = _device(device)
    self._torch: Any = sys.modules.get("torch") if _is_torch(optim) or _is_torch(device) else None  # When serving it.
    self._lock: Any = threading.Lock()  # The lock, the loads so far and each thread's pending update: the class doc.
    self._loads: int = 0
    self._local: Any = threading.local()
    self._where: str = "cpu" if (d := self._jax_device or jax.devices()[0]).platform == "cpu" else f"cuda:{d.id}"
    self._set(jax.device_put(state, self._jax_device))

  def _set(self, state: EntropyState) -> None:  # A load or an assignment: pending losses no longer step.
    with self._lock:
      self._now = (state, state.alpha, (np.nan, float(state.alpha), float(state.log_alpha)))
      self._loads += 1

  def _tensor(self, value: float) -> Any:  # A new tensor, the caller's to keep and to write into.
    return self._torch.tensor(value, dtype=self._torch.float32, device=self._where)

  @property
  def state(self) -> EntropyState:
    """The `EntropyState`; pass it to jitted code, and assign the result back."""
    return self._now[0]

  @state.setter
  def state(self, new: EntropyState) -> None:
    if not isinstance(new, EntropyState) or new.tx is not self.optim or signature(new) != signature(self.state):
      raise ValueError(f"{type(self).__name__}.state: expected an EntropyState like this one's; got {new!r}.")
    self._set(new)

  @property
  def target(self) -> Any:
    """The target entropy, a float32 scalar (a new torch tensor per read when serving torch)."""
    return self.state.target if self._torch is None else self._tensor(float(self.state.target))

  @property
  def log_alpha(self) -> Any:
    """The trained log temperature, a float32 scalar (a new torch tensor per read when serving torch)."""
    return self.state.log_alpha if self._torch is None else self._tensor(self._now[2][2])

  @property
  def alpha(self) -> Any:
    """The entropy coefficient `exp(log_alpha)` (a new torch tensor per read when serving torch)."""
    return self._now[1] if self._torch is None else self._tensor(self._now[2][1])

  def _update(self, now: tuple, update: Callable, arrays: dict[str, Any], kwargs: dict[str, Any]) -> tuple:
    # `(state, alpha, host values, loss)` after `update` of `now`'s state; `NonFiniteLossError` if it skipped.
    new, metrics, host = update(now[0], **arrays, **kwargs)
    if (host := np.asarray(host).tolist())[3]:  # The one wait.
      bad = {k: int(np.sum(~np.isfinite(np.asarray(v, np.float32)))) for k, v in arrays.items()}
      why = "-inf is fine in log_probs where probs is 0; with none, the step overflowed the optimizer's state"
      message = f"the update is not finite. NaN/Inf values per input: {bad} ({why}). The state is unchanged"
      raise NonFiniteLossError(f"{_checks.caller()}: {message}.")
    return new, metrics["alpha"], host, metrics["loss"]

  def _run(self, update: Callable, inputs: dict[str, Any], **kwargs) -> Any:
    # Calls the core's jitted `update`; its state waits for this thread's `gradient_step`.
    with _checks.entry(f"{type(self).__name__}.compute_loss"):
      arrays = {k: _as_jax(v, k) for k, v in inputs.items() if v is not None or k != "mask"}
      if self._torch is None and any(map(_is_torch, inputs.values())):
        self._torch = sys.modules["torch"]
      now, loads = self._now, self._loads
      *after, loss = self._update(now, update, arrays, kwargs)
    loss = loss if self._torch is None else self._tensor(after[2][0])
    self._local.pending = (loss, now, loads, tuple(after), update, arrays, kwargs)
    return loss

  def gradient_step(self, loss: Any) -> None:
    """Keeps the state the update of `loss` made (JAX has no `loss.backward()`): `loss` must be the object this
    thread's latest `compute_loss` returned (not `loss * 2`, nor one stepped on or from before a load), else
    `LossMismatchError` changes nothing. If another thread stepped since, the update runs again (the class doc)."""
    pending = getattr(self._local, "pending", None)
    with self._lock, _checks.entry(f"{type(self).__name__}.gradient_step"):
      if pending is None or loss is not pending[0] or pending[2] != self._loads:
        message = "expected the loss the latest compute_loss returned in this thread, unchanged, not yet stepped on"
        raise LossMismatchError(f"{_checks.caller()}: {message} and not from before a load. The state is unchanged.")
      _, now, _, after, *rerun = self._local.__dict__.pop("pending")
      self._now = after if self._now is now else self._update(self._now, *rerun)[:3]

  def config(self) -> EntropyParameters:
    """The module's settings, as Velora's `config()`."""
    return EntropyParameters(float(self.lr), float(self.initial_alpha), float(self.state.target))

  def state_dict(self) -> dict[str, Any]:
    """Everything needed to continue bit-identically: the settings, and `state` in `checkpoint.encode_state`'s
    form, with new arrays: NumPy's, or torch tensors when serving torch (which `torch.load` reads by default)."""
    payload = encode_state(self.state)
    leaves = [np.array(x) for x in payload["leaves"]]
    leaves = leaves if self._torch is None else [self._torch.from_numpy(x) for x in leaves]
    return {**self._settings(), "state": {**payload, "leaves": leaves}}

  def _settings(self) -> dict[str, Any]:
    kind = {"format": STATE_DICT_FORMAT, "version": STATE_DICT_VERSION, "kind": type(self).__name__}
    return {**kind, "action_dim": self.action_dim, "optim": self._optim_name, "lr": float(self.lr)}

  def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
    """Restores a copy of a `state_dict()` of this class, or the step count and moments of Velora's (a torch optimizer
    state of this optimizer and hyperparameters; `log_alpha` stays). Else `ValueError`, and nothing changes."""
    with _checks.entry(f"{type(self).__name__}.load_state_dict"):  # The checkpoint module's errors name it too.
      if not isinstance(state_dict, Mapping):
        raise TypeError(f"{_checks.caller()}: expected a dict from state_dict(); got {type(state_dict).__name__}.")
      if set(state_dict) == {"entropy_optim"}:
        moved, step = self._velora_state(state_dict["entropy_optim"], f"{_checks.caller()}: Velora's optimizer state")
        opt_state = optax.tree_utils.tree_set(self.optim.init(self.state.log_alpha), **moved)
        self._set(jax.device_put(self.state.replace(opt_state=opt_state, step=step), self._jax_device))
        return warnings.warn(
          f"{_checks.caller()}: Velora's holds no log_alpha; this module keeps its own.", stacklevel=2
        )
      if diff := {k: (state_dict.get(k), v) for k, v in self._settings().items() if state_dict.get(k) != v}:
        raise ValueError(f"{_checks.caller()}: not this class's state_dict() or settings; (got, expected): {diff}.")
      if isinstance(payload := state_dict["state"], Mapping) and isinstance(leaves := payload.get("leaves"), list):
        payload = {**payload, "leaves": [_host_copy(x) for x in leaves]}
      # The checkpoint module's checks (structure, shapes, dtypes, values), named after the caller.
      self._set(jax.device_put(decode_state(payload, self.state), self._jax_device))

  def _velora_state(self, optim_state: Any, where: str) -> tuple[dict[str, Any], np.ndarray]:
    # `(optax fields, step)` of a torch optimizer's state that `torch.optim.<name>` (this lr, the defaults) could write.
    name, torch = self._optim_name, sys.modules.get("torch") or __import__("torch")  # torch wrote the state.
    if name not in NAMED_OPTIMIZERS:
      raise ValueError(f"{where} loads into a module with an optimizer of {list(NAMED_OPTIMIZERS)}; this one: {name}.")
    reference = getattr(torch.optim, name)([parameter := torch.zeros((), requires_grad=True)], lr=self.lr)
    parameter.grad = torch.ones(())
    reference.step()
    (expected,), fields = reference.state_dict()["param_groups"], set(reference.state_dict()["state"].get(0, {}))
    try:
      (group,), per_parameter = optim_state["param_groups"], optim_state["state"]
      saved = {k: v for k, v in per_parameter.get(0, {}).items() if v is not None}
      values = {k: np.asarray(_host_copy(v), np.float64) for k, v in saved.items()}
      (_,), (_,) = group.get("params", [0]), {0, *per_parameter}  # One parameter.
    except (TypeError, KeyError, ValueError, AttributeError):
      raise ValueError(f"{where}: not a torch optimizer's state of one parameter: {optim_state!r:.200}.") from None
    for key, want in expected.items():  # decoupled_weight_decay is newer than some states.
      got = tuple(group[key]) if isinstance(group.get(key), list) else group.get(key)
      if key not in _HOW and got != want and (key in group or key != "decoupled_weight_decay"):
        has, why = f"{key}={got!r}" if key in group else f"no {key}", "lr" if key == "lr" else name
        raise ValueError(f"{where}: param_groups has {has}; expected {want!r} (this module's {why}).")
    if saved and set(saved) != fields:
      raise ValueError(f"{where}: its fields are {sorted(saved)}; torch.optim.{name} keeps {sorted(fields)}.")
    for key, v in values.items():
      whole = key != "step" or (v == np.floor(v) and v < 2**31)
      if v.shape != () or not (abs(v) <= _checks.F32.max and whole and (key not in _RANGES or v >= 0)):
        raise ValueError(f"{where}: {key} is {saved[key]!r}; expected a scalar, {_RANGES.get(key, 'finite')}.")
    moved = {_OPTAX_FIELDS[k]: v.astype(np.float32) for k, v in values.items() if k in _OPTAX_FIELDS}
    step = values.get("step", np.zeros(())).astype(np.int32)
    return {**moved, "count": step} if "exp_avg" in values else moved, step

  def __getstate__(self) -> dict[str, Any]:
    # What pickle and `copy.deepcopy` keep: the constructor's arguments, whether it serves torch, `state_dict()`.
    optim, module = self._args[2], sys.modules.get(getattr(self._args[2], "__module__", None) or "")
    if not isinstance(optim, str) and getattr(module, getattr(optim, "__qualname__", ""), None) is not optim:
      why = f"it keeps its optimizer by name, and {optim!r} has none that imports (a lambda, a closure or a local"
      raise TypeError(f"{type(self).__name__} cannot be pickled or copied: {why} function); save its state_dict().")
    # A jax.Device does not pickle; its platform and index do.
    device = (d.platform, jax.devices(d.platform).index(d)) if isinstance(d := self.device, jax.Device) else d
    return {"args": self._args, "device": device, "torch": self._torch is not None, "state": self.state_dict()}

  def __setstate__(self, saved: dict[str, Any]) -> None:
    (action_dim, initial_alpha, optim, lr, _), device = saved["args"], saved["device"]
    device = jax.devices(device[0])[device[1]] if isinstance(device, tuple) else device
    _EntropyModuleBase.__init__(self, action_dim, initial_alpha=initial_alpha, optim=optim, lr=lr, device=device)
    self._args, self._torch = saved["args"], __import__("torch") if saved["torch"] else None
    self.load_state_dict(saved["state"])

  def __repr__(self) -> str:
    settings = f"initial_alpha={self.initial_alpha}, optim={self._optim_name}, lr={self.lr}, device={self.device}"
    return f"{type(self).__name__}(action_dim={self.action_dim}, {settings})"


def _as_jax(x: Any, name: str) -> Any:
  """An array as it is; a torch tensor detached, float32 if floating (NumPy lacks bfloat16), on the host or DLPack."""
  if isinstance(x, (np.ndarray, jax.Array)):
    return x
  if not (_is_torch(x) and hasattr(x, "__dlpack__")):
    raise TypeError(
      f"{_checks.caller()}: `{name}` must be a NumPy array, a JAX array or a torch tensor; got {type(x)}."
    )
  if (tensor := x.detach()).device.type == "meta":
    raise ValueError(f"{_checks.caller()}: `{name}` is on torch's meta device, which holds no values; got {tensor!r}.")
  tensor = tensor.float() if tensor.is_floating_point() else tensor
  on_jax_device = tensor.device.type == jax.default_backend().replace("gpu", "cuda") != "cpu"
  return jax.dlpack.from_dlpack(tensor.contiguous()) if on_jax_device else tensor.cpu().numpy()


def _host_copy(x: Any) -> np.ndarray:  # A new NumPy array of a torch tensor, a JAX or NumPy array, or a number.
  return x.detach().cpu().numpy().copy() if _is_torch(x) else np.array(x)


class EntropyModule(_EntropyModuleBase):
  """Automatic entropy tuning for continuous actions, as Velora's: Haarnoja et al.
  2018, "Soft Actor-Critic Algorithms and Applications", arXiv:1812.05905, eq. 18.

  Args:
    action_dim: the dimension of the action space, a positive int.
    initial_alpha: the starting temperature, positive and finite.
    optim: `"Adam"` (default), `"AdamW"`, `"SGD"`, `"RMSprop"` (with PyTorch's defaults), the
      `torch.optim` class of that name, or an optax factory called as `optim(learning_rate=lr)`.
    lr: the learning rate, positive and finite.
    device: None (JAX's default), a `jax.Device`, a string such as `"cuda:0"`, or a `torch.device`.
    target_entropy: the target; None means `-action_dim`.
  """

  _DEFAULT_TARGET = staticmethod(continuous_target)

  def compute_loss(self, log_probs: Any) -> Any:
    """The loss of `[B]` or `[B, 1]` log-probabilities, for `gradient_step`; NaN or Inf: `NonFiniteLossError`."""
    return self._run(_continuous, {"log_probs": log_probs})


class EntropyModuleDiscrete(_EntropyModuleBase):
  """Automatic entropy tuning for discrete actions, as Velora's: Christodoulou
  2019, "Soft Actor-Critic for Discrete Action Settings", arXiv:1910.07207, eq. 11.

  Args and attributes as `EntropyModule`'s, with `action_dim` the number of actions `A`, and `target_entropy` None
  meaning `0.6 * log(A)` (with a `mask`, `0.6 * log(valid actions)` per state). Velora 0.2.0's is
  `0.98 * log(1 / A)`, negative: `entropy_jax.velora_discrete_target(A)`.
  """

  _DEFAULT_TARGET = staticmethod(discrete_target)

  def compute_loss(self, probs: Any, log_probs: Any, mask: Any = None) -> Any:
    """The loss of `[B, A]` probabilities, their logs (`-inf` where 0) and an optional `[B, A]` bool `mask` of valid
    actions, for `gradient_step`; NaN or Inf: `NonFiniteLossError`, and nothing changes."""
    if tuple(getattr(probs, "shape", ()))[-1:] != (self.action_dim,):
      raise ValueError(f"EntropyModuleDiscrete.compute_loss: `probs` must be [B, {self.action_dim}]; got {probs!r:.40}")
    ratio = DISCRETE_TARGET_RATIO if self._args[4] is None and mask is not None else None
    return self._run(_discrete, {"probs": probs, "log_probs": log_probs, "mask": mask}, masked_target_ratio=ratio)
