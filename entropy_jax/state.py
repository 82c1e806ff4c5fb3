"""`EntropyState`: the immutable record of one temperature learner.

Modelled on `flax.training.train_state.TrainState`: arrays are pytree leaves,
the optax transformation is a static field, and updates return a new
instance. A population is a stack of states (`jax.tree.map(jnp.stack, ...)`
or `init_population`) and every function in the library `vmap`s over it.

Alpha's range. The state holds float32, and `alpha = exp(log_alpha)` must be
a normal float32: above `log(FLT_MAX) = 88.72` it is infinite, below
`log(FLT_MIN) = -87.34` it is subnormal or zero, where the alpha-form gradient
(`alpha * statistic`) vanishes for good. `log_alpha` therefore always lies in
`[LOG_ALPHA_MIN, LOG_ALPHA_MAX] = [-87, 88]` (rounded inwards): a state
without bounds of its own gets these as its bounds, every alpha a user gives
(initial, minimum, maximum) must lie in `[exp(-87), exp(88)]`, and
`apply_gradients` clamps to this range like to any bound.
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

LOG_ALPHA_MIN = -87.0
LOG_ALPHA_MAX = 88.0
ALPHA_MIN = math.exp(LOG_ALPHA_MIN)  # 1.65e-38, a normal float32.
ALPHA_MAX = math.exp(LOG_ALPHA_MAX)  # 1.65e+38.

# One shared instance, so that states built separately with the default have
# the same static fields (and tree structure): they stack, and jit compiles once.
DEFAULT_OPTIMIZER = adam()


class EntropyState(struct.PyTreeNode):
  """State of the automatic temperature (alpha) tuning of SAC.

  Attributes:
    log_alpha: `[]` float32, the trained log temperature, in
      `[log_alpha_min, log_alpha_max]`.
    opt_state: the optax optimizer state for `log_alpha`.
    target: `[]` float32, the target entropy used by the next update. When a
      `target_schedule` is set, it is `target_schedule(step)`.
    step: `[]` int32, the number of updates applied (skipped ones excluded).
    skipped: `[]` int32, the number of updates skipped because the gradient,
      the scheduled target or a statistic of the optimizer was not finite.
    log_alpha_min: `[]` float32, lower bound on `log_alpha`: `log(min_alpha)`,
      or `LOG_ALPHA_MIN` (-87) when none is given.
    log_alpha_max: `[]` float32, upper bound on `log_alpha`: `log(max_alpha)`,
      or `LOG_ALPHA_MAX` (88) when none is given.
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

  Every number is checked in float32, the dtype the state holds, before any
  array is built: a value float32 cannot hold, or an alpha outside
  `[ALPHA_MIN, ALPHA_MAX]`, raises `ValueError` naming the usable range.

  Args:
    target: the target entropy: a number or scalar array (see
      `entropy_jax.targets` for the defaults), or a schedule, a function of
      the update count returning the target (any optax schedule works as-is).
    initial_alpha: the starting temperature, in `[ALPHA_MIN, ALPHA_MAX]`.
    optimizer: the optax transformation that updates `log_alpha`; default
      `entropy_jax.adam(3e-4)` (see `entropy_jax.optimizers`). Use
      `optax.inject_hyperparams` to give population members their own
      learning rates, and `optax.set_to_zero()` for a fixed alpha.
    min_alpha: optional lower bound on alpha, enforced after every update.
    max_alpha: optional upper bound on alpha, enforced after every update.
    loss_form: `"log"` (default) or `"alpha"`, used by the fused updates.

  Returns:
    A fresh `EntropyState` with `step == skipped == 0`.
  """
  optimizer = _optimizer(optimizer)
  _loss_form(loss_form)
  if np.ndim(initial_alpha) != 0:
    raise ValueError(
      f"{_checks.caller()}: `initial_alpha` must be a scalar; got shape"
      f" {np.shape(initial_alpha)}. Use init_population for [N] values."
    )
  log_alpha = _log_alpha_from("initial_alpha", initial_alpha)
  lo, hi = _log_bounds(min_alpha, max_alpha, initial_alpha)
  return _new_state(target, log_alpha, optimizer, lo, hi, loss_form)


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

  `target`, `initial_alpha` and each hyperparameter may be a number (shared)
  or an `[N]` array (one per member); every element is checked as
  `init_entropy_state` checks a scalar. Hyperparameters are written into the
  optimizer state with `optax.tree_utils.tree_set`, so the optimizer must
  carry them, as `optax.inject_hyperparams(entropy_jax.adam)(learning_rate=3e-4)`
  does for `learning_rate=lrs`.

  Args:
    target: scalar or `[N]` target entropies.
    initial_alpha: scalar or `[N]` starting temperatures.
    optimizer: the optax transformation shared by all members; default as
      for `init_entropy_state`.
    min_alpha: as for `init_entropy_state`, shared by all members.
    max_alpha: as for `init_entropy_state`, shared by all members.
    loss_form: as for `init_entropy_state`.
    size: the population size, required when every argument is a scalar.
    **hyperparams: scalar or `[N]` values of injected hyperparameters.

  Returns:
    An `EntropyState` whose leaves have a leading axis of size `N`.
  """
  optimizer = _optimizer(optimizer)
  _loss_form(loss_form)
  arrays = {"target": target, "initial_alpha": initial_alpha, **hyperparams}
  # np.shape/np.ndim take lists, numpy and jax arrays and tracers alike.
  sizes = {k: np.shape(v)[0] for k, v in arrays.items() if np.ndim(v) == 1}
  bad = {k: np.shape(v) for k, v in arrays.items() if np.ndim(v) > 1}
  if bad:
    raise ValueError(f"{_checks.caller()}: arguments must be scalars or [N] arrays; got shapes {bad}.")
  n = size if size is not None else (next(iter(sizes.values())) if sizes else None)
  if n is None:
    raise ValueError(f"{_checks.caller()}: pass `size` when every argument is a scalar.")
  if any(s != n for s in sizes.values()):
    raise ValueError(f"{_checks.caller()}: all [N] arguments must share N={n}; got sizes {sizes}.")
  log_alpha = jnp.broadcast_to(_log_alpha_from("initial_alpha", initial_alpha), (n,))
  targets = jnp.broadcast_to(_checks.float32_value("target", target), (n,))
  lo, hi = _log_bounds(min_alpha, max_alpha, initial_alpha)
  opt_state = jax.vmap(optimizer.init)(log_alpha)
  if hyperparams:
    values = {k: jnp.broadcast_to(_checks.float32_value(k, v), (n,)) for k, v in hyperparams.items()}
    try:
      opt_state = optax.tree_utils.tree_set(opt_state, **values)
    except (KeyError, ValueError) as e:
      raise ValueError(
        f"{_checks.caller()}: could not set hyperparameters {sorted(values)} in the optimizer"
        " state; wrap the optimizer with optax.inject_hyperparams."
      ) from e
  _checks.learning_rates(opt_state)
  zeros = jnp.zeros((n,), jnp.int32)
  return EntropyState(
    log_alpha=log_alpha,
    opt_state=opt_state,
    target=targets,
    step=zeros,
    skipped=zeros,
    log_alpha_min=jnp.broadcast_to(lo, (n,)),
    log_alpha_max=jnp.broadcast_to(hi, (n,)),
    tx=optimizer,
    loss_form=loss_form,
  )


