"""Velora-compatible `EntropyModule` and `EntropyModuleDiscrete`.

Velora 0.2.0's classes with the same constructor, attributes, methods and repr, which Velora's own agents run
with. No maths: `compute_loss` calls the core's jitted `continuous_update` / `discrete_update` on `self.state`.

Torch in, torch out: a module built with a `torch.optim` class or a `torch.device` (as Velora's agents build
it), or given a torch tensor by `compute_loss` (from then on), gives torch tensors (`alpha`, `log_alpha`,
`target`, the loss) viewing JAX's arrays through DLPack; else JAX arrays. torch is never imported here.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jax
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
# What torch keeps per parameter, per optimizer: each field, and the optax field it fills.
_ADAM = {"step": "count", "exp_avg": "mu", "exp_avg_sq": "nu"}
_TORCH_FIELDS = {"Adam": _ADAM, "AdamW": _ADAM, "RMSprop": {"step": "", "square_avg": "nu"}, "SGD": {}}
_continuous, _discrete = jax.jit(continuous_update), jax.jit(discrete_update, static_argnames="masked_target_ratio")


class LossMismatchError(ValueError):
  """`gradient_step` got a loss other than the one `compute_loss` just returned."""


class NonFiniteLossError(ValueError):
  """The inputs of `compute_loss` gave a NaN or infinite update; nothing changed."""


@dataclasses.dataclass(frozen=True)
class EntropyParameters(Mapping):
  """The module's settings, as attributes (as Velora's config model) and as a read-only mapping,
  which is how Velora's pydantic models (`ModelDetails(entropy=...)`) take it."""

  lr: float
  initial_alpha: float
  target: float

  def __getitem__(self, key: str) -> float:
    return self.model_dump()[key]

  def __iter__(self):
    return iter(self.model_dump())

  def __len__(self) -> int:
    return 3

  def model_dump(self) -> dict[str, float]:
    """A plain dict, as pydantic's `model_dump()`."""
    return dataclasses.asdict(self)


_is_torch = lambda x: (x if isinstance(x, type) else type(x)).__module__.split(".")[0] == "torch"


@functools.lru_cache(maxsize=64)  # Equal settings, one transformation (a static field of the state): one compile.
def _named(name: str, lr: float) -> optax.GradientTransformation:
  return NAMED_OPTIMIZERS[name](learning_rate=lr)


