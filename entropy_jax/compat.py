"""Velora 0.2.0's `EntropyModule` and `EntropyModuleDiscrete` (API and repr), which Velora's agents run with, on the
core's jitted update. Given a `torch.optim` class, a `torch.device` or a torch tensor, a module serves torch tensors."""

from __future__ import annotations

import collections
import dataclasses
import functools
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
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


def _is_torch(x: Any) -> bool:  # Whether `x` is a torch object or class, without importing torch.
  return (x if isinstance(x, type) else type(x)).__module__.split(".")[0] == "torch"


def _host_copy(x: Any) -> np.ndarray:  # A new NumPy array of `x`, a torch tensor or an array.
  return x.detach().cpu().numpy().copy() if _is_torch(x) else np.array(x)


# The state, its alpha, and their host copies for torch: replaced by one assignment, which threads see whole.
_Now = collections.namedtuple("_Now", "state alpha alpha_value log_alpha_value")


@functools.lru_cache(maxsize=64)
def _named(name: str, lr: float) -> optax.GradientTransformation:
  """One transformation per settings (a static field of the state): modules with equal settings share one compile."""
  return NAMED_OPTIMIZERS[name](learning_rate=lr)


class LossMismatchError(ValueError):
  """`gradient_step` got a loss other than the one `compute_loss` just returned."""


class NonFiniteLossError(ValueError):
  """The inputs of `compute_loss` gave a NaN or infinite update; nothing changed."""


@dataclasses.dataclass(frozen=True)
class EntropyParameters(Mapping):
  """A module's settings, as Velora's `config()`: frozen attributes, `model_dump()` (a plain dict, as pydantic's), and a
  read-only mapping of the three, which Velora's pydantic models take as their own `EntropyParameters`."""

  lr: float  #: The learning rate of the optimizer that updates `log_alpha`.
  initial_alpha: float  #: The starting temperature.
  target: float  #: The target entropy, as the state holds it (float32's value).

  def model_dump(self) -> dict[str, float]:
    return dict(vars(self))

  def __getitem__(self, key: str) -> float:
    return vars(self)[key]

  def __iter__(self) -> Iterator[str]:
    return iter(vars(self))

  def __len__(self) -> int:
    return len(vars(self))


@functools.partial(jax.jit, static_argnames=("update", "masked_target_ratio"))
def _update(update: Callable, state: EntropyState, arrays: dict[str, Any], **kwargs) -> tuple:  # The core's update.
  new, metrics = update(state, **arrays, **kwargs)
  skipped = (new.skipped != state.skipped).astype(jnp.float32)
  return new, metrics, jnp.stack([metrics["loss"], metrics["alpha"], new.log_alpha, skipped])  # One host read.


def _optimizer(optim: Any, lr: float) -> tuple[str, optax.GradientTransformation]:  # (the name repr shows, the tx)
  name = optim.__name__ if isinstance(optim, type) and _is_torch(optim) else "SGD" if optim is optax.sgd else optim
  known = f"{list(NAMED_OPTIMIZERS)} or an optax factory"
  if isinstance(name, str):
    if name not in NAMED_OPTIMIZERS:
      raise _checks.error(f"unknown optimizer {name!r}; known: {known}.")
    return name, _named(name, lr)
  tx = optim(learning_rate=lr) if callable(optim) and not isinstance(optim, optax.GradientTransformation) else None
  if not isinstance(tx, optax.GradientTransformation):
    raise _checks.error(f"`optim` must be {known}; got {optim!r}.", TypeError)
  return getattr(optim, "__name__", type(optim).__name__), tx


def _device(device: Any) -> jax.Device | None:
  if device is None or isinstance(device, jax.Device):
    return device
  kind, _, index = (str(device) if isinstance(device, str) or _is_torch(device) else "?").lower().partition(":")
  try:  # torch's "cuda" (and "rocm") is JAX's "gpu".
    return jax.devices({"cuda": "gpu", "rocm": "gpu"}.get(kind, kind))[int(index or 0)]
  except (RuntimeError, IndexError, ValueError):  # An unknown or absent backend, or no such index.
    raise _checks.error(f"`device` {device!r} is not a device of this JAX; it has {jax.devices()}.") from None