# One shared instance, so that fixed-alpha states built separately have the
# same static fields (and tree structure): they stack, and jit compiles once.
FIXED_ALPHA_OPTIMIZER = optax.set_to_zero()


@_checks.public
def fixed_alpha_state(
  alpha: chex.Numeric,
  target: chex.Numeric = 0.0,
  *,
  loss_form: LossForm = "log",
) -> EntropyState:
  """An `EntropyState` whose alpha never changes: SAC with a fixed temperature.

  The same API as a tuned state (`continuous_update`, `discrete_update`,
  `apply_gradients` and their metrics all work), with `optax.set_to_zero()`
  as the optimizer, so every update leaves `log_alpha` bit-identical while
  `step` (and `skipped`, for non-finite gradients) still count. This is
  Haarnoja et al. 2018's original fixed-temperature SAC (arXiv:1801.01290)
  and Stable-Baselines3's `SAC(ent_coef=0.2)`.

  Args:
    alpha: the temperature, in `[ALPHA_MIN, ALPHA_MAX]` (an `[N]` array
      under `jax.vmap(fixed_alpha_state)` for a population).
    target: the target entropy, used only to report `metrics["loss"]`.
    loss_form: as for `init_entropy_state`, used only for the reported loss.

  Returns:
    An `EntropyState` with `log_alpha = log(alpha)` that no update changes.
  """
  _loss_form(loss_form)
  if np.ndim(alpha) != 0:
    raise ValueError(
      f"{_checks.caller()}: `alpha` must be a scalar; got shape {np.shape(alpha)}."
      " For a population, use jax.vmap(fixed_alpha_state)."
    )
  log_alpha = _log_alpha_from("alpha", alpha)
  lo, hi = jnp.float32(LOG_ALPHA_MIN), jnp.float32(LOG_ALPHA_MAX)
  return _new_state(target, log_alpha, FIXED_ALPHA_OPTIMIZER, lo, hi, loss_form)


