"""SBX's SAC with its temperature driven by entropy_jax.

SBX (`sbx-rl==0.28.0`, Stable-Baselines3 in JAX) keeps `log_ent_coef` in a
flax `TrainState`, `SAC.ent_coef_state`, whose `apply_fn` returns
`exp(log_ent_coef)`. Its jitted static method
`SAC.update_temperature(target_entropy, ent_coef_state, entropy)` takes the
actor step's batch entropy estimate `entropy = -mean(log pi)` and minimizes
the log-form loss `log(alpha) * (entropy - target)` with `optax.adam(lr)`, `lr`
the initial learning rate. Its critic and actor steps read the temperature as
`ent_coef_state.apply_fn({"params": ent_coef_state.params})`.

`EntropySAC` subclasses `sbx.SAC` and changes two things only:

- `_setup_model` (SB3's set-up hook) puts an `EntropyState` where SBX put its
  `TrainState`: `ent_coef_state` is an `SbxEntropyState`, an `EntropyState`
  that also answers SBX's `apply_fn` / `params` read;
- `update_temperature` differentiates `entropy_jax.continuous_loss`
  (`temperature_loss`) and steps with `entropy_jax.apply_gradients`.

SBX's `learn`, replay buffer, networks, losses and jitted `_train` loop are
untouched. With the default arguments the swap reproduces SBX's temperature
(same loss form, optimizer, initial alpha and target); `alpha_optimizer`,
`min_alpha`, `max_alpha`, `entropy_target` and `alpha_loss_form` reach what
SBX has no setting for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
import sbx

import entropy_jax as ej

Target = float | Callable[[jax.Array], jax.Array]


def _alpha(variables: dict[str, Any]) -> jax.Array:
  """SBX's `EntropyCoef.apply`: `exp(log_ent_coef)`."""
  return jnp.exp(variables["params"]["log_ent_coef"])


class SbxEntropyState(ej.EntropyState):
  """An `EntropyState` that SBX's losses can read as they read a TrainState.

  SBX computes the temperature as
  `ent_coef_state.apply_fn({"params": ent_coef_state.params})`; `params` and
  `apply_fn` give it `exp(log_alpha)`. Every entropy_jax function takes and
  returns this class unchanged.
  """

  @property
  def params(self) -> dict[str, jax.Array]:
    """`{"log_ent_coef": log_alpha}`, the layout of SBX's `TrainState`."""
    return {"log_ent_coef": self.log_alpha}

  @property
  def apply_fn(self) -> Callable[[dict[str, Any]], jax.Array]:
    """`variables -> exp(variables["params"]["log_ent_coef"])`, as SBX's."""
    return _alpha


def as_sbx_state(state: ej.EntropyState) -> SbxEntropyState:
  """The same fields as an `SbxEntropyState`."""
  return SbxEntropyState(**{f.name: getattr(state, f.name) for f in dataclasses.fields(state)})


class EntropySAC(sbx.SAC):
  """`sbx.SAC` whose temperature is an `EntropyState` updated by entropy_jax.

  Takes `sbx.SAC`'s arguments (`ent_coef` must be `"auto"` or
  `"auto_<initial alpha>"`: a learned temperature), plus:

  Args:
    alpha_optimizer: the optax transformation of `log_alpha`; `None` uses
      SBX's, `optax.adam(initial learning rate)`.
    min_alpha, max_alpha: optional bounds on alpha (SBX has none).
    entropy_target: the target entropy, a number or a schedule of the update
      count; `None` uses SBX's `target_entropy` (`-action_dim` for `"auto"`).
    alpha_loss_form: `"log"` (SBX's) or `"alpha"`.
  """

  def __init__(
    self,
    *args: Any,
    alpha_optimizer: optax.GradientTransformation | None = None,
    min_alpha: float | None = None,
    max_alpha: float | None = None,
    entropy_target: Target | None = None,
    alpha_loss_form: str = "log",
    **kwargs: Any,
  ):
    # Set before SB3's __init__, which calls _setup_model.
    self.alpha_optimizer = alpha_optimizer
    self.min_alpha = min_alpha
    self.max_alpha = max_alpha
    self.entropy_target = entropy_target
    self.alpha_loss_form = alpha_loss_form
    super().__init__(*args, **kwargs)

  def _setup_model(self) -> None:
    """SBX's set-up, then an `SbxEntropyState` as `ent_coef_state`."""
    super()._setup_model()
    self.ent_coef_state = self.init_entropy_state()

  def init_entropy_state(self) -> SbxEntropyState:
    """The `EntropyState` this agent starts from (after SBX's `_setup_model`)."""
    if not str(self.ent_coef_init).startswith("auto"):
      raise ValueError(
        "EntropySAC: `ent_coef` must be 'auto' or 'auto_<initial alpha>' (a learned"
        f" temperature); got {self.ent_coef_init!r}."
      )
    tx = self.alpha_optimizer
    if tx is None:  # SBX's: Adam at the initial learning rate
      tx = optax.adam(learning_rate=self.lr_schedule(1))
    target = self.target_entropy if self.entropy_target is None else self.entropy_target
    return as_sbx_state(
      ej.init_entropy_state(
        target,
        initial_alpha=self.ent_coef.ent_coef_init,
        optimizer=tx,
        min_alpha=self.min_alpha,
        max_alpha=self.max_alpha,
        loss_form=self.alpha_loss_form,
      )
    )

  @staticmethod
  @jax.jit
  def update_temperature(target_entropy: Any, ent_coef_state: Any, entropy: jax.Array):
    """SBX's temperature step, done by entropy_jax.

    Args:
      target_entropy: SBX's target; unused, the state carries its own.
      ent_coef_state: an `SbxEntropyState`.
      entropy: scalar, `-mean(log pi)` from SBX's actor step.

    Returns:
      `(new_state, loss)`, as SBX's; `loss` is the loss before the step.
    """
    del target_entropy
    loss, grad = jax.value_and_grad(temperature_loss)(ent_coef_state.log_alpha, ent_coef_state, entropy)
    return ej.apply_gradients(ent_coef_state, grad), loss


def temperature_loss(log_alpha: jax.Array, state: ej.EntropyState, entropy: jax.Array) -> jax.Array:
  """entropy_jax's continuous loss at `log_alpha`, from SBX's batch entropy.

  SBX hands its temperature step the batch estimate `entropy = -mean(log pi)`
  only, so the loss sees it as a batch of one log-prob, `-entropy`. In the
  log-form, `continuous_loss` is then `-log_alpha * (target - entropy)`, whose
  gradient is SBX's, `entropy - target`.

  Args:
    log_alpha: scalar, the point of evaluation.
    state: the temperature state; its `target` and `loss_form` are used.
    entropy: scalar, SBX's `-mean_b log pi(a_b | s_b)`.

  Returns:
    A scalar loss.
  """
  log_probs = jnp.reshape(-entropy, (1,))
  return ej.continuous_loss(log_alpha, log_probs, state.target, form=state.loss_form)


# `d loss / d log_alpha`, the gradient `update_temperature` applies.
temperature_gradient = jax.grad(temperature_loss)
