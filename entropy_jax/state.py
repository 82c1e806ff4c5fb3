"""`EntropyState`: the immutable record of one temperature learner.

Modelled on `flax.training.train_state.TrainState`: arrays are pytree leaves,
the optax transformation is a static field, and updates return a new
instance. A population is a stack of states (`jax.tree.map(jnp.stack, ...)`
or `init_population`) and every function in the library `vmap`s over it.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from entropy_jax import _checks
from entropy_jax.losses import LOSS_FORMS

Schedule = Callable[[jax.Array], jax.Array]
DEFAULT_OPTIMIZER = optax.adam(3e-4)


class EntropyState(struct.PyTreeNode):
  """State of the automatic temperature (alpha) tuning of SAC.

  Attributes:
    log_alpha: `[]` float32, the trained log temperature.
    opt_state: the optax optimizer state for `log_alpha`.
    target: `[]` float32, the target entropy used by the next update. When a
      `target_schedule` is set, it is `target_schedule(step)`.
    step: `[]` int32, the number of updates applied (skipped ones excluded).
    skipped: `[]` int32, the number of updates skipped because the gradient or
      the new `log_alpha` was not finite.
    log_alpha_min: `[]` float32, lower bound on `log_alpha` (-inf: none).
    log_alpha_max: `[]` float32, upper bound on `log_alpha` (+inf: none).
    target_schedule: `None`, or a `jax.tree_util.Partial` mapping the update
      count to the target. Its bound arguments are leaves, so schedule
      parameters can differ per population member.
    tx: the optax `GradientTransformation` (static).
    loss_form: `"log"` or `"alpha"` (static): which parameterization the fused
      updates differentiate (see `entropy_jax.losses`).
  """

  log_alpha: jax.Array
  opt_state: optax.OptState
  target: jax.Array
  step: jax.Array
  skipped: jax.Array
  log_alpha_min: jax.Array
  log_alpha_max: jax.Array
  target_schedule: Optional[jax.tree_util.Partial] = None
  tx: optax.GradientTransformation = struct.field(pytree_node=False, default=DEFAULT_OPTIMIZER)
  loss_form: str = struct.field(pytree_node=False, default="log")

  @property
  def alpha(self) -> jax.Array:
    """The temperature, `exp(log_alpha)`."""
    return jnp.exp(self.log_alpha)


def init_entropy_state(
    target: Union[float, jax.Array, Schedule],
    *,
    initial_alpha: float = 1.0,
    optimizer: optax.GradientTransformation = DEFAULT_OPTIMIZER,
    min_alpha: Optional[float] = None,
    max_alpha: Optional[float] = None,
    loss_form: str = "log",
) -> EntropyState:
  """Creates an `EntropyState` with `log_alpha = log(initial_alpha)`.

  Args:
    target: the target entropy: a number or scalar array (see
      `entropy_jax.targets` for the defaults), or a schedule, a function of
      the update count returning the target (any optax schedule works as-is).
    initial_alpha: the starting temperature, positive and finite.
    optimizer: the optax transformation that updates `log_alpha`. Use
      `optax.inject_hyperparams` to give population members their own
      learning rates, and `optax.set_to_zero()` for a fixed alpha.
    min_alpha: optional lower bound on alpha, enforced after every update.
    max_alpha: optional upper bound on alpha, enforced after every update.
    loss_form: `"log"` (default) or `"alpha"`, used by the fused updates.

  Returns:
    A fresh `EntropyState` with `step == skipped == 0`.
  """
  where = "init_entropy_state"
  _checks.positive_finite("initial_alpha", initial_alpha, where)
  if np.ndim(initial_alpha) != 0:
    raise ValueError(
        f"{where}: `initial_alpha` must be a scalar; got shape"
        f" {np.shape(initial_alpha)}. Use init_population for [N] values."
    )
  if not isinstance(optimizer, optax.GradientTransformation):
    raise TypeError(
        f"{where}: `optimizer` must be an optax GradientTransformation; got"
        f" {type(optimizer).__name__}."
    )
  if loss_form not in LOSS_FORMS:
    raise ValueError(f"{where}: `loss_form` must be one of {LOSS_FORMS}; got {loss_form!r}.")
  lo, hi = _log_bounds(min_alpha, max_alpha, initial_alpha, where)

  schedule = None
  if callable(target):
    schedule = target if isinstance(target, jax.tree_util.Partial) else jax.tree_util.Partial(target)
    target_value = schedule(jnp.zeros((), jnp.int32))
  else:
    target_value = target
  _checks.finite("target", target_value, where)
  target_value = jnp.asarray(target_value, jnp.float32)
  if target_value.ndim != 0:
    raise ValueError(f"{where}: `target` must be a scalar; got shape {target_value.shape}.")

  log_alpha = jnp.log(jnp.asarray(initial_alpha, jnp.float32))
  opt_state = optimizer.init(log_alpha)
  _check_learning_rates(opt_state, where)
  return EntropyState(
      log_alpha=log_alpha,
      opt_state=opt_state,
      target=target_value,
      step=jnp.zeros((), jnp.int32),
      skipped=jnp.zeros((), jnp.int32),
      log_alpha_min=lo,
      log_alpha_max=hi,
      target_schedule=schedule,
      tx=optimizer,
      loss_form=loss_form,
  )


def init_population(
    target: Any,
    *,
    initial_alpha: Any = 1.0,
    optimizer: optax.GradientTransformation = DEFAULT_OPTIMIZER,
    min_alpha: Optional[float] = None,
    max_alpha: Optional[float] = None,
    loss_form: str = "log",
    size: Optional[int] = None,
    **hyperparams: Any,
) -> EntropyState:
  """Creates a stacked population of `EntropyState`s, one per member.

  `target`, `initial_alpha` and each hyperparameter may be a number (shared)
  or an `[N]` array (one per member). Hyperparameters are written into the
  optimizer state with `optax.tree_utils.tree_set`, so the optimizer must
  carry them, as `optax.inject_hyperparams(optax.adam)(learning_rate=3e-4)`
  does for `learning_rate=lrs`.

  Args:
    target: scalar or `[N]` target entropies.
    initial_alpha: scalar or `[N]` starting temperatures.
    optimizer: the optax transformation shared by all members.
    min_alpha, max_alpha, loss_form: as for `init_entropy_state`.
    size: the population size, required when every argument is a scalar.
    **hyperparams: scalar or `[N]` values of injected hyperparameters.

  Returns:
    An `EntropyState` whose leaves have a leading axis of size `N`.
  """
  where = "init_population"
  arrays = {"target": target, "initial_alpha": initial_alpha, **hyperparams}
  # np.shape/np.ndim take lists, numpy and jax arrays and tracers alike.
  sizes = {k: np.shape(v)[0] for k, v in arrays.items() if np.ndim(v) == 1}
  bad = {k: np.shape(v) for k, v in arrays.items() if np.ndim(v) > 1}
  if bad:
    raise ValueError(f"{where}: arguments must be scalars or [N] arrays; got shapes {bad}.")
  n = size if size is not None else (next(iter(sizes.values())) if sizes else None)
  if n is None:
    raise ValueError(f"{where}: pass `size` when every argument is a scalar.")
  if any(s != n for s in sizes.values()):
    raise ValueError(f"{where}: all [N] arguments must share N={n}; got sizes {sizes}.")
  _checks.positive_finite("initial_alpha", initial_alpha, where)
  _checks.finite("target", target, where)
  targets = jnp.broadcast_to(jnp.asarray(target, jnp.float32), (n,))
  alphas = jnp.broadcast_to(jnp.asarray(initial_alpha, jnp.float32), (n,))
  lo, hi = _log_bounds(min_alpha, max_alpha, initial_alpha, where)
  one = init_entropy_state(0.0, optimizer=optimizer, loss_form=loss_form)
  one = one.replace(log_alpha_min=lo, log_alpha_max=hi)
  population = jax.tree.map(lambda x: jnp.broadcast_to(x, (n,) + jnp.shape(x)), one)
  log_alpha = jnp.log(alphas)
  population = population.replace(
      log_alpha=log_alpha,
      target=targets,
      opt_state=jax.vmap(optimizer.init)(log_alpha),
  )
  if hyperparams:
    values = {k: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (n,)) for k, v in hyperparams.items()}
    try:
      opt_state = optax.tree_utils.tree_set(population.opt_state, **values)
    except (KeyError, ValueError) as e:
      raise ValueError(
          f"{where}: could not set hyperparameters {sorted(values)} in the optimizer"
          " state; wrap the optimizer with optax.inject_hyperparams."
      ) from e
    _check_learning_rates(opt_state, where)
    population = population.replace(opt_state=opt_state)
  return population


def _check_learning_rates(opt_state, where):
  """Rejects a negative or non-finite `learning_rate` injected in `opt_state`.

  Only hyperparameters held in the state (`optax.inject_hyperparams`) can be
  read; a rate baked into `optax.adam(lr)` is out of reach. Zero is allowed:
  a warm-up schedule starts there (use `optax.set_to_zero()` for a fixed alpha).
  """
  for path, value in optax.tree_utils.tree_get_all_with_path(opt_state, "learning_rate"):
    if isinstance(value, jax.core.Tracer) or not isinstance(value, jax.Array):
      continue
    if not bool(jnp.all(jnp.isfinite(value) & (value >= 0))):
      raise ValueError(
          f"{where}: the optimizer's `learning_rate` must be finite and >= 0;"
          f" got {value} at {jax.tree_util.keystr(path)}."
      )


def _log_bounds(min_alpha, max_alpha, initial_alpha, where):
  lo = -math.inf if min_alpha is None else min_alpha
  hi = math.inf if max_alpha is None else max_alpha
  if min_alpha is not None:
    _checks.positive_finite("min_alpha", min_alpha, where)
  if max_alpha is not None:
    _checks.positive_finite("max_alpha", max_alpha, where)
  if min_alpha is not None and max_alpha is not None and not min_alpha < max_alpha:
    raise ValueError(f"{where}: need min_alpha < max_alpha; got {min_alpha} and {max_alpha}.")
  if not isinstance(initial_alpha, jax.core.Tracer):
    a = np.asarray(initial_alpha)
    if (min_alpha is not None and bool(np.any(a < min_alpha))) or (
        max_alpha is not None and bool(np.any(a > max_alpha))
    ):
      raise ValueError(
          f"{where}: initial_alpha={initial_alpha} lies outside the bounds"
          f" [{min_alpha}, {max_alpha}]."
      )
  log_lo = jnp.asarray(-jnp.inf if min_alpha is None else math.log(lo), jnp.float32)
  log_hi = jnp.asarray(jnp.inf if max_alpha is None else math.log(hi), jnp.float32)
  return log_lo, log_hi


# One shared instance, so that fixed-alpha states built separately have the
# same static fields (and tree structure): they stack, and jit compiles once.
FIXED_ALPHA_OPTIMIZER = optax.set_to_zero()


def fixed_alpha_state(
    alpha: Union[float, jax.Array],
    target: Union[float, jax.Array] = 0.0,
    *,
    loss_form: str = "log",
) -> EntropyState:
  """An `EntropyState` whose alpha never changes: SAC with a fixed temperature.

  The same API as a tuned state (`continuous_update`, `discrete_update`,
  `apply_gradients` and their metrics all work), with `optax.set_to_zero()`
  as the optimizer, so every update leaves `log_alpha` bit-identical while
  `step` (and `skipped`, for non-finite gradients) still count. This is
  Haarnoja et al. 2018's original fixed-temperature SAC (arXiv:1801.01290)
  and Stable-Baselines3's `SAC(ent_coef=0.2)`.

  Args:
    alpha: the temperature, positive and finite (an `[N]` array under
      `jax.vmap(fixed_alpha_state)` for a population).
    target: the target entropy, used only to report `metrics["loss"]`.
    loss_form: as for `init_entropy_state`, used only for the reported loss.

  Returns:
    An `EntropyState` with `log_alpha = log(alpha)` that no update changes.
  """
  return init_entropy_state(
      target, initial_alpha=alpha, optimizer=FIXED_ALPHA_OPTIMIZER, loss_form=loss_form
  )
