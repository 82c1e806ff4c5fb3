"""SBX's SAC, TQC and CrossQ with their temperature driven by entropy_jax (sbx-rl 0.28.0).

SBX (Stable-Baselines3 in JAX) keeps `log_ent_coef` in a flax `TrainState`,
`model.ent_coef_state`, whose `apply_fn` returns `exp(log_ent_coef)`. All
three agents step it in the same jitted static method,
`update_temperature(target_entropy, ent_coef_state, entropy)`, which takes
the actor step's batch estimate `entropy = -mean(log pi)` and minimizes the
log-form loss `log(alpha) * (entropy - target)` with `optax.adam(lr)`, `lr`
the initial learning rate. Their critic and actor steps read the temperature
as `ent_coef_state.apply_fn({"params": ent_coef_state.params})`, and call
`cls.update_temperature`, so a subclass's method is the one that runs.

`EntropyTemperature` is that one mechanism, mixed into each agent (`SAC`,
`TQC`, `CrossQ` here):

- after SB3's set-up (`_setup_model`), `ent_coef_state` is an
  `SbxEntropyState`, an `EntropyState` that also answers SBX's
  `apply_fn` / `params` read;
- `update_temperature` differentiates `entropy_jax.continuous_loss`
  (`temperature_loss`) and steps with `entropy_jax.apply_gradients`.

With the default arguments it reproduces SBX's temperature (loss form,
optimizer, initial alpha, target); `alpha_optimizer`, `min_alpha`,
`max_alpha`, `entropy_target` and `alpha_loss_form` reach what SBX has no
setting for.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import entropy_jax as ej
from entropy_jax.integrations._client import require
from entropy_jax.state import LossForm

#: The sbx-rl version this module is tested with; another one warns once on import.
TESTED_VERSION = "0.28.0"
require("sbx", "sbx-rl", TESTED_VERSION, "entropy_jax.integrations.sbx")
import sbx  # noqa: E402  (after the check, which names the extra when it is missing)

__all__ = [
  "TESTED_VERSION",
  "SAC",
  "TQC",
  "CrossQ",
  "EntropyTemperature",
  "SbxEntropyState",
  "as_sbx_state",
  "temperature_loss",
]

Target = float | Callable[[jax.Array], jax.Array]


def _alpha(variables: dict[str, Any]) -> jax.Array:
  """SBX's `EntropyCoef.apply`: `exp(log_ent_coef)`."""
  return jnp.exp(variables["params"]["log_ent_coef"])


class SbxEntropyState(ej.EntropyState):
  """An `EntropyState` that SBX's losses read as they read their `TrainState`.

  SBX computes the temperature as
  `ent_coef_state.apply_fn({"params": ent_coef_state.params})`. Every
  entropy_jax function takes and returns this class unchanged.
  """

  @property
  def params(self) -> dict[str, jax.Array]:
    """`log_alpha` in the layout of SBX's `TrainState`, read as `params["log_ent_coef"]`."""
    return {"log_ent_coef": self.log_alpha}

  @property
  def apply_fn(self) -> Callable[[dict[str, Any]], jax.Array]:
    """SBX's `EntropyCoef.apply`, the function that maps `variables` to `exp(variables["params"]["log_ent_coef"])`."""
    return _alpha


def as_sbx_state(state: ej.EntropyState) -> SbxEntropyState:
  """The same fields as an `SbxEntropyState`."""
  return SbxEntropyState(**{f.name: getattr(state, f.name) for f in dataclasses.fields(state)})


