"""Velora-compatible `EntropyModule` and `EntropyModuleDiscrete`.

Drop-in replacements for `velora.models.nf.modules.EntropyModule` and
`EntropyModuleDiscrete` (Velora 0.2.0): same constructor, attributes,
`compute_loss`, `gradient_step`, `config`, `state_dict` and repr. They hold no
maths: each method calls the functional core (`continuous_loss` /
`discrete_loss` under `jax.value_and_grad`, `apply_gradients`) on
`self.state`, an `EntropyState`, and stores the result.

JAX has no `loss.backward()`. `compute_loss` is one compiled call that
returns the loss and also computes the state `apply_gradients` makes of its
gradient; `gradient_step(loss)` commits that state if `loss` is the very
object `compute_loss` returned, and raises `LossMismatchError` otherwise
(see `entropy_jax._pending`).

Inputs are NumPy arrays, JAX arrays or torch tensors (detached and handed
over through DLPack; torch is never imported by this library).

Deliberate differences from Velora 0.2.0 (see the docs, "Coming from Velora"):
  * `EntropyModuleDiscrete`'s default target is `+0.6 * log(A)`, the
    library's measured default (`entropy_jax.targets`); Velora's
    `0.98 * log(1 / A)` is negative, below every policy's entropy. Pass
    `target_entropy=velora_discrete_target(A)` to reproduce Velora.
  * `state_dict()` holds everything (log_alpha, optimizer state, target,
    counters) in the checkpoint module's format; Velora's holds only the
    optimizer state, so its log_alpha returns to `initial_alpha` after a
    reload.
  * Non-finite input: `compute_loss` raises `NonFiniteLossError` and the
    state stays bit-identical (Velora would write NaN into log_alpha).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from entropy_jax import _checks, _compat_calls, _interop, _packing, optimizers
from entropy_jax._config import EntropyParameters
from entropy_jax._pending import LossMismatchError, PendingLoss
from entropy_jax.checkpoint import decode_state, encode_state
from entropy_jax.state import EntropyState, init_entropy_state, log_alpha_from
from entropy_jax.targets import continuous_target, discrete_target

__all__ = [
  "EntropyModule",
  "EntropyModuleDiscrete",
  "EntropyParameters",
  "LossMismatchError",
  "NonFiniteLossError",
]

STATE_DICT_FORMAT = "entropy_jax.compat"
STATE_DICT_VERSION = 2


class NonFiniteLossError(ValueError):
  """`compute_loss` inputs gave a NaN or infinite gradient; nothing changed."""


class _EntropyModuleBase:
  """What the two modules share: construction, stepping, config, checkpoints."""

  _KIND = "_EntropyModuleBase"
  # The default target entropy from action_dim; each module kind sets its own.
  _DEFAULT_TARGET: Callable[[int], float]

  def __init__(
    self,
    action_dim: int,
    *,
    initial_alpha: float = 1.0,
    optim: Any = "Adam",
    lr: float = 3e-4,
    device: Any = None,
    target_entropy: float | None = None,
  ):
    where = type(self).__name__
    self._action_dim = _checks.positive_int("action_dim", action_dim, where)
    log_alpha_from("initial_alpha", initial_alpha, where)
    _checks.positive("lr", lr, where)
    if target_entropy is not None:
      _checks.float32_value("target_entropy", target_entropy, where)
    self._initial_alpha = initial_alpha
    self._lr = lr
    self._device = device
    self._jax_device = _interop.resolve_device(device, where)
    self._optim_name, self._tx = optimizers.make(optim, lr, where)
    self._default_target = target_entropy is None
    target = self._DEFAULT_TARGET(self._action_dim) if target_entropy is None else target_entropy
    state = init_entropy_state(target, initial_alpha=initial_alpha, optimizer=self._tx)
    self._layout = _packing.layout_of(state)
    # Where the `skipped` counter sits in the packed buffers.
    index = jax.tree.unflatten(self._layout.treedef, list(range(self._layout.treedef.num_leaves)))
    self._skipped_at = _packing.locate(self._layout, index.skipped)
    # The loss compute_loss returned last, and the (packed state, alpha) its step commits.
    self._pending: PendingLoss[tuple[tuple[jax.Array, ...], jax.Array]] = PendingLoss()
    self._put_state(jax.device_put(state, self._jax_device))

  def _put_state(self, state: EntropyState) -> None:
    # The state is kept packed (what the compiled update takes); the
    # EntropyState is unpacked on demand and cached.
    self._commit(_compat_calls.pack(self._layout, state), state, None)
    self._skipped = int(state.skipped)  # On the host: compared after each update.

  def _commit(self, packed: tuple[jax.Array, ...], state: EntropyState | None, alpha: jax.Array | None) -> None:
    self._packed = packed
    self._state = state
    self._alpha = alpha

  # --- Attributes, as Velora names them. ---

  @property
  def action_dim(self) -> int:
    """The action dimension (continuous) or the number of actions (discrete)."""
    return self._action_dim

  @property
  def initial_alpha(self) -> float:
    """The starting temperature, as given to the constructor."""
    return self._initial_alpha

  @property
  def lr(self) -> float:
    """The learning rate of `log_alpha`'s optimizer (read-only: the optimizer is built with it)."""
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
      self._state = _compat_calls.unpack(self._layout, self._packed)
    return self._state

  @state.setter
  def state(self, new_state: EntropyState) -> None:
    if not isinstance(new_state, EntropyState):
      raise TypeError(f"{type(self).__name__}.state: expected an EntropyState; got {type(new_state).__name__}.")
    _packing.check_layout(self._layout, new_state, f"{type(self).__name__}.state")
    self._put_state(new_state)
    self._pending.retire("superseded: the module's state was replaced after it was computed")

  @property
  def target(self) -> jax.Array:
    """The target entropy, a float32 scalar."""
    return self.state.target

  @property
  def log_alpha(self) -> jax.Array:
    """The trained log temperature, a float32 scalar."""
    return self.state.log_alpha

  @property
  def alpha(self) -> jax.Array:
    """The current entropy coefficient, `exp(log_alpha)`."""
    if self._alpha is None:
      self._alpha = jnp.exp(self.log_alpha)
    return self._alpha

  # --- Loss and step. ---

  def _run(self, compiled: _compat_calls.Compiled, *inputs, names: tuple[str, ...]) -> jax.Array:
    """Runs a compiled update on the state; keeps (loss, new state) pending."""
    # Every compat update passes through here: arrays JAX takes as they are
    # skip the call into the conversion (microseconds count here).
    inputs = tuple(
      [
        x
        if isinstance(x, _interop.ARRAY_TYPES) or (x is None and name == "mask")
        else _interop.as_input_array(x, name, f"{type(self).__name__}.compute_loss")
        for x, name in zip(inputs, names)
      ]
    )
    loss, new_packed, new_alpha = compiled.update(self._layout, self._packed, *inputs)
    buffer, at = self._skipped_at
    if int(np.asarray(new_packed[buffer])[at]) != self._skipped:  # The one wait for the device.
      grad = compiled.gradient(self._layout, self._packed, *inputs)
      state = self.state
      raise NonFiniteLossError(
        _compat_calls.non_finite_message(
          f"{type(self).__name__}.compute_loss",
          grad,
          dict(zip(names, inputs)),
          self._lr,
          int(state.step),
          float(state.alpha),
        )
      )
    self._pending.offer(loss, (new_packed, new_alpha))
    return loss

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
    packed, alpha = self._pending.take(loss, type(self).__name__)
    self._commit(packed, None, alpha)

  # --- Config and checkpoints. ---

  def config(self) -> EntropyParameters:
    """The module's settings, as Velora's `config()`."""
    return EntropyParameters(
      lr=float(self._lr),
      initial_alpha=float(self._initial_alpha),
      target=float(self.state.target),
    )

  def state_dict(self) -> dict[str, Any]:
    """Everything needed to continue bit-identically: plain Python and NumPy values.

    Keys: `format`, `version`, `kind` (the class name), `action_dim`,
    `optim`, `lr`, `initial_alpha`, and `state`, the checkpoint payload of
    the `EntropyState` (`entropy_jax.checkpoint.encode_state`: log_alpha,
    optimizer state, target, step, skipped, bounds, with a structure
    signature). It pickles, and `torch.save` takes it.
    """
    return {
      "format": STATE_DICT_FORMAT,
      "version": STATE_DICT_VERSION,
      "kind": self._KIND,
      "action_dim": self._action_dim,
      "optim": self._optim_name,
      "lr": self._lr,
      "initial_alpha": self._initial_alpha,
      "state": encode_state(self.state),
    }

  def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
    """Restores a `state_dict()`; on any error the module is left untouched.

    Raises:
      TypeError, ValueError: not a mapping; not an entropy_jax state dict (a
        Velora one included); another format version; the other module kind;
        another action_dim, optimizer or lr. `CheckpointError` (a
        `ValueError`): a state that `restore_checkpoint` would refuse, by the
        same rules (structure, shapes, dtypes, values).
    """
    where = f"{type(self).__name__}.load_state_dict"
    if not isinstance(state_dict, Mapping):
      raise TypeError(f"{where}: expected a dict from state_dict(); got {type(state_dict).__name__}.")
    if state_dict.get("format") != STATE_DICT_FORMAT:
      hint = (
        (" It looks like a Velora state_dict, which holds only the optimizer's torch state and cannot be converted.")
        if "entropy_optim" in state_dict
        else ""
      )
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
        f"{where}: the state dict is from a {state_dict.get('kind')!r}; this module is a {self._KIND!r}."
      )
    for key, mine in (("action_dim", self._action_dim), ("optim", self._optim_name), ("lr", self._lr)):
      if state_dict.get(key) != mine:
        raise ValueError(
          f"{where}: the state dict has {key}={state_dict.get(key)!r}; this"
          f" module has {key}={mine!r}. Build the module with the same settings."
        )
    restored = decode_state(state_dict.get("state"), self.state, where)
    self._put_state(jax.device_put(restored, self._jax_device))
    self._pending.retire("superseded: load_state_dict replaced the state after it was computed")

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
    return self._run(_compat_calls.continuous_update, log_probs, names=("log_probs",))


