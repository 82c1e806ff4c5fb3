"""Velora-compatible `EntropyModule` and `EntropyModuleDiscrete`.

Drop-in replacements for `velora.models.nf.modules.EntropyModule` and
`EntropyModuleDiscrete` (Velora 0.2.0): same constructor, attributes,
`compute_loss`, `gradient_step`, `config`, `state_dict` and repr. They hold no
maths: each method calls the functional core (`continuous_loss` /
`discrete_loss` under `jax.value_and_grad`, `apply_gradients`) on
`self.state`, an `EntropyState`, and stores the result.

JAX has no `loss.backward()`. `compute_loss` is one compiled call that
returns the loss and also computes its gradient with respect to `log_alpha`
and the state that `apply_gradients` makes of it; the module keeps that
pending (loss, new state) pair, and `gradient_step(loss)` commits the new
state, after checking that `loss` is exactly the object `compute_loss`
returned (it needs no compiled call of its own). Anything else (a loss from
another module, a derived value such as `loss * 2`, a loss already stepped on
or superseded by a later `compute_loss`) raises `LossMismatchError`: never a
silent no-op, never a wrong step.

Deliberate differences from Velora 0.2.0 (see the README, "Coming from Velora"):
  * `EntropyModuleDiscrete`'s default target is `+0.98 * log(A)`
    (Christodoulou 2019); Velora's `0.98 * log(1 / A)` is negative. Pass
    `target_entropy=velora_discrete_target(A)` to reproduce Velora.
  * `state_dict()` holds everything (log_alpha, optimizer state, target,
    counters) with a format version; Velora's holds only the optimizer
    state, so its log_alpha returns to `initial_alpha` after a reload.
  * Non-finite input (or a step that would overflow log_alpha):
    `compute_loss` raises `NonFiniteLossError` and the state stays
    bit-identical (Velora would write NaN into log_alpha).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import numbers
import weakref
from collections.abc import Mapping
from typing import Any, Callable, Optional

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from entropy_jax import _checks
from entropy_jax import _packing
from entropy_jax import optimizers
from entropy_jax.losses import continuous_loss, discrete_loss
from entropy_jax.state import EntropyState, init_entropy_state
from entropy_jax.targets import (
    DISCRETE_TARGET_RATIO,
    continuous_target,
    discrete_target,
    masked_discrete_target,
)
from entropy_jax.update import apply_gradients

STATE_DICT_FORMAT = "entropy_jax.compat"
STATE_DICT_VERSION = 1


class LossMismatchError(ValueError):
  """`gradient_step` got a loss that is not this module's pending loss."""


class NonFiniteLossError(ValueError):
  """`compute_loss` inputs gave a NaN or infinite gradient; nothing changed."""


@dataclasses.dataclass(frozen=True)
class EntropyParameters:
  """The module's settings, as Velora's `EntropyParameters` config model.

  Immutable (a frozen dataclass; `dataclasses.replace` makes a changed
  copy). `model_dump()` and `model_dump_json()` give what Velora's pydantic
  model gives, without depending on pydantic.

  Attributes:
    lr: the learning rate of `log_alpha`'s optimizer.
    initial_alpha: the starting temperature.
    target: the target entropy.
  """

  lr: float
  initial_alpha: float
  target: float

  def model_dump(self) -> dict[str, float]:
    """A plain dict `{"lr": ..., "initial_alpha": ..., "target": ...}`."""
    return dataclasses.asdict(self)

  def model_dump_json(self) -> str:
    """Compact JSON, formatted as pydantic's `model_dump_json()`."""
    return json.dumps(self.model_dump(), separators=(",", ":"))

  @classmethod
  def model_validate_json(cls, data: str) -> "EntropyParameters":
    """The inverse of `model_dump_json`."""
    fields = json.loads(data)
    names = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(fields, dict) or set(fields) != names:
      raise ValueError(
          f"EntropyParameters: expected a JSON object with keys {sorted(names)};"
          f" got {data!r}."
      )
    return cls(**{k: float(v) for k, v in fields.items()})


# ----------------------------------------------------------------------------
# The compiled calls, shared by all modules (one trace per input shape, state
# structure and optimizer; modules with the same settings share one optimizer
# object, see `optimizers.make`).