def temperature_loss(log_alpha: jax.Array, state: ej.EntropyState, entropy: jax.Array) -> jax.Array:
  """entropy_jax's continuous loss at `log_alpha`, from SBX's batch entropy.

  SBX hands its temperature step only the batch estimate
  `entropy = -mean(log pi)`, so the loss sees it as a batch of one log-prob,
  `-entropy`. In the log-form, `continuous_loss` is then
  `-log_alpha * (target - entropy)`, whose gradient is SBX's, `entropy - target`.

  Args:
    log_alpha: scalar, the point of evaluation.
    state: the temperature state; its `target` and `loss_form` are used.
    entropy: scalar, SBX's `-mean_b log pi(a_b | s_b)`.

  Returns:
    A scalar loss.
  """
  log_probs = jnp.reshape(-entropy, (1,))
  return ej.continuous_loss(log_alpha, log_probs, state.target, form=state.loss_form)


class EntropyTemperature:
  """Mixed in before an SBX off-policy agent: its temperature becomes an `EntropyState`.

  Takes the agent's own arguments (`ent_coef` must be `"auto"` or
  `"auto_<initial alpha>"`: a learned temperature), plus these, all keyword
  and optional (the defaults are SBX's):

  Args:
    alpha_optimizer: the optax transformation of `log_alpha`; `None` uses
      SBX's, `optax.adam(initial learning rate)`.
    min_alpha: optional lower bound on alpha (SBX has none).
    max_alpha: optional upper bound on alpha.
    entropy_target: the target entropy, a number or a schedule of the update
      count; `None` uses the agent's `target_entropy` (`-action_dim` for
      `"auto"`).
    alpha_loss_form: `"log"` (SBX's) or `"alpha"`.
  """

  # Declared for type checkers; SB3's set-up assigns the agent's own.
  ent_coef_init: Any
  ent_coef: Any
  ent_coef_state: Any
  target_entropy: Any
  lr_schedule: Callable[[float], float]

  def __init__(
    self,
    *args: Any,
    alpha_optimizer: optax.GradientTransformation | None = None,
    min_alpha: float | None = None,
    max_alpha: float | None = None,
    entropy_target: Target | None = None,
    alpha_loss_form: LossForm = "log",
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
    """The agent's own set-up, then an `SbxEntropyState` as `ent_coef_state`."""
    super()._setup_model()  # type: ignore[misc]
    self.ent_coef_state = self.init_entropy_state()

  def init_entropy_state(self) -> SbxEntropyState:
    """The `EntropyState` the agent starts from (after its `_setup_model`)."""
    name = type(self).__name__
    if not str(self.ent_coef_init).startswith("auto"):
      raise ValueError(
        f"{name}: `ent_coef` must be 'auto' or 'auto_<initial alpha>' (a learned temperature);"
        f" got {self.ent_coef_init!r}. For a fixed alpha use ent_coef='auto_<alpha>' with"
        " alpha_optimizer=optax.set_to_zero()."
      )
    tx = self.alpha_optimizer
    if tx is None:  # SBX's: Adam at the initial learning rate
      tx = optax.adam(learning_rate=self.lr_schedule(1))
    target = self.target_entropy if self.entropy_target is None else self.entropy_target
    state = ej.init_entropy_state(
      target,
      initial_alpha=self.ent_coef.ent_coef_init,
      optimizer=tx,
      min_alpha=self.min_alpha,
      max_alpha=self.max_alpha,
      loss_form=self.alpha_loss_form,
    )
    return as_sbx_state(state)

  @staticmethod
  @jax.jit
  def update_temperature(
    target_entropy: Any, ent_coef_state: ej.EntropyState, entropy: jax.Array
  ) -> tuple[ej.EntropyState, jax.Array]:
    """SBX's temperature step, taken by entropy_jax.

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


class SAC(EntropyTemperature, sbx.SAC):
  """`sbx.SAC` with an entropy_jax temperature (see `EntropyTemperature`)."""


class TQC(EntropyTemperature, sbx.TQC):
  """`sbx.TQC` with an entropy_jax temperature (see `EntropyTemperature`)."""


class CrossQ(EntropyTemperature, sbx.CrossQ):
  """`sbx.CrossQ` with an entropy_jax temperature (see `EntropyTemperature`)."""