class _EntropyModuleBase:
  """Threads may share a module: each thread's `compute_loss` / `gradient_step` pair is its own and every step counts.
  `gradient_step` keeps the update `compute_loss` made if the state is still the one it started from, else reruns
  it on the current state, under the module's lock: as the log-form gradient `H - target` does not depend on
  `log_alpha`, that is Hogwild's update with none lost."""

  def __init__(self, action_dim: int, *, initial_alpha=1.0, optim="Adam", lr=3e-4, device=None, target_entropy=None):
    self._args = dict(action_dim=action_dim, initial_alpha=initial_alpha, optim=optim, lr=lr)  # As given, to pickle.
    self._args["target_entropy"] = target_entropy
    with _checks.entry(type(self).__name__):  # The core's checks (initial_alpha, the target) name this class too.
      self.action_dim = _checks.positive_int("action_dim", action_dim)
      _checks.scalar("lr", _checks.positive("lr", lr))
      self.initial_alpha, self.lr, self.device = initial_alpha, lr, device
      self._optim_name, self.optim = _optimizer(optim, float(lr))
      default = continuous_target if isinstance(self, EntropyModule) else discrete_target
      target = default(self.action_dim) if target_entropy is None else target_entropy
      state = init_entropy_state(target, initial_alpha=initial_alpha, optimizer=self.optim)
      self._jax_device = _device(device)
    self._torch: Any = sys.modules.get("torch") if _is_torch(optim) or _is_torch(device) else None  # When serving it.
    jax_device = self._jax_device or jax.devices()[0]
    self._where = "cpu" if jax_device.platform == "cpu" else f"cuda:{jax_device.id}"  # torch's name for it.
    self._lock = threading.Lock()  # The class doc; `_set` makes `self._local`, each thread's pending update.
    self._set(jax.device_put(state, self._jax_device))

  def _set(self, state: EntropyState) -> None:  # A load or an assignment: pending losses no longer step.
    with self._lock:
      self._now = _Now(state, state.alpha, float(state.alpha), float(state.log_alpha))
      self._local = threading.local()

  def _tensor(self, value: float) -> Any:  # A new tensor, the caller's to keep and to write into.
    return self._torch.tensor(value, dtype=self._torch.float32, device=self._where)

  @property
  def state(self) -> EntropyState:
    """The `EntropyState`; pass it to jitted code, and assign the result back."""
    return self._now.state

  @state.setter
  def state(self, new: EntropyState) -> None:
    if not isinstance(new, EntropyState) or new.tx is not self.optim or signature(new) != signature(self.state):
      with _checks.entry(f"{type(self).__name__}.state"):
        raise _checks.error(f"expected an EntropyState like this one's; got {new!r}.")
    self._set(new)

  @property
  def target(self) -> Any:
    """The target entropy, a float32 scalar (a new torch tensor per read when serving torch)."""
    return self.state.target if self._torch is None else self._tensor(float(self.state.target))

  @property
  def log_alpha(self) -> Any:
    """The trained log temperature, a float32 scalar (a new torch tensor per read when serving torch)."""
    return self.state.log_alpha if self._torch is None else self._tensor(self._now.log_alpha_value)

  @property
  def alpha(self) -> Any:
    """The entropy coefficient `exp(log_alpha)` (a new torch tensor per read when serving torch)."""
    return self._now.alpha if self._torch is None else self._tensor(self._now.alpha_value)

  def _step(self, now: _Now, update: Callable, arrays: dict[str, Any], kwargs: dict[str, Any]) -> tuple[_Now, Any]:
    """`now` after the core's `update`, and the loss to return; `NonFiniteLossError` if the core skipped the step."""
    state, metrics, host = _update(update, now.state, arrays, **kwargs)
    loss, alpha, log_alpha, skipped = np.asarray(host).tolist()  # The one wait.
    if skipped:
      bad = {k: int(np.sum(~np.isfinite(np.asarray(v, np.float32)))) for k, v in arrays.items()}
      why = "-inf is fine in log_probs where probs is 0; with none, the step overflowed the optimizer's state"
      message = f"the update is not finite. NaN/Inf values per input: {bad} ({why}). The state is unchanged."
      raise _checks.error(message, NonFiniteLossError)
    return _Now(state, metrics["alpha"], alpha, log_alpha), self._tensor(loss) if self._torch else metrics["loss"]

  def _compute_loss(self, update: Callable, inputs: dict[str, Any], **kwargs) -> Any:  # Steps; gradient_step keeps it.
    with _checks.entry(f"{type(self).__name__}.compute_loss"):
      arrays = {k: _as_jax(v, k) for k, v in inputs.items() if v is not None or k != "mask"}
      if self._torch is None and any(map(_is_torch, inputs.values())):
        self._torch = sys.modules["torch"]
      pending, start = self._local, self._now  # In this order: after a load in between, this loss cannot step.
      result, loss = self._step(start, update, arrays, kwargs)
    pending.loss = loss  # `gradient_step(loss)` keeps `result`, or if another thread stepped since, reruns it.
    pending.commit = lambda now: result if now is start else self._step(now, update, arrays, kwargs)[0]
    return loss

  def gradient_step(self, loss: Any) -> None:
    """Keeps the update `compute_loss` made with `loss` (JAX has no `loss.backward()`): `loss` must be the object this
    thread's latest `compute_loss` returned, not derived, stepped on or from before a load; else `LossMismatchError`."""
    with self._lock, _checks.entry(f"{type(self).__name__}.gradient_step"):
      pending = vars(self._local)
      if "loss" not in pending or loss is not pending["loss"]:
        message = "expected the loss the latest compute_loss returned in this thread, unchanged, not yet stepped on"
        raise _checks.error(f"{message} and not from before a load. The state is unchanged.", LossMismatchError)
      del pending["loss"]
      self._now = pending.pop("commit")(self._now)

  def config(self) -> EntropyParameters:
    """The module's settings, as Velora's `config()`."""
    return EntropyParameters(float(self.lr), float(self.initial_alpha), float(self.state.target))

  def state_dict(self) -> dict[str, Any]:
    """Everything needed to continue bit-identically: the settings, and `state` in `checkpoint.encode_state`'s
    form, with new arrays: NumPy's, or torch tensors when serving torch (which `torch.load` reads by default)."""
    payload = encode_state(self.state)
    leaves = [np.array(x) if self._torch is None else self._torch.tensor(np.asarray(x)) for x in payload["leaves"]]
    return {**self._settings(), "state": {**payload, "leaves": leaves}}

  def _settings(self) -> dict[str, Any]:
    kind = {"format": STATE_DICT_FORMAT, "version": STATE_DICT_VERSION, "kind": type(self).__name__}
    return {**kind, "action_dim": self.action_dim, "optim": self._optim_name, "lr": float(self.lr)}

  def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
    """Restores a copy of a `state_dict()`, or Velora's step count and moments; a bad dict raises, changing nothing."""
    with _checks.entry(f"{type(self).__name__}.load_state_dict"):  # The checkpoint module's errors name it too.
      if not isinstance(state_dict, Mapping):
        raise _checks.error(f"expected a dict from state_dict(); got {type(state_dict).__name__}.", TypeError)
      if set(state_dict) == {"entropy_optim"}:  # Velora's: a torch optimizer's state, and no log_alpha.
        with _checks.within("Velora's optimizer state"):
          state = self._from_velora(state_dict["entropy_optim"])
        warnings.warn(str(_checks.error("Velora's holds no log_alpha; this module keeps its own.")), stacklevel=2)
      elif diff := {k: (state_dict.get(k), v) for k, v in self._settings().items() if state_dict.get(k) != v}:
        raise _checks.error(f"not this class's state_dict() or settings; (got, expected): {diff}.")
      else:  # Checked by the checkpoint module, on copies: the caller's arrays stay the caller's.
        if isinstance(payload := state_dict.get("state"), Mapping) and isinstance(payload.get("leaves"), list):
          payload = {**payload, "leaves": [_host_copy(x) for x in payload["leaves"]]}
        state = decode_state(payload, self.state)
    self._set(jax.device_put(state, self._jax_device))

  def _from_velora(self, optim_state: Any) -> EntropyState:
    """This state with the step count and moments of a state `torch.optim.<name>` (this lr, defaults) could write."""
    name = self._optim_name
    if name not in NAMED_OPTIMIZERS:
      raise _checks.error(f"loads into a module with an optimizer of {list(NAMED_OPTIMIZERS)}; this one: {name}.")
    torch = sys.modules.get("torch") or __import__("torch")  # torch wrote the state.
    parameter = torch.zeros((), requires_grad=True)
    reference = getattr(torch.optim, name)([parameter], lr=self.lr)
    parameter.grad = torch.ones(())
    reference.step()  # The reference: its hyperparameters, and after a step, the fields it keeps.
    expected, fields = reference.state_dict()["param_groups"][0], set(reference.state_dict()["state"].get(0, {}))
    try:  # One group of one parameter.
      [group], per_parameter = optim_state["param_groups"], optim_state["state"]
      saved = {k: v for k, v in per_parameter.get(0, {}).items() if v is not None}
      values = {k: np.asarray(_host_copy(v), np.float64) for k, v in saved.items()}
      one_parameter = len(group.get("params", [0])) == 1 and set(per_parameter) <= {0}
    except (TypeError, KeyError, ValueError, AttributeError):
      one_parameter = False
    if not one_parameter:
      raise _checks.error(f"not a torch optimizer's state of one parameter: {optim_state!r:.200}.")
    for key, want in expected.items():  # decoupled_weight_decay is newer than some states.
      got = tuple(group[key]) if isinstance(group.get(key), list) else group.get(key)
      if key not in _HOW and got != want and (key in group or key != "decoupled_weight_decay"):
        has, whose = f"{key}={got!r}" if key in group else f"no {key}", "lr" if key == "lr" else name
        raise _checks.error(f"param_groups has {has}; expected {want!r} (this module's {whose}).")
    if saved and set(saved) != fields:
      raise _checks.error(f"its fields are {sorted(saved)}; torch.optim.{name} keeps {sorted(fields)}.")
    for key, v in values.items():
      whole = key != "step" or (v == np.floor(v) and v <= np.iinfo(np.int32).max)
      if v.shape != () or not (abs(v) <= np.finfo(np.float32).max and whole and (key not in _RANGES or v >= 0)):
        raise _checks.error(f"{key} is {saved[key]!r}; expected a scalar, {_RANGES.get(key, 'finite')}.")
    step = values.get("step", np.zeros(())).astype(np.int32)
    moved: dict[str, Any] = {_OPTAX_FIELDS[k]: v.astype(np.float32) for k, v in values.items() if k in _OPTAX_FIELDS}
    opt_state = self.optim.init(self.state.log_alpha)
    opt_state = optax.tree_utils.tree_set(opt_state, **moved, **({"count": step} if "exp_avg" in values else {}))
    return self.state.replace(opt_state=opt_state, step=step)

  def __getstate__(self) -> dict[str, Any]:  # Pickle and deepcopy keep the arguments, torch or not, `state_dict()`.
    optim = self._args["optim"]
    if "<" in getattr(optim, "__qualname__", ""):  # "<lambda>", "f.<locals>.g": no import.
      why = f"it keeps its optimizer by name, and {optim!r} has none that imports (a lambda, a closure or a local"
      with _checks.entry(type(self).__name__):
        raise _checks.error(f"cannot be pickled or copied: {why} function); save its state_dict().", TypeError)
    device = self.device
    if isinstance(device, jax.Device):  # A jax.Device does not pickle; its platform and index do.
      device = (device.platform, jax.devices(device.platform).index(device))
    return {"args": self._args, "device": device, "torch": self._torch is not None, "state": self.state_dict()}

  def __setstate__(self, saved: dict[str, Any]) -> None:
    device = saved["device"]  # As given, or a jax.Device's (platform, index).
    device = jax.devices(device[0])[device[1]] if isinstance(device, tuple) else device
    _EntropyModuleBase.__init__(self, **saved["args"], device=device)
    self._torch = __import__("torch") if saved["torch"] else None
    self.load_state_dict(saved["state"])

  def __repr__(self) -> str:
    settings = f"initial_alpha={self.initial_alpha}, optim={self._optim_name}, lr={self.lr}, device={self.device}"
    return f"{type(self).__name__}(action_dim={self.action_dim}, {settings})"