def _compiled_update(loss_fn):
  """One jitted call: the loss, its gradient and the stepped state.

  The state goes in and out packed into one flat buffer per dtype (`layout`
  is static, see `entropy_jax._packing`): each array crossing the jit
  boundary costs about as much as the arithmetic of the whole update, and
  this call is the whole cost of a compat update.

  Returns:
    A function `(layout, packed, *inputs) -> (loss, new_packed, new_alpha)`.
    Whether `apply_gradients` skipped the step (non-finite gradient or
    log_alpha) is read from the new state's `skipped` counter, inside
    `new_packed`: no extra output.
  """

  @functools.partial(jax.jit, static_argnums=0)
  def update(layout, packed, *inputs):
    state = _packing.unpack(layout, packed)
    loss, grad = jax.value_and_grad(loss_fn)(state.log_alpha, state.target, *inputs)
    new_state = apply_gradients(state, grad)
    return loss, _packing.pack(layout, new_state), new_state.alpha

  @functools.partial(jax.jit, static_argnums=0)
  def gradient(layout, packed, *inputs):
    state = _packing.unpack(layout, packed)
    return jax.grad(loss_fn)(state.log_alpha, state.target, *inputs)

  update.gradient = gradient  # For the error message of a skipped step only.
  return update


_pack = jax.jit(_packing.pack, static_argnums=0)
_unpack = jax.jit(_packing.unpack, static_argnums=0)


_continuous_update = _compiled_update(
    lambda log_alpha, target, log_probs: continuous_loss(log_alpha, log_probs, target)
)
_discrete_update = _compiled_update(
    lambda log_alpha, target, probs, log_probs, mask: discrete_loss(
        log_alpha, probs, log_probs, target, mask=mask
    )
)
# The default discrete target under a mask: 0.98 * log(valid actions), per state.
_discrete_update_masked_target = _compiled_update(
    lambda log_alpha, _, probs, log_probs, mask: discrete_loss(
        log_alpha, probs, log_probs,
        masked_discrete_target(mask, DISCRETE_TARGET_RATIO), mask=mask,
    )
)


# ----------------------------------------------------------------------------


def resolve_device(device: Any, where: str = "resolve_device") -> Optional[jax.Device]:
  """Maps `None`, a `jax.Device`, `"cpu"`, `"cuda:0"`, `"gpu:1"` to a device.

  A `torch.device` is accepted too (read through its `type` and `index`).

  Raises:
    ValueError: the device does not exist on this machine (the message lists
      the available ones) or the string is not understood.
  """
  if device is None or isinstance(device, jax.Device):
    return device
  if isinstance(device, str):
    spec = device
  elif hasattr(device, "type") and hasattr(device, "index"):  # torch.device
    spec = device.type if device.index is None else f"{device.type}:{device.index}"
  else:
    raise TypeError(
        f"{where}: `device` must be None, a jax.Device or a string such as"
        f" 'cpu' or 'cuda:0'; got {device!r} of type {type(device).__name__}."
    )
  platform, _, index = spec.strip().lower().partition(":")
  backend = {"cpu": "cpu", "cuda": "gpu", "gpu": "gpu", "rocm": "gpu", "tpu": "tpu"}.get(platform)
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
        f"{where}: device {device!r} is not available: this JAX has no"
        f" {backend} backend. Available devices: {available}."
    ) from None
  i = int(index) if index else 0
  if i >= len(devices):
    raise ValueError(
        f"{where}: device {device!r} is not available: there are"
        f" {len(devices)} {backend} devices ({[str(d) for d in devices]})."
    )
  return devices[i]


