"""`EntropyState`: the immutable record of one temperature learner.

Modelled on `flax.training.train_state.TrainState`: arrays are pytree leaves, the optax transformation is a static
field, and updates return a new instance. A population is a stack of states (`jax.tree.map(jnp.stack, ...)` or
`init_population`), and every function in the library `vmap`s over it.

`log_alpha` always lies in `[LOG_ALPHA_MIN, LOG_ALPHA_MAX] = [-87, 88]`, where `alpha = exp(log_alpha)` is a normal
float32: every alpha a user gives must lie in `[ALPHA_MIN, ALPHA_MAX]`, a state without bounds of its own gets these,
and `apply_gradients` clamps to them like to any bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from entropy_jax import _checks
from entropy_jax.losses import LOSS_FORMS, LossForm
from entropy_jax.optimizers import adam

Schedule = Callable[[jax.Array], jax.Array]

LOG_ALPHA_MIN = _checks.LOG_ALPHA_MIN  # -87: alpha is subnormal below log(FLT_MIN) = -87.34.
LOG_ALPHA_MAX = _checks.LOG_ALPHA_MAX  # 88: alpha is infinite above log(FLT_MAX) = 88.72.
ALPHA_MIN = math.exp(LOG_ALPHA_MIN)  # 1.65e-38, a normal float32.
ALPHA_MAX = math.exp(LOG_ALPHA_MAX)  # 1.65e+38.

# One shared instance each, so that states built separately have the same static fields: they stack, jit compiles once.
DEFAULT_OPTIMIZER = adam()
FIXED_ALPHA_OPTIMIZER = optax.set_to_zero()


class EntropyState(struct.PyTreeNode):
  """State of the automatic temperature (alpha) tuning of SAC.

  Attributes:
    log_alpha: `[]` float32, the trained log temperature, in `[log_alpha_min, log_alpha_max]`.
    opt_state: the optax optimizer state for `log_alpha`.
    target: `[]` float32, the target entropy of the next update; `target_schedule(step)` when a schedule is set.
    step: `[]` int32, the number of updates applied (skipped ones excluded).
    skipped: `[]` int32, the number of updates skipped because the gradient, the scheduled target or a statistic
      of the optimizer was not finite.
    log_alpha_min: `[]` float32, `log(min_alpha)`, or `LOG_ALPHA_MIN` (-87) when none is given.
    log_alpha_max: `[]` float32, `log(max_alpha)`, or `LOG_ALPHA_MAX` (88) when none is given.
    target_schedule: `None`, or a `jax.tree_util.Partial` mapping the update count to the target. Its bound
      arguments are leaves, so schedule parameters can differ per population member.
    tx: the optax `GradientTransformation` (static).
    loss_form: `"log"` or `"alpha"` (static): which parameterization the fused updates differentiate.
  """

  log_alpha: jax.Array
  opt_state: optax.OptState
  target: jax.Array
  step: jax.Array
  skipped: jax.Array
  log_alpha_min: jax.Array
  log_alpha_max: jax.Array
  target_schedule: jax.tree_util.Partial | None = None
  tx: optax.GradientTransformation = struct.field(pytree_node=False, default=DEFAULT_OPTIMIZER)
  loss_form: LossForm = struct.field(pytree_node=False, default="log")

  @property
  def alpha(self) -> jax.Array:
    """The temperature, `exp(log_alpha)`."""
    return jnp.exp(self.log_alpha)


@_checks.public
def init_entropy_state(
  target: chex.Numeric | Schedule,
  *,
  initial_alpha: chex.Numeric = 1.0,
  optimizer: optax.GradientTransformation | None = None,
  min_alpha: float | None = None,
  max_alpha: float | None = None,
  loss_form: LossForm = "log",
) -> EntropyState:
  """Creates an `EntropyState` with `log_alpha = log(initial_alpha)`.

  Every number is checked in float32, the dtype the state holds, before any array is built.

  Args:
    target: the target entropy: a number or scalar array (see `entropy_jax.targets` for the defaults), or a
      schedule, a function of the update count returning the target (any optax schedule works as-is).
    initial_alpha: the starting temperature, in `[ALPHA_MIN, ALPHA_MAX]`.
    optimizer: the optax transformation that updates `log_alpha`; default `entropy_jax.adam(3e-4)`. Use
      `optax.inject_hyperparams` to give population members their own learning rates, and
      `optax.set_to_zero()` for a fixed alpha.
    min_alpha: optional lower bound on alpha, enforced after every update.
    max_alpha: optional upper bound on alpha, enforced after every update.
    loss_form: `"log"` (default) or `"alpha"`, used by the fused updates.

  Returns:
    A fresh `EntropyState` with `step == skipped == 0`.
  """
  _scalars(" Use init_population for [N] values.", initial_alpha=initial_alpha)
  log_alpha = _checks.log_alpha("initial_alpha", initial_alpha)
  lo, hi = _bounds(min_alpha, max_alpha, initial_alpha)
  return _new_state(target, log_alpha, _optimizer(optimizer), lo, hi, loss_form)


@_checks.public
def init_population(
  target: Any,
  *,
  initial_alpha: Any = 1.0,
  optimizer: optax.GradientTransformation | None = None,
  min_alpha: float | None = None,
  max_alpha: float | None = None,
  loss_form: LossForm = "log",
  size: int | None = None,
  **hyperparams: Any,
) -> EntropyState:
  """Creates a stacked population of `EntropyState`s, one per member.

  `target`, `initial_alpha` and each hyperparameter may be a number (shared) or an `[N]` array (one per member),
  each element checked as `init_entropy_state` checks a scalar. Hyperparameters are written into the optimizer
  state with `optax.tree_utils.tree_set`, so the optimizer must carry them, as
  `optax.inject_hyperparams(entropy_jax.adam)(learning_rate=3e-4)` does for `learning_rate=lrs`.

  Args:
    target: scalar or `[N]` target entropies.
    initial_alpha: scalar or `[N]` starting temperatures.
    optimizer: the optax transformation shared by all members; default as for `init_entropy_state`.
    min_alpha: as for `init_entropy_state`, shared by all members.
    max_alpha: as for `init_entropy_state`, shared by all members.
    loss_form: as for `init_entropy_state`.
    size: the population size, required when every argument is a scalar.
    **hyperparams: scalar or `[N]` values of injected hyperparameters.

  Returns:
    An `EntropyState` whose leaves have a leading axis of size `N`.
  """
  arrays = {"target": target, "initial_alpha": initial_alpha, **hyperparams}
  # np.shape/np.ndim take lists, numpy and jax arrays and tracers alike.
  sizes = {k: np.shape(v)[0] for k, v in arrays.items() if np.ndim(v) == 1}
  bad = {k: np.shape(v) for k, v in arrays.items() if np.ndim(v) > 1}
  if bad:
    raise _checks.error(f"arguments must be scalars or [N] arrays; got shapes {bad}.")
  n = size if size is not None else next(iter(sizes.values()), None)
  if n is None or any(s != n for s in sizes.values()):
    raise _checks.error(f"[N] arguments must share one N, or give `size` if all are scalars; got {size=}, {sizes=}.")
  log_alpha = jnp.broadcast_to(_checks.log_alpha("initial_alpha", initial_alpha), (n,))
  lo, hi = _bounds(min_alpha, max_alpha, initial_alpha)
  targets = jnp.broadcast_to(_checks.float32_value("target", target), (n,))
  optimizer = _optimizer(optimizer)
  state = jax.vmap(lambda t, a: _new_state(t, a, optimizer, lo, hi, loss_form))(targets, log_alpha)
  opt_state = state.opt_state
  if hyperparams:
    values = {k: jnp.broadcast_to(_checks.float32_value(k, v), (n,)) for k, v in hyperparams.items()}
    try:
      opt_state = optax.tree_utils.tree_set(opt_state, **values)
    except (KeyError, ValueError) as e:
      raise _checks.error(
        f"`optimizer` must hold the hyperparameters given (optax.inject_hyperparams does); got {sorted(values)}."
      ) from e
  _checks.learning_rates(opt_state)
  return state.replace(opt_state=opt_state)


@_checks.public
def fixed_alpha_state(alpha: chex.Numeric, target: chex.Numeric = 0.0, *, loss_form: LossForm = "log") -> EntropyState:
  """An `EntropyState` whose alpha never changes: SAC with a fixed temperature.

  The same API as a tuned state, with `optax.set_to_zero()` as the optimizer: every update leaves `log_alpha`
  bit-identical while `step` (and `skipped`, for non-finite gradients) still count. This is Haarnoja et al. 2018's
  original fixed-temperature SAC (arXiv:1801.01290) and Stable-Baselines3's `SAC(ent_coef=0.2)`.

  Args:
    alpha: the temperature, in `[ALPHA_MIN, ALPHA_MAX]` (`jax.vmap(fixed_alpha_state)` makes a population).
    target: the target entropy, used only to report `metrics["loss"]`.
    loss_form: as for `init_entropy_state`, used only for the reported loss.

  Returns:
    An `EntropyState` with `log_alpha = log(alpha)` that no update changes.
  """
  _scalars(" For a population, use jax.vmap(fixed_alpha_state).", alpha=alpha)
  lo, hi = jnp.float32(LOG_ALPHA_MIN), jnp.float32(LOG_ALPHA_MAX)
  return _new_state(target, _checks.log_alpha("alpha", alpha), FIXED_ALPHA_OPTIMIZER, lo, hi, loss_form)


def _new_state(target, log_alpha, optimizer, lo, hi, loss_form) -> EntropyState:
  """The state of a checked `log_alpha`, bounds and optimizer, after checking the target and the loss form."""
  if loss_form not in LOSS_FORMS:
    raise _checks.error(f"`loss_form` must be one of {LOSS_FORMS}; got {loss_form!r}.")
  schedule = None
  if callable(target):
    schedule = target if isinstance(target, jax.tree_util.Partial) else jax.tree_util.Partial(target)
    with _checks.within("the schedule's value at step 0"):
      target = _checks.float32_value("target", schedule(jnp.zeros((), jnp.int32)))
  _scalars("", target=target)
  target = _checks.float32_value("target", target)
  opt_state = optimizer.init(log_alpha)
  _checks.learning_rates(opt_state)
  zero = jnp.zeros((), jnp.int32)
  return EntropyState(log_alpha, opt_state, target, zero, zero, lo, hi, schedule, optimizer, loss_form)


def _optimizer(optimizer: Any) -> optax.GradientTransformation:
  if optimizer is not None and not isinstance(optimizer, optax.GradientTransformation):
    raise _checks.error(
      f"`optimizer` must be an optax GradientTransformation; got {type(optimizer).__name__}.", TypeError
    )
  return optimizer or DEFAULT_OPTIMIZER


def _scalars(hint: str, **values: Any) -> None:
  for name, value in values.items():
    if np.ndim(value) != 0:
      raise _checks.error(f"`{name}` must be a scalar; got shape {np.shape(value)}.{hint}")


def _bounds(min_alpha: Any, max_alpha: Any, initial_alpha: Any) -> tuple[jax.Array, jax.Array]:
  """`(log_alpha_min, log_alpha_max)`, a missing bound being the edge of the usable range; `initial_alpha` within."""
  _scalars("", min_alpha=min_alpha, max_alpha=max_alpha)
  lo = jnp.float32(LOG_ALPHA_MIN) if min_alpha is None else _checks.log_alpha("min_alpha", min_alpha)
  hi = jnp.float32(LOG_ALPHA_MAX) if max_alpha is None else _checks.log_alpha("max_alpha", max_alpha)
  # Compared as the float32 values the state holds, with NumPy, so that the checks also run while traced.
  values = (ALPHA_MIN if min_alpha is None else min_alpha, ALPHA_MAX if max_alpha is None else max_alpha, initial_alpha)
  low, high, alpha = (None if isinstance(v, jax.core.Tracer) else np.asarray(v, np.float32) for v in values)
  if low is not None and high is not None:  # Under jax.vmap over initial_alpha, the bounds are still checked.
    if not low < high:
      raise _checks.error(f"need min_alpha < max_alpha; got {min_alpha} and {max_alpha}.")
    if alpha is not None and np.any((alpha < low) | (alpha > high)):
      raise _checks.error(
        f"`initial_alpha` must lie in [min_alpha, max_alpha] = [{low:.4g}, {high:.4g}]; got {initial_alpha}."
      )
  return lo, hi