def _as_jax(x: Any, name: str) -> Any:
  """An array as it is; a torch tensor detached, float32 if floating (NumPy lacks bfloat16), on the host or DLPack."""
  if isinstance(x, (np.ndarray, jax.Array)):
    return x
  if not (_is_torch(x) and hasattr(x, "__dlpack__")):
    raise _checks.error(f"`{name}` must be a NumPy array, a JAX array or a torch tensor; got {type(x)}.", TypeError)
  if (tensor := x.detach()).device.type == "meta":
    raise _checks.error(f"`{name}` is on torch's meta device, which holds no values; got {tensor!r}.")
  tensor = tensor.float() if tensor.is_floating_point() else tensor
  on_jax_device = tensor.device.type == jax.default_backend().replace("gpu", "cuda") != "cpu"
  return jax.dlpack.from_dlpack(tensor.contiguous()) if on_jax_device else tensor.cpu().numpy()


class EntropyModule(_EntropyModuleBase):
  """Automatic entropy tuning for continuous actions, as Velora's: Haarnoja et al. 2018, "Soft Actor-Critic Algorithms
  and Applications", arXiv:1812.05905, eq. 18. The arguments are kept as attributes of their names, as given, but
  `optim`: the optax transformation that updates `log_alpha`.

  Args:
    action_dim: the dimension of the action space, a positive int.
    initial_alpha: the starting temperature, positive and finite.
    optim: `"Adam"` (default), `"AdamW"`, `"SGD"`, `"RMSprop"` (with PyTorch's defaults), the
      `torch.optim` class of that name, or an optax factory called as `optim(learning_rate=lr)`.
    lr: the learning rate, positive and finite.
    device: None (JAX's default), a `jax.Device`, a string such as `"cuda:0"`, or a `torch.device`.
    target_entropy: the target; None means `-action_dim`.
  """

  def compute_loss(self, log_probs: Any) -> Any:
    """The loss of `[B]` or `[B, 1]` log-probabilities, for `gradient_step`; NaN or Inf: `NonFiniteLossError`."""
    return self._compute_loss(continuous_update, {"log_probs": log_probs})


