"""Velora-compatible `EntropyModule` and `EntropyModuleDiscrete`.

Velora 0.2.0's classes with the same constructor, attributes, methods and repr, which Velora's own agents run
with. No maths: `compute_loss` calls the core's jitted `continuous_update` / `discrete_update` on `self.state`.

Torch in, torch out: a module built with a `torch.optim` class or a `torch.device` (as Velora's agents build
it), or given a torch tensor by `compute_loss` (from then on), gives torch tensors (`alpha`, `log_alpha`,
`target`, the loss), each a new tensor per read, as Velora's `log_alpha.exp()` is; else JAX arrays, which are
immutable. torch is never imported here. Velora's own `state_dict()` loads through `_compat_velora`.
"""

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

from entropy_jax import _checks, _compat_velora, optimizers
from entropy_jax.checkpoint import decode_state, encode_state, signature
from entropy_jax.state import EntropyState, init_entropy_state
from entropy_jax.targets import DISCRETE_TARGET_RATIO, continuous_target, discrete_target
from entropy_jax.update import continuous_update, discrete_update

__all__ = ["EntropyModule", "EntropyModuleDiscrete", "EntropyParameters", "LossMismatchError", "NonFiniteLossError"]

STATE_DICT_FORMAT, STATE_DICT_VERSION = "entropy_jax.compat", 3
# PyTorch's optimizers by name, with PyTorch's defaults (see `entropy_jax.optimizers`).
NAMED_OPTIMIZERS = {"Adam": optimizers.adam, "AdamW": optimizers.adamw, "SGD": optax.sgd, "RMSprop": optimizers.rmsprop}
_is_torch = _compat_velora.is_torch