class EntropyModuleDiscrete(_EntropyModuleBase):
  """Automatic entropy tuning for discrete actions, as Velora's.

  Christodoulou 2019, "Soft Actor-Critic for Discrete Action Settings",
  arXiv:1910.07207, eq. 11: `loss = log_alpha * (H - target)` with
  `H = -mean_b sum_a p log p`, computed by `entropy_jax.losses.discrete_loss`.

  Args:
    action_dim: the number of actions `A`, a positive int.
    initial_alpha, optim, lr, device: as for `EntropyModule`.
    target_entropy: the target; None means `+0.6 * log(A)` (Velora 0.2.0
      uses `0.98 * log(1 / A)`, which is negative; pass
      `entropy_jax.targets.velora_discrete_target(A)` to reproduce it). With
      the default target and a `mask`, each state's target is
      `0.6 * log(number of valid actions)`.
  """

  _KIND = "EntropyModuleDiscrete"

  _DEFAULT_TARGET = staticmethod(discrete_target)

  def compute_loss(self, probs: jax.Array, log_probs: jax.Array, mask: jax.Array | None = None) -> jax.Array:
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
    shape = getattr(probs, "shape", None)  # arrays and tensors; np.shape for anything else
    if shape is None:
      shape = np.shape(probs)
    if not shape or shape[-1] != self._action_dim:
      raise ValueError(
        f"{type(self).__name__}.compute_loss: `probs` must have shape"
        f" [B, {self._action_dim}] (action_dim={self._action_dim}); got shape {shape}."
      )
    update = _compat_calls.discrete_update
    if mask is not None and self._default_target:
      update = _compat_calls.discrete_update_masked_target
    return self._run(update, probs, log_probs, mask, names=("probs", "log_probs", "mask"))