def _optimizer(optim: Any, lr: float) -> tuple[str, optax.GradientTransformation]:
  """`(the name repr shows, the transformation)` of a name, a `torch.optim` class or an optax factory."""
  name = optim.__name__ if isinstance(optim, type) and _is_torch(optim) else "SGD" if optim is optax.sgd else optim
  if isinstance(name, str):
    if name not in NAMED_OPTIMIZERS:
      known = f"{list(NAMED_OPTIMIZERS)} or an optax factory"
      raise ValueError(f"{_checks.caller()}: unknown optimizer {name!r}; known: {known}.")
    return name, _named(name, lr)
  tx = optim(learning_rate=lr) if callable(optim) and not isinstance(optim, optax.GradientTransformation) else None
  if not isinstance(tx, optax.GradientTransformation):
    raise TypeError(f"{_checks.caller()}: `optim` must be {list(NAMED_OPTIMIZERS)} or an optax factory; got {optim!r}.")
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
  _DEFAULT_TARGET: Callable[[int], float]
  action_dim: int  #: The action dimension (continuous) or the number of actions (discrete).
  initial_alpha: float  #: The starting temperature, as given.
  lr: float  #: The learning rate the optimizer was built with, as given.
  device: Any  #: The device as given; None stands for JAX's default device.
  optim: optax.GradientTransformation  #: The optax transformation that updates `log_alpha`.
  _optim_name: str
  _default_target: bool
  _jax_device: jax.Device | None
  _torch: Any  # The torch module, when serving torch.

  def __init__(self, action_dim: int, *, initial_alpha=1.0, optim="Adam", lr=3e-4, device=None, target_entropy=None):
    with _checks.entry(type(self).__name__):  # The core's checks (initial_alpha, the target) name this class.
      if isinstance(action_dim, bool) or not isinstance(action_dim, numbers.Integral) or action_dim < 1:
        raise ValueError(f"{_checks.caller()}: `action_dim` must be a positive int; got {action_dim!r}.")
      if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 1.2e-38 <= lr <= 3.4e38:
        raise ValueError(f"{_checks.caller()}: `lr` must be a positive number float32 holds; got {lr!r}.")
      self.action_dim, self.initial_alpha, self.lr, self.device = int(action_dim), initial_alpha, lr, device
      self._optim_name, self.optim = _optimizer(optim, lr)
      self._default_target = target_entropy is None
      target = self._DEFAULT_TARGET(self.action_dim) if target_entropy is None else target_entropy
      state = init_entropy_state(target, initial_alpha=initial_alpha, optimizer=self.optim)
      self._jax_device = _device(device)
    self._torch = sys.modules.get("torch") if _is_torch(optim) or _is_torch(device) else None
    self._pending: tuple[Any, EntropyState, jax.Array, int] | None = None
    self._set(jax.device_put(state, self._jax_device))

  def _set(self, state: EntropyState, alpha: jax.Array | None = None, skipped: int | None = None) -> None:
    self._state, self._pending = state, None
    self._alpha = self._out(state.alpha if alpha is None else alpha)
    self._skipped = int(state.skipped) if skipped is None else skipped  # On the host: compared after each update.

  def _out(self, x: jax.Array) -> Any:
    return x if self._torch is None else self._torch.from_dlpack(x)

  @property
  def state(self) -> EntropyState:
    """The `EntropyState`; pass it to jitted code, and assign the result back."""
    return self._state

  @state.setter
  def state(self, new: EntropyState) -> None:
    if not isinstance(new, EntropyState) or new.tx is not self.optim or signature(new) != signature(self._state):
      raise ValueError(f"{type(self).__name__}.state: expected an EntropyState like this one's; got {new!r}.")
    self._set(new)

  @property
  def target(self) -> Any:
    """The target entropy, a float32 scalar (a torch tensor when serving torch)."""
    return self._out(self._state.target)

  @property
  def log_alpha(self) -> Any:
    """The trained log temperature, a float32 scalar (a torch tensor when serving torch)."""
    return self._out(self._state.log_alpha)

  @property
  def alpha(self) -> Any:
    """The entropy coefficient `exp(log_alpha)` (a torch tensor when serving torch)."""
    return self._alpha

  def _run(self, update: Callable, inputs: dict[str, Any], **kwargs) -> Any:
    """Calls the core's jitted `update`; its state waits for `gradient_step`."""
    with _checks.entry(f"{type(self).__name__}.compute_loss"):
      arrays = {k: _as_jax(v, k) for k, v in inputs.items() if v is not None or k != "mask"}
      if self._torch is None and any(map(_is_torch, inputs.values())):
        self._torch = sys.modules["torch"]
        self._alpha = self._out(self._alpha)
      new, metrics = update(self._state, **arrays, **kwargs)
      skipped = np.asarray(metrics["skipped"]).item()  # The one wait (np.asarray reads faster than int()).
      if skipped != self._skipped:
        bad = {k: int(np.sum(~np.isfinite(np.asarray(v, np.float32)))) for k, v in arrays.items()}
        raise NonFiniteLossError(
          f"{_checks.caller()}: the update is not finite. NaN/Inf values per input: {bad} (-inf is fine in"
          " log_probs where probs is 0; with none, the step overflowed the optimizer's state). The state is unchanged."
        )
    self._pending = (self._out(metrics["loss"]), new, metrics["alpha"], skipped)
    return self._pending[0]

  def gradient_step(self, loss: Any) -> None:
    """Keeps the state the update of `loss` made (JAX has no `loss.backward()`): `loss` must be the object the
    latest `compute_loss` returned, else `LossMismatchError` (for `loss * 2`, a loss stepped on) changes nothing."""
    if self._pending is None or loss is not self._pending[0]:
      message = "expected the loss the latest compute_loss returned, unchanged and not yet stepped on"
      raise LossMismatchError(f"{type(self).__name__}.gradient_step: {message}. The state is unchanged.")
    self._set(*self._pending[1:])

  def config(self) -> EntropyParameters:
    """The module's settings, as Velora's `config()`."""
    return EntropyParameters(float(self.lr), float(self.initial_alpha), float(self._state.target))

  def state_dict(self) -> dict[str, Any]:
    """Everything needed to continue bit-identically, as Python and NumPy values: the
    settings, and `state`, the `EntropyState` in `entropy_jax.checkpoint.encode_state`'s form."""
    return {**self._settings(), "state": encode_state(self._state)}

  def _settings(self) -> dict[str, Any]:
    kind = {"format": STATE_DICT_FORMAT, "version": STATE_DICT_VERSION, "kind": type(self).__name__}
    return {**kind, "action_dim": self.action_dim, "optim": self._optim_name, "lr": self.lr}

  def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
    """Restores a `state_dict()` of this class, or Velora's `{"entropy_optim": <torch optimizer state>}`:
    its step count and moments, while the module keeps its own `log_alpha` (Velora's holds none; a warning says so).
    Anything else raises `ValueError` (a `CheckpointError` for a state the checkpoint module refuses), changing nothing.
    """
    with _checks.entry(f"{type(self).__name__}.load_state_dict"):  # The checkpoint module's errors name it too.
      if not isinstance(state_dict, Mapping):
        raise TypeError(f"{_checks.caller()}: expected a dict from state_dict(); got {type(state_dict).__name__}.")
      if set(state_dict) == {"entropy_optim"}:
        return self._load_velora(state_dict["entropy_optim"])
      diff = {k: (state_dict.get(k), v) for k, v in self._settings().items() if state_dict.get(k) != v}
      if diff:
        message = "not a state_dict() of this module's class and settings; (got, expected)"
        raise ValueError(f"{_checks.caller()}: {message}: {diff}.")
      self._restore(state_dict["state"])

  def _load_velora(self, optim_state: Any) -> None:
    fields, where = _TORCH_FIELDS.get(self._optim_name, {"(a named optimizer)": ""}), _checks.caller()
    try:
      (group,) = optim_state["param_groups"]
      saved = {k: np.asarray(_as_jax(v, k)) for k, v in optim_state["state"].get(0, {}).items() if v is not None}
    except (TypeError, KeyError, ValueError, AttributeError):
      raise ValueError(f"{where}: not a torch optimizer's state of one parameter: {optim_state!r:.200}.") from None
    if group.get("lr") != self.lr or (saved and set(saved) != set(fields)) or not np.isfinite([*saved.values()]).all():
      raise ValueError(
        f"{where}: Velora's lr {group.get('lr')!r}, state {saved}; needs {self.lr}, finite {sorted(fields)}."
      )
    moved = {fields[k]: v.astype(np.int32 if k == "step" else np.float32) for k, v in saved.items() if fields[k]}
    opt_state = optax.tree_utils.tree_set(self.optim.init(self._state.log_alpha), **moved)
    step = saved.get("step", np.zeros(())).astype(np.int32)
    self._restore(encode_state(self._state.replace(opt_state=opt_state, step=step)))
    warnings.warn(f"{where}: a Velora state_dict holds no log_alpha; this module keeps its own.", stacklevel=3)

  def _restore(self, payload: Any) -> None:
    # The checkpoint module's checks (structure, shapes, dtypes, values), named after the caller.
    self._set(jax.device_put(decode_state(payload, self._state), self._jax_device))

  def __repr__(self) -> str:
    settings = f"initial_alpha={self.initial_alpha}, optim={self._optim_name}, lr={self.lr}, device={self.device}"
    return f"{type(self).__name__}(action_dim={self.action_dim}, {settings})"