# ----------------------------------------------------------------------------
# Argument handling.


def _new_state(target, log_alpha, optimizer, lo, hi, loss_form) -> EntropyState:
  """The state with a checked `log_alpha`, bounds and optimizer, after checking the target."""
  schedule = None
  if callable(target):
    schedule = target if isinstance(target, jax.tree_util.Partial) else jax.tree_util.Partial(target)
    with _checks.within("the schedule's value at step 0"):
      target_value = _checks.float32_value("target", schedule(jnp.zeros((), jnp.int32)))
  else:
    target_value = _checks.float32_value("target", target)
  if target_value.ndim != 0:
    raise ValueError(f"{_checks.caller()}: `target` must be a scalar; got shape {target_value.shape}.")
  opt_state = optimizer.init(log_alpha)
  _checks.learning_rates(opt_state)
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


def _optimizer(optimizer: Any) -> optax.GradientTransformation:
  if optimizer is None:
    return DEFAULT_OPTIMIZER
  if not isinstance(optimizer, optax.GradientTransformation):
    raise TypeError(
      f"{_checks.caller()}: `optimizer` must be an optax GradientTransformation; got {type(optimizer).__name__}."
    )
  return optimizer


def _loss_form(loss_form: Any) -> None:
  if loss_form not in LOSS_FORMS:
    raise ValueError(f"{_checks.caller()}: `loss_form` must be one of {LOSS_FORMS}; got {loss_form!r}.")


def _log_alpha_from(name: str, alpha: Any) -> jax.Array:
  """`log(alpha)` in float32, after checking alpha lies in `[ALPHA_MIN, ALPHA_MAX]`.

  The check is on the float32 value, in log space: alpha must be a normal
  float32 whose log lies in `[LOG_ALPHA_MIN, LOG_ALPHA_MAX]`.
  """
  arr = _checks.concrete(name, alpha)
  if arr is not None:
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
      f32 = arr.astype(np.float32)
      log = np.log(f32.astype(np.float64))
    ok = (f32 > 0) & np.isfinite(log) & (log >= LOG_ALPHA_MIN) & (log <= LOG_ALPHA_MAX)
    if not np.all(ok):
      raise ValueError(
        f"{_checks.caller()}: `{name}` must be positive and lie in the usable range"
        f" [{ALPHA_MIN:.4g}, {ALPHA_MAX:.4g}] (log alpha in [{LOG_ALPHA_MIN:g},"
        f" {LOG_ALPHA_MAX:g}], where alpha = exp(log_alpha) is a normal float32);"
        f" got {_checks.first_bad(arr, ~ok)}."
      )
  return jnp.log(jnp.asarray(alpha, jnp.float32))


def _log_bounds(min_alpha, max_alpha, initial_alpha):
  """`(log_alpha_min, log_alpha_max)` as float32 scalars, checked.

  A missing bound is the edge of the usable range. The initial alpha (scalar
  or `[N]`) must lie within the bounds. Comparisons are made with NumPy on
  concrete values, so that they also run while a constructor is traced.
  """
  for name, value in (("min_alpha", min_alpha), ("max_alpha", max_alpha)):
    if value is not None and np.ndim(value) != 0:
      raise ValueError(f"{_checks.caller()}: `{name}` must be a scalar; got shape {np.shape(value)}.")
  lo = jnp.float32(LOG_ALPHA_MIN) if min_alpha is None else _log_alpha_from("min_alpha", min_alpha)
  hi = jnp.float32(LOG_ALPHA_MAX) if max_alpha is None else _log_alpha_from("max_alpha", max_alpha)
  as_f32 = {k: _checks.concrete(k, v) for k, v in (("min_alpha", min_alpha), ("max_alpha", max_alpha)) if v is not None}
  low, high = as_f32.get("min_alpha"), as_f32.get("max_alpha")
  if low is not None and high is not None and not np.float32(low) < np.float32(high):
    raise ValueError(f"{_checks.caller()}: need min_alpha < max_alpha; got {min_alpha} and {max_alpha}.")
  alpha = _checks.concrete("initial_alpha", initial_alpha)
  if alpha is not None:
    a = alpha.astype(np.float32)
    outside = (low is not None and np.any(a < np.float32(low))) or (high is not None and np.any(a > np.float32(high)))
    if outside:
      raise ValueError(
        f"{_checks.caller()}: initial_alpha={initial_alpha} lies outside the bounds [{min_alpha}, {max_alpha}]."
      )
  return lo, hi