class _EntropyModuleBase:
  """What the two modules share: construction, stepping, config, checkpoints."""

  _KIND = "_EntropyModuleBase"
  # The default target entropy from action_dim; each module kind sets its own.
  _DEFAULT_TARGET: Callable[[int], float]
  _MAX_SPENT = 8  # How many stepped-on / superseded losses are remembered.

  def __init__(
      self,
      action_dim: int,
      *,
      initial_alpha: float = 1.0,
      optim: Any = "Adam",
      lr: float = 3e-4,
      device: Any = None,
      target_entropy: Optional[float] = None,
  ):
    where = type(self).__name__
    self._action_dim = _checks.positive_int("action_dim", action_dim, where)
    _checks.positive_finite("initial_alpha", initial_alpha, where)
    _checks.positive_finite("lr", lr, where)
    if target_entropy is not None:
      if isinstance(target_entropy, bool) or not isinstance(
          target_entropy, (numbers.Real, np.ndarray, jax.Array)
      ):
        raise TypeError(
            f"{where}: `target_entropy` must be None or a number; got"
            f" {target_entropy!r} of type {type(target_entropy).__name__}."
        )
      _checks.finite("target_entropy", target_entropy, where)
    self._initial_alpha = initial_alpha
    self._lr = lr
    self._device = device
    self._jax_device = resolve_device(device, where)
    self._optim_name, self._tx = optimizers.make(optim, lr, where)
    self._default_target = target_entropy is None
    target = self._DEFAULT_TARGET(self._action_dim) if target_entropy is None else target_entropy
    state = init_entropy_state(target, initial_alpha=initial_alpha, optimizer=self._tx)
    self._layout = _packing.layout_of(state)
    # Where the `skipped` counter sits in the packed buffers.
    index = jax.tree.unflatten(self._layout.treedef, list(range(self._layout.treedef.num_leaves)))
    self._skipped_at = _packing.locate(self._layout, index.skipped)
    self._pending: Optional[tuple[jax.Array, tuple[jax.Array, ...], jax.Array]] = None
    self._spent: list[tuple[weakref.ref, str]] = []
    self._put_state(jax.device_put(state, self._jax_device))

  def _put_state(self, state: EntropyState) -> None:
    # The state is kept packed (what the compiled update takes); the
    # EntropyState is unpacked on demand and cached.
    self._commit(_pack(self._layout, state), state, None)
    self._skipped = int(state.skipped)  # On the host: compared after each update.

  def _commit(self, packed: tuple[jax.Array, ...], state: Optional[EntropyState], alpha: Optional[jax.Array]) -> None:
    self._packed = packed
    self._state = state
    self._alpha = alpha

  # --- Attributes, as Velora names them. ---

  @property
  def action_dim(self) -> int:
    return self._action_dim

  @property
  def initial_alpha(self) -> float:
    return self._initial_alpha

  @property
  def lr(self) -> float:
    return self._lr

  @property
  def device(self) -> Any:
    """The device as given to the constructor (None: JAX's default)."""
    return self._device

  @property
  def optim(self):
    """The optax `GradientTransformation` that updates `log_alpha`."""
    return self._tx

  @property
  def state(self) -> EntropyState:
    """The `EntropyState`; pass it to jitted code, assign the result back."""
    if self._state is None:
      self._state = _unpack(self._layout, self._packed)
    return self._state

  @state.setter
  def state(self, new_state: EntropyState) -> None:
    if not isinstance(new_state, EntropyState):
      raise TypeError(
          f"{type(self).__name__}.state: expected an EntropyState; got"
          f" {type(new_state).__name__}."
      )
    if jax.tree.structure(new_state) != self._layout.treedef:
      raise ValueError(
          f"{type(self).__name__}.state: the new state's structure (optimizer,"
          " schedule, loss form) differs from this module's; expected"
          f" {self._layout.treedef}, got {jax.tree.structure(new_state)}."
      )
    layout = _packing.layout_of(new_state)
    if layout != self._layout:
      raise ValueError(
          f"{type(self).__name__}.state: the new state's leaf shapes and dtypes"
          f" {list(zip(layout.shapes, layout.dtypes))} differ from this module's"
          f" {list(zip(self._layout.shapes, self._layout.dtypes))}."
      )
    self._put_state(new_state)
    self._retire_pending("superseded: the module's state was replaced after it was computed")

  @property
  def target(self) -> jax.Array:
    """The target entropy, a float32 scalar."""
    return self.state.target

  @property
  def log_alpha(self) -> jax.Array:
    return self.state.log_alpha

  @property
  def alpha(self) -> jax.Array:
    """The current entropy coefficient, `exp(log_alpha)`."""
    if self._alpha is None:
      self._alpha = jnp.exp(self.log_alpha)
    return self._alpha

  # --- Loss and step. ---

  def _run(self, update, *inputs, names: tuple[str, ...]) -> jax.Array:
    """Runs a compiled update on the state; keeps (loss, new state) pending."""
    loss, new_packed, new_alpha = update(self._layout, self._packed, *inputs)
    buffer, at = self._skipped_at
    if int(np.asarray(new_packed[buffer])[at]) != self._skipped:  # The one wait for the device.
      grad = update.gradient(self._layout, self._packed, *inputs)
      raise NonFiniteLossError(self._non_finite_message(grad, dict(zip(names, inputs))))
    self._retire_pending("superseded by a later compute_loss call")
    self._pending = (loss, new_packed, new_alpha)
    return loss

  def _non_finite_message(self, grad, inputs: dict[str, Any]) -> str:
    if np.isfinite(np.asarray(grad)):  # A finite gradient whose step overflows.
      return (
          f"{type(self).__name__}.compute_loss: the gradient {float(grad)} with"
          f" lr {self._lr} would make log_alpha non-finite (or alpha ="
          " exp(log_alpha) overflow or underflow). No loss is returned and the"
          " module's state is unchanged."
      )
    counts = []
    for name, x in inputs.items():
      x = np.asarray(x)
      bad = ~np.isfinite(x)
      if name == "log_probs" and "probs" in inputs:  # p = 0 with log p = -inf is fine.
        bad &= ~((np.asarray(inputs["probs"]) == 0) & (x == -np.inf))
      counts.append(f"`{name}` has {int(bad.sum())} NaN/Inf of {x.size} values")
    return (
        f"{type(self).__name__}.compute_loss: the gradient with respect to"
        f" log_alpha is {float(grad)} (expected a finite number); "
        + "; ".join(counts)
        + ". No loss is returned and the module's state is unchanged"
        f" (step {int(self.state.step)}, alpha {float(self.state.alpha):.6g})."
    )

  def _retire_pending(self, reason: str) -> None:
    if self._pending is not None:
      self._spent.append((weakref.ref(self._pending[0]), reason))
      self._spent = self._spent[-self._MAX_SPENT:]
      self._pending = None

  def gradient_step(self, loss: jax.Array) -> None:
    """Applies the gradient of `loss`, the value `compute_loss` just returned.

    `compute_loss` already ran `apply_gradients` in its compiled call; this
    commits the resulting state (no compiled call of its own).

    Args:
      loss: the very object returned by this module's latest `compute_loss`.

    Raises:
      LossMismatchError: `loss` is not that object: a loss already stepped
        on, superseded by a later `compute_loss`, derived from it (such as
        `loss * 2`, whose gradient this module cannot know), or produced
        elsewhere. The state is unchanged.
    """
    name = type(self).__name__
    if self._pending is not None and loss is self._pending[0]:
      _, packed, alpha = self._pending
      self._commit(packed, None, alpha)
      self._retire_pending("already applied by gradient_step")
      return
    for ref, reason in reversed(self._spent):
      if ref() is loss:
        raise LossMismatchError(
            f"{name}.gradient_step: this loss was {reason}. Call compute_loss"
            " again and pass the loss it returns. The state is unchanged."
        )
    if not isinstance(loss, jax.Array):
      raise LossMismatchError(
          f"{name}.gradient_step: expected the jax.Array returned by this"
          f" module's compute_loss; got {type(loss).__name__}. The state is unchanged."
      )
    pending = "no compute_loss call is pending" if self._pending is None else (
        "the pending loss is another object"
    )
    raise LossMismatchError(
        f"{name}.gradient_step: this loss was not returned by this module's"
        f" compute_loss ({pending}). JAX has no loss.backward(): a value derived"
        " from the loss (e.g. `loss * 2`) or one from another module cannot be"
        " differentiated here. Pass the loss compute_loss returned, unchanged."
        " The state is unchanged."
    )

  # --- Config and checkpoints. ---

  def config(self) -> EntropyParameters:
    """The module's settings, as Velora's `config()`."""
    return EntropyParameters(
        lr=float(self._lr),
        initial_alpha=float(self._initial_alpha),
        target=float(self.state.target),
    )

  def state_dict(self) -> dict[str, Any]:
    """Everything needed to continue bit-identically, as NumPy arrays.

    Keys: `format`, `version`, `kind` (the class name), `action_dim`,
    `optim`, `lr`, `initial_alpha`, and `state`, the
    `flax.serialization.to_state_dict` of the `EntropyState` (log_alpha,
    optimizer state, target, step, skipped, bounds).
    """
    arrays = jax.tree.map(np.array, flax.serialization.to_state_dict(self.state))
    return {
        "format": STATE_DICT_FORMAT,
        "version": STATE_DICT_VERSION,
        "kind": self._KIND,
        "action_dim": self._action_dim,
        "optim": self._optim_name,
        "lr": self._lr,
        "initial_alpha": self._initial_alpha,
        "state": arrays,
    }

  def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
    """Restores a `state_dict()`; on any error the module is left untouched.

    Raises:
      TypeError, ValueError: not a mapping; not an entropy_jax state dict (a
        Velora one included); another format version; the other module kind;
        another action_dim, optimizer or lr; a state whose structure, shapes
        or dtypes differ from this module's, or whose log_alpha or target is
        not finite.
    """
    where = f"{type(self).__name__}.load_state_dict"
    if not isinstance(state_dict, Mapping):
      raise TypeError(f"{where}: expected a dict from state_dict(); got {type(state_dict).__name__}.")
    if state_dict.get("format") != STATE_DICT_FORMAT:
      hint = (" It looks like a Velora state_dict, which holds only the optimizer's"
              " torch state and cannot be converted.") if "entropy_optim" in state_dict else ""
      raise ValueError(
          f"{where}: not an entropy_jax state dict: expected format"
          f" {STATE_DICT_FORMAT!r}, got {state_dict.get('format')!r} (keys"
          f" {sorted(map(str, state_dict))}).{hint}"
      )
    if state_dict.get("version") != STATE_DICT_VERSION:
      raise ValueError(
          f"{where}: state dict format version {state_dict.get('version')!r};"
          f" this entropy_jax reads version {STATE_DICT_VERSION}."
      )
    if state_dict.get("kind") != self._KIND:
      raise ValueError(
          f"{where}: the state dict is from a {state_dict.get('kind')!r}; this"
          f" module is a {self._KIND!r}."
      )
    for key, mine in (("action_dim", self._action_dim), ("optim", self._optim_name), ("lr", self._lr)):
      if state_dict.get(key) != mine:
        raise ValueError(
            f"{where}: the state dict has {key}={state_dict.get(key)!r}; this"
            f" module has {key}={mine!r}. Build the module with the same settings."
        )
    restored = self._restore_state(state_dict.get("state"), where)
    self._put_state(jax.device_put(restored, self._jax_device))
    self._retire_pending("superseded: load_state_dict replaced the state after it was computed")

  def _restore_state(self, arrays: Any, where: str) -> EntropyState:
    expected = flax.serialization.to_state_dict(self.state)
    if jax.tree.structure(arrays) != jax.tree.structure(expected):
      raise ValueError(
          f"{where}: the saved state's structure does not match this module's:"
          f" expected {jax.tree.structure(expected)}, got {jax.tree.structure(arrays)}."
      )
    leaves = []
    for path, want, got in zip(
        (jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(expected)),
        jax.tree.leaves(expected),
        jax.tree.leaves(arrays),
    ):
      try:
        got = np.asarray(got)
      except Exception as e:  # noqa: BLE001 - any unconvertible garbage.
        raise ValueError(f"{where}: state{path} is not an array: {e}") from None
      if got.shape != want.shape or got.dtype != want.dtype:
        raise ValueError(
            f"{where}: state{path} must have shape {want.shape} and dtype"
            f" {want.dtype}; got shape {got.shape} and dtype {got.dtype}."
        )
      leaves.append(got)
    arrays = jax.tree.unflatten(jax.tree.structure(expected), leaves)
    for key in ("log_alpha", "target"):
      if not np.isfinite(arrays[key]):
        raise ValueError(f"{where}: the saved {key} is {arrays[key]}; expected a finite number.")
    restored = flax.serialization.from_state_dict(self.state, arrays)
    return jax.tree.map(jnp.asarray, restored)

  def __repr__(self) -> str:
    return (
        f"{type(self).__name__}("
        f"action_dim={self._action_dim}, "
        f"initial_alpha={self._initial_alpha}, "
        f"optim={self._optim_name}, "
        f"lr={self._lr}, "
        f"device={self._device})"
    )