def _as_jax(x: Any, name: str) -> Any:
  """A NumPy or JAX array as it is; a torch tensor detached and viewed through DLPack."""
  if isinstance(x, (np.ndarray, jax.Array)):
    return x
  if not (_is_torch(x) and hasattr(x, "__dlpack__")):
    message = f"`{name}` must be a NumPy array, a JAX array or a torch tensor; got {type(x)}"
    raise TypeError(f"{_checks.caller()}: {message}.")
  tensor = x.detach()  # DLPack on JAX's accelerator; else a NumPy view (no copy), through the host if need be.
  on_jax_device = tensor.device.type == jax.default_backend().replace("gpu", "cuda") != "cpu"
  return jax.dlpack.from_dlpack(tensor.contiguous()) if on_jax_device else tensor.cpu().numpy()


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
    """The loss of `[B]` or `[B, 1]` log-probabilities, for `gradient_step`. NaN or Inf in
    `log_probs` raises `NonFiniteLossError`, and the state is unchanged."""
    return self._run(_continuous, {"log_probs": log_probs})


class EntropyModuleDiscrete(_EntropyModuleBase):
  """Automatic entropy tuning for discrete actions, as Velora's: Christodoulou
  2019, "Soft Actor-Critic for Discrete Action Settings", arXiv:1910.07207, eq. 11.

  Args and attributes as `EntropyModule`'s, with `action_dim` the number of actions `A`, and
  `target_entropy` None meaning `0.6 * log(A)` (with a `mask`, `0.6 * log(valid actions)` per
  state). Velora 0.2.0's is `0.98 * log(1 / A)`, negative: `entropy_jax.velora_discrete_target(A)`.
  """

  _DEFAULT_TARGET = staticmethod(discrete_target)

  def compute_loss(self, probs: Any, log_probs: Any, mask: Any = None) -> Any:
    """The loss of `[B, A]` action probabilities, their logs (`-inf` where 0) and an optional `[B, A]` bool
    `mask` of valid actions, for `gradient_step`. NaN or Inf raises `NonFiniteLossError`; nothing changes."""
    if tuple(getattr(probs, "shape", ()))[-1:] != (self.action_dim,):
      raise ValueError(f"EntropyModuleDiscrete.compute_loss: `probs` must be [B, {self.action_dim}]; got {probs!r:.40}")
    ratio = DISCRETE_TARGET_RATIO if self._default_target and mask is not None else None
    return self._run(_discrete, {"probs": probs, "log_probs": log_probs, "mask": mask}, masked_target_ratio=ratio)