def _read_back(update: Callable) -> Callable:
  """The core's `update`, jitted, also returning what the module reads on the host after it, as one float32 `[4]`
  array (one transfer): the loss, alpha, log_alpha, and 1 where the core skipped the step."""

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
  """Threads: a module may be shared. Each thread's `compute_loss` / `gradient_step` pair is its own, and every
  `gradient_step` counts: it keeps the update `compute_loss` made when the state is still the one that update
  started from, and otherwise (another thread stepped in between) runs the same update, on the same inputs, on
  the current state, under the module's lock. The log-form gradient `H - target` does not depend on `log_alpha`,
  so that is Hogwild's update with none lost. Pickling and `copy.deepcopy` rebuild the optimizer by name."""

  _DEFAULT_TARGET: Callable[[int], float]
  action_dim: int  #: The action dimension (continuous) or the number of actions (discrete).
  initial_alpha: float  #: The starting temperature, as given.
  lr: float  #: The learning rate the optimizer was built with, as given.
  device: Any  #: The device as given; None stands for JAX's default device.
  optim: optax.GradientTransformation  #: The optax transformation that updates `log_alpha`.
  _torch: Any  # The torch module, when serving torch.
  _optim_name: str
  _factory: Any
  _default_target: bool
  _jax_device: jax.Device | None
  _where: str  # torch's name of the state's device
  _lock: Any
  _local: Any
  _loads: int

  def __init__(self, action_dim: int, *, initial_alpha=1.0, optim="Adam", lr=3e-4, device=None, target_entropy=None):
    with _checks.entry(type(self).__name__):  # The core's checks (initial_alpha, the target) name this class.
      if isinstance(action_dim, bool) or not isinstance(action_dim, numbers.Integral) or action_dim < 1:
        raise ValueError(f"{_checks.caller()}: `action_dim` must be a positive int; got {action_dim!r}.")
      if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not 1.2e-38 <= lr <= 3.4e38:
        raise ValueError(f"{_checks.caller()}: `lr` must be a positive number float32 holds; got {lr!r}.")
      self.action_dim, self.initial_alpha, self.lr, self.device = int(action_dim), initial_alpha, lr, device
      self._optim_name, self.optim = _optimizer(optim, lr)
      self._factory = optim
      self._default_target = target_entropy is None
      target = self._DEFAULT_TARGET(self.action_dim) if target_entropy is None else target_entropy
      state = init_entropy_state(target, initial_alpha=initial_alpha, optimizer=self.optim)
      self._jax_device = _device(device)
    self._torch = sys.modules.get("torch") if _is_torch(optim) or _is_torch(device) else None
    self._lock, self._local, self._loads = threading.Lock(), threading.local(), 0  # See the class doc.
    where = self._jax_device or jax.devices()[0]
    self._where = "cpu" if where.platform == "cpu" else f"cuda:{where.local_hardware_id}"  # torch's name of it
    self._set(jax.device_put(state, self._jax_device))

  def _set(self, state: EntropyState) -> None:
    """Replaces the state (a load or an assignment): pending losses no longer step."""
    with self._lock:
      self._now, self._loads = (
        (state, state.alpha, (np.nan, float(state.alpha), float(state.log_alpha))),
        self._loads + 1,
      )

  def _tensor(self, value: float) -> Any:
    """A new float32 torch tensor of `value` on the state's device (the caller's to keep and to write into)."""
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
    """The next `(state, alpha, host values)` from `now`'s state; `NonFiniteLossError` where the core skips."""
    new, metrics, host = update(now[0], **arrays, **kwargs)
    host = np.asarray(host).tolist()  # The one wait.
    if host[3]:
      bad = {k: int(np.sum(~np.isfinite(np.asarray(v, np.float32)))) for k, v in arrays.items()}
      raise NonFiniteLossError(
        f"{_checks.caller()}: the update is not finite. NaN/Inf values per input: {bad} (-inf is fine in"
        " log_probs where probs is 0; with none, the step overflowed the optimizer's state). The state is unchanged."
      )
    return new, metrics["alpha"], host, metrics["loss"]

  def _run(self, update: Callable, inputs: dict[str, Any], **kwargs) -> Any:
    """Calls the core's jitted `update`; its state waits for this thread's `gradient_step`."""
    with _checks.entry(f"{type(self).__name__}.compute_loss"):
      arrays = {k: _compat_velora.as_jax(v, k) for k, v in inputs.items() if v is not None or k != "mask"}
      if self._torch is None and any(map(_is_torch, inputs.values())):
        self._torch = sys.modules["torch"]
      now, loads = self._now, self._loads
      *after, loss = self._update(now, update, arrays, kwargs)
    loss = loss if self._torch is None else self._tensor(after[2][0])
    self._local.pending = (loss, now, loads, tuple(after), update, arrays, kwargs)
    return loss

  def gradient_step(self, loss: Any) -> None:
    """Keeps the state the update of `loss` made (JAX has no `loss.backward()`): `loss` must be the object this
    thread's latest `compute_loss` returned, else `LossMismatchError` (for `loss * 2`, a loss stepped on, or one
    from before a `load_state_dict`) changes nothing. Where another thread stepped since, the same update runs
    on the current state (see the class doc)."""
    pending = getattr(self._local, "pending", None)
    with self._lock, _checks.entry(f"{type(self).__name__}.gradient_step"):
      if pending is None or loss is not pending[0] or pending[2] != self._loads:
        message = "expected the loss the latest compute_loss returned in this thread, unchanged, not yet stepped on"
        raise LossMismatchError(f"{_checks.caller()}: {message} and not from before a load. The state is unchanged.")
      _, now, _, after, *rerun = self._local.pending
      self._local.pending = None
      self._now = after if self._now is now else self._update(self._now, *rerun)[:3]

  def config(self) -> EntropyParameters:
    """The module's settings, as Velora's `config()`."""
    return EntropyParameters(float(self.lr), float(self.initial_alpha), float(self.state.target))

  def state_dict(self) -> dict[str, Any]:
    """Everything needed to continue bit-identically: the settings, and `state`, the `EntropyState` in
    `entropy_jax.checkpoint.encode_state`'s form, its arrays new copies: NumPy arrays, or torch tensors when
    serving torch (so that `torch.load` with its default `weights_only=True` reads it)."""
    payload = encode_state(self.state)
    leaves = [np.array(x) for x in payload["leaves"]]
    leaves = leaves if self._torch is None else [self._torch.from_numpy(x) for x in leaves]
    return {**self._settings(), "state": {**payload, "leaves": leaves}}

  def _settings(self) -> dict[str, Any]:
    kind = {"format": STATE_DICT_FORMAT, "version": STATE_DICT_VERSION, "kind": type(self).__name__}
    return {**kind, "action_dim": self.action_dim, "optim": self._optim_name, "lr": float(self.lr)}

  def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
    """Restores a `state_dict()` of this class, or Velora's `{"entropy_optim": <torch optimizer state>}` of the
    same optimizer and hyperparameters: its step count and moments, while the module keeps its own `log_alpha`
    (Velora's holds none; a warning says so). Anything else raises `ValueError` (a `CheckpointError` for a state
    the checkpoint module refuses), changing nothing. The module keeps copies: later writes to the dict's
    arrays do not reach it."""
    with _checks.entry(f"{type(self).__name__}.load_state_dict"):  # The checkpoint module's errors name it too.
      if not isinstance(state_dict, Mapping):
        raise TypeError(f"{_checks.caller()}: expected a dict from state_dict(); got {type(state_dict).__name__}.")
      if set(state_dict) == {"entropy_optim"}:
        moved, step = _compat_velora.velora_state(state_dict["entropy_optim"], self._optim_name, self.lr)
        opt_state = optax.tree_utils.tree_set(self.optim.init(self.state.log_alpha), **moved)
        self._set(jax.device_put(self.state.replace(opt_state=opt_state, step=step), self._jax_device))
        where = _checks.caller()
        return warnings.warn(
          f"{where}: a Velora state_dict holds no log_alpha; this module keeps its own.", stacklevel=2
        )
      diff = {k: (state_dict.get(k), v) for k, v in self._settings().items() if state_dict.get(k) != v}
      if diff:
        message = "not a state_dict() of this module's class and settings; (got, expected)"
        raise ValueError(f"{_checks.caller()}: {message}: {diff}.")
      payload = state_dict["state"]
      if isinstance(payload, Mapping) and isinstance(payload.get("leaves"), list):
        payload = {**payload, "leaves": [_compat_velora.host_copy(x) for x in payload["leaves"]]}
      # The checkpoint module's checks (structure, shapes, dtypes, values), named after the caller.
      self._set(jax.device_put(decode_state(payload, self.state), self._jax_device))

  def __getstate__(self) -> dict[str, Any]:
    """What pickle and `copy.deepcopy` keep: the settings, whether it serves torch, and `state_dict()`."""
    named = self._optim_name in NAMED_OPTIMIZERS
    optim = _compat_velora.by_name(self._optim_name if named else self._factory, type(self).__name__)
    device = self.device
    if isinstance(device, jax.Device):  # jax.Device does not pickle: its platform and index do.
      device = (device.platform, jax.devices(device.platform).index(device))
    target = None if self._default_target else float(self.state.target)
    settings = dict(initial_alpha=self.initial_alpha, optim=optim, lr=self.lr, device=device, target_entropy=target)
    return {
      "action_dim": self.action_dim,
      "settings": settings,
      "torch": self._torch is not None,
      "dict": self.state_dict(),
    }

  def __setstate__(self, saved: dict[str, Any]) -> None:
    settings, device = saved["settings"], saved["settings"]["device"]
    if isinstance(device, tuple):
      settings = {**settings, "device": jax.devices(device[0])[device[1]]}
    _EntropyModuleBase.__init__(self, saved["action_dim"], **settings)
    self._torch = __import__("torch") if saved["torch"] else None
    self.load_state_dict(saved["dict"])

  def __repr__(self) -> str:
    settings = f"initial_alpha={self.initial_alpha}, optim={self._optim_name}, lr={self.lr}, device={self.device}"
    return f"{type(self).__name__}(action_dim={self.action_dim}, {settings})"


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