class EntropyModule(_EntropyModuleBase):
  """Automatic entropy tuning for continuous actions, as Velora's.

  Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications",
  arXiv:1812.05905, eq. 18: `loss = -mean_b(log_alpha * (log_probs_b +
  target))`, computed by `entropy_jax.losses.continuous_loss`.

  Args:
    action_dim: the dimension of the action space, a positive int.
    initial_alpha: the starting temperature, positive and finite.
    optim: `"Adam"` (default), `"AdamW"`, `"SGD"`, `"RMSprop"` (PyTorch's
      defaults, see `entropy_jax.optimizers`), the `torch.optim` class of that
      name, or an optax factory called as `optim(learning_rate=lr)`.
    lr: the learning rate, positive and finite.
    device: None, a `jax.Device`, or a string such as `"cpu"`, `"cuda:0"`.
    target_entropy: the target; None means `-action_dim`.
  """

  _KIND = "EntropyModule"

  _DEFAULT_TARGET = staticmethod(continuous_target)

  def compute_loss(self, log_probs: jax.Array) -> jax.Array:
    """The temperature loss for a batch; one compiled call, also the gradient.

    Args:
      log_probs: `[B]` or `[B, 1]` log-probabilities of actions sampled from
        the current policy.

    Returns:
      The scalar loss, to be passed to `gradient_step` unchanged.

    Raises:
      NonFiniteLossError: NaN or Inf in `log_probs`; the state is unchanged.
    """
    return self._run(_continuous_update, log_probs, names=("log_probs",))