class EntropyModuleDiscrete(_EntropyModuleBase):
  """Automatic entropy tuning for discrete actions, as Velora's: Christodoulou
  2019, "Soft Actor-Critic for Discrete Action Settings", arXiv:1910.07207, eq. 11.

  Args and attributes as `EntropyModule`'s, with `action_dim` the number of actions `A`, and `target_entropy` None
  meaning `0.6 * log(A)` (with a `mask`, `0.6 * log(valid actions)` per state). Velora 0.2.0's is
  `0.98 * log(1 / A)`, negative: `entropy_jax.velora_discrete_target(A)`.
  """

  def compute_loss(self, probs: Any, log_probs: Any, mask: Any = None) -> Any:
    """The loss of `[B, A]` probabilities, their logs (`-inf` where 0) and an optional `[B, A]` bool `mask` of valid
    actions, for `gradient_step`; NaN or Inf: `NonFiniteLossError`, and nothing changes."""
    with _checks.entry(f"{type(self).__name__}.compute_loss"):
      if (shape := tuple(getattr(probs, "shape", ())))[-1:] != (self.action_dim,):
        raise _checks.error(f"`probs` must be [B, {self.action_dim}] (action_dim actions); got shape {shape}.")
    ratio = DISCRETE_TARGET_RATIO if self._args["target_entropy"] is None and mask is not None else None
    inputs = {"probs": probs, "log_probs": log_probs, "mask": mask}
    return self._compute_loss(discrete_update, inputs, masked_target_ratio=ratio)