class EntropyModuleDiscrete(_EntropyModuleBase):
  """Automatic entropy tuning for discrete actions, as Velora's.

  Christodoulou 2019, "Soft Actor-Critic for Discrete Action Settings",
  arXiv:1910.07207, eq. 11: `loss = log_alpha * (H - target)` with
  `H = -mean_b sum_a p log p`, computed by `entropy_jax.losses.discrete_loss`.

  Args:
    action_dim: the number of actions `A`, a positive int.
    initial_alpha, optim, lr, device: as for `EntropyModule`.
    target_entropy: the target; None means `+0.98 * log(A)` (Velora 0.2.0
      uses `0.98 * log(1 / A)`, which is negative; pass
      `entropy_jax.targets.velora_discrete_target(A)` to reproduce it). With
      the default target and a `mask`, each state's target is
      `0.98 * log(number of valid actions)`.
  """

  _KIND = "EntropyModuleDiscrete"

  _DEFAULT_TARGET = staticmethod(discrete_target)

  def compute_loss(
      self, probs: jax.Array, log_probs: jax.Array, mask: Optional[jax.Array] = None
  ) -> jax.Array:
    """The temperature loss for a batch; one compiled call, also the gradient.

    Args:
      probs: `[B, A]` action probabilities of the current policy.
      log_probs: `[B, A]` their logarithms.
      mask: optional `[B, A]` bool, True where an action is valid; invalid
        actions are left out of the entropy.

    Returns:
      The scalar loss, to be passed to `gradient_step` unchanged.

    Raises:
      ValueError: `probs.shape[-1]` is not `action_dim`.
      NonFiniteLossError: NaN or Inf in the inputs (outside `p = 0,
        log p = -inf`); the state is unchanged.
    """
    shape = np.shape(probs)
    if not shape or shape[-1] != self._action_dim:
      raise ValueError(
          f"{type(self).__name__}.compute_loss: `probs` must have shape"
          f" [B, {self._action_dim}] (action_dim={self._action_dim}); got shape {shape}."
      )
    update = _discrete_update
    if mask is not None and self._default_target:
      update = _discrete_update_masked_target
    return self._run(update, probs, log_probs, mask, names=("probs", "log_probs"))
