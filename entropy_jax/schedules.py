"""Target-entropy schedules: the target as a function of the update count.

Every schedule here (but TES-SAC's feedback rule, see below) is a pure
function of the step, returned as a
`jax.tree_util.Partial` whose numeric parameters (start and end values, step
counts) are array leaves. Passed to `init_entropy_state`, it becomes the
state's `target_schedule`, and `apply_gradients` sets
`target = schedule(step)` after each update, so update number `k` (counting
from 0, skipped updates excluded) uses `schedule(k)`. Because the parameters
are leaves, a population can give each member its own schedule:

    states = jax.vmap(lambda t0: init_entropy_state(linear(t0, 0.2, 10_000)))(
        jnp.array([1.0, 1.5, 2.0]))

Any optax schedule also works as-is (`init_entropy_state(optax.linear_schedule(
...))`), but its parameters are closed over, so it cannot differ per member.
The closed forms below are optax's (`linear_schedule`, `cosine_decay_schedule`,
`exponential_decay`), rewritten so that no Python branch reads a parameter.

`start`/`end` are plain target values, or, with `num_actions=A`, fractions of
the maximum entropy `log(A)` of a categorical policy (so `linear(0.98, 0.3,
n, num_actions=A)` anneals from `0.98 log A` to `0.3 log A`).

The annealed discrete target of Xu et al. 2021 ("Target Entropy Annealing for
Discrete Soft Actor-Critic", arXiv:2112.02852, TES-SAC) comes in two forms:
`tes_sac_init` / `tes_sac_update`, the paper's feedback rule driven by the
observed policy entropy, and `annealed_discrete_target`, its step-indexed
staircase (the fastest the feedback rule can anneal). Source note: the
paper's abstract and setting are from arXiv:2112.02852; the update rule of
its Algorithm 1 and the Table 1 values (decay 0.9, lambda 0.999, thresholds
0.01 and 0.05) are as transcribed by a public third-party implementation,
since the paper's body was not available to us. Where the paper is silent
(the patience `T`, how `mu` starts) our choices are stated in
`tes_sac_update`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from entropy_jax import _checks

# TES-SAC hyperparameters, Xu et al. 2021, Table 1 (see `tes_sac_init`).
TES_DECAY = 0.9
TES_SMOOTHING = 0.999
TES_MEAN_THRESHOLD = 0.01
TES_STD_THRESHOLD = 0.05


# ----------------------------------------------------------------------------
# Parameter handling (trace-time; traced values pass through unchecked).


def _value(name: str, x: Any, where: str) -> jax.Array:
  _checks.finite(name, x, where)
  return jnp.asarray(x, jnp.float32)


def _steps(name: str, x: Any, where: str, minimum: int) -> jax.Array:
  if not isinstance(x, jax.core.Tracer):
    arr = jnp.asarray(x)
    if not jnp.issubdtype(arr.dtype, jnp.integer):
      raise TypeError(f"{where}: `{name}` must be an int or int array; got {x!r} of dtype {arr.dtype}.")
    if not bool(jnp.all(arr >= minimum)):
      raise ValueError(f"{where}: `{name}` must be >= {minimum}; got {x!r}.")
  return jnp.asarray(x, jnp.int32)


def _endpoints(start, end, num_actions, where):
  """`(start, end)` as float32 arrays; ratios of `log(num_actions)` if given."""
  start, end = _value("start", start, where), _value("end", end, where)
  if num_actions is not None:
    log_a = math.log(_checks.positive_int("num_actions", num_actions, where))
    start, end = start * log_a, end * log_a
  return start, end


def _fraction(step, steps, begin):
  """`clip((step - begin) / steps, 0, 1)` in float32: the progress of a ramp."""
  elapsed = jnp.asarray(step, jnp.float32) - begin.astype(jnp.float32)
  return jnp.clip(elapsed / steps.astype(jnp.float32), 0.0, 1.0)


def _ramp(start, end, fraction, weight):
  """`start + (end - start) * weight`, exactly `start` / `end` at the ends."""
  return jnp.where(fraction >= 1.0, end, start + (end - start) * weight)


# ----------------------------------------------------------------------------
# Anneals between two targets.


def _linear(step, start, end, steps, begin):
  f = _fraction(step, steps, begin)
  return _ramp(start, end, f, f)


def linear(start, end, steps, *, begin=0, num_actions: Optional[int] = None) -> Partial:
  """Linear anneal from `start` to `end` over `steps` updates after `begin`.

  `target(k) = start + (end - start) * clip((k - begin) / steps, 0, 1)`, the
  closed form of `optax.linear_schedule(start, end, steps, begin)`.

  Args:
    start: scalar or array, the target before `begin`.
    end: scalar or array, the target from `begin + steps` on.
    steps: int (or int array) >= 1, the length of the ramp in updates.
    begin: int (or int array) >= 0, the update count at which the ramp starts.
    num_actions: if given, `start` and `end` are fractions of `log(num_actions)`.

  Returns:
    A `Partial` mapping the update count to a float32 target.
  """
  where = "schedules.linear"
  start, end = _endpoints(start, end, num_actions, where)
  return Partial(
      _linear, start=start, end=end,
      steps=_steps("steps", steps, where, 1), begin=_steps("begin", begin, where, 0),
  )


def _cosine(step, start, end, steps, begin):
  f = _fraction(step, steps, begin)
  return _ramp(start, end, f, 0.5 * (1.0 - jnp.cos(jnp.pi * f)))


def cosine(start, end, steps, *, begin=0, num_actions: Optional[int] = None) -> Partial:
  """Half-cosine anneal from `start` to `end` over `steps` updates after `begin`.

  `target(k) = end + (start - end) * (1 + cos(pi * f)) / 2` with
  `f = clip((k - begin) / steps, 0, 1)`: Loshchilov & Hutter 2017 (SGDR,
  arXiv:1608.03983), the closed form of
  `optax.cosine_decay_schedule(start, steps, alpha=end / start)`.

  Args and returns as for `linear`.
  """
  where = "schedules.cosine"
  start, end = _endpoints(start, end, num_actions, where)
  return Partial(
      _cosine, start=start, end=end,
      steps=_steps("steps", steps, where, 1), begin=_steps("begin", begin, where, 0),
  )


def _exponential(step, start, end, steps, begin):
  f = _fraction(step, steps, begin)
  return jnp.where(f >= 1.0, end, start * jnp.exp(f * jnp.log(end / start)))


def exponential(start, end, steps, *, begin=0, num_actions: Optional[int] = None) -> Partial:
  """Geometric anneal from `start` to `end` over `steps` updates after `begin`.

  `target(k) = start * (end / start) ** clip((k - begin) / steps, 0, 1)`:
  a constant factor per update, the closed form of
  `optax.exponential_decay(start, steps, end / start, begin, end_value=end)`.
  `start` and `end` must be non-zero and of the same sign.

  Args and returns as for `linear`.
  """
  where = "schedules.exponential"
  start, end = _endpoints(start, end, num_actions, where)
  if not isinstance(start, jax.core.Tracer) and not isinstance(end, jax.core.Tracer):
    if not bool(jnp.all(start * end > 0)):
      raise ValueError(
          f"{where}: `start` and `end` must be non-zero and of the same sign;"
          f" got start={start} and end={end}."
      )
  return Partial(
      _exponential, start=start, end=end,
      steps=_steps("steps", steps, where, 1), begin=_steps("begin", begin, where, 0),
  )


# ----------------------------------------------------------------------------
# Xu et al. 2021 (TES-SAC): the step-indexed staircase.


def _staircase(step, initial, decay, steps_per_drop, floor, begin):
  elapsed = jnp.asarray(step, jnp.int32) - begin
  drops = jnp.maximum(elapsed, 0) // steps_per_drop
  return jnp.maximum(initial * decay ** drops.astype(jnp.float32), floor)


def annealed_discrete_target(
    num_actions: int,
    *,
    steps_per_drop,
    initial_ratio=0.98,
    decay=TES_DECAY,
    min_ratio=0.0,
    begin=0,
) -> Partial:
  """Xu et al. 2021's annealed discrete target, indexed by the update count.

  `target(k) = max(initial_ratio * log(A) * decay ** floor((k - begin) /
  steps_per_drop), min_ratio * log(A))`: it anneals from
  `initial_ratio * log(A)` (near the maximum entropy `log A` of a uniform
  policy) geometrically towards 0, one factor `decay` (0.9 in the paper's
  Table 1) every `steps_per_drop` updates, never below `min_ratio * log(A)`
  (the paper has no floor: `min_ratio=0`). It equals
  `optax.exponential_decay(H0, steps_per_drop, decay, begin, staircase=True,
  end_value=H_min)`.

  TES-SAC (arXiv:2112.02852, Algorithm 1) drops the target by `decay` only
  after the moving average of the policy entropy has sat at the target for
  `T` updates (see `tes_sac_update`); drops can never come faster than every
  `T` updates. This schedule is that rule with the entropy condition taken as
  always met: the same sequence of targets on a fixed clock, which needs no
  entropy statistics, and is the fastest anneal TES-SAC can produce with
  `T = steps_per_drop` (`tes_sac_update`'s target never lies below it).
  The default start, `0.98 log A`, is this library's discrete default
  (Christodoulou 2019); pass `initial_ratio=1.0` to start at `log A`.

  Args:
    num_actions: `A`, the number of discrete actions.
    steps_per_drop: int (or int array) >= 1, updates between two drops.
    initial_ratio: scalar or array, the starting fraction of `log A`.
    decay: scalar or array in (0, 1], the factor applied at each drop.
    min_ratio: scalar or array, the floor as a fraction of `log A`.
    begin: int (or int array) >= 0, the update count of the first interval.

  Returns:
    A `Partial` mapping the update count to a float32 target.
  """
  where = "schedules.annealed_discrete_target"
  log_a = math.log(_checks.positive_int("num_actions", num_actions, where))
  initial = _value("initial_ratio", initial_ratio, where) * log_a
  floor = _value("min_ratio", min_ratio, where) * log_a
  decay = _decay(decay, where)
  return Partial(
      _staircase, initial=initial, decay=decay,
      steps_per_drop=_steps("steps_per_drop", steps_per_drop, where, 1),
      floor=floor, begin=_steps("begin", begin, where, 0),
  )


def _decay(decay, where):
  decay = _value("decay", decay, where)
  if not isinstance(decay, jax.core.Tracer) and not bool(jnp.all((decay > 0) & (decay <= 1))):
    raise ValueError(f"{where}: `decay` must lie in (0, 1]; got {decay}.")
  return decay


# ----------------------------------------------------------------------------
# Xu et al. 2021 (TES-SAC): the feedback rule.


class TesSacState(NamedTuple):
  """State of the TES-SAC target annealing (Xu et al. 2021, Algorithm 1).

  All fields are scalar arrays (`[N]` in a population), hyperparameters
  included, so that each member can have its own.
  """

  target: jax.Array  # [] float32, the current target entropy H.
  mean: jax.Array  # [] float32, moving average mu of the batch entropy.
  var: jax.Array  # [] float32, moving variance sigma^2 of the batch entropy.
  count: jax.Array  # [] int32, stable updates counted towards the next drop.
  drops: jax.Array  # [] int32, the number of drops so far.
  observed: jax.Array  # [] int32, finite entropies seen (0: mu not set yet).
  decay: jax.Array  # [] float32, factor applied to H at each drop.
  smoothing: jax.Array  # [] float32, lambda of the moving statistics.
  mean_threshold: jax.Array  # [] float32, stable when |mu - H| < this.
  std_threshold: jax.Array  # [] float32, ... and sigma <= this.
  patience: jax.Array  # [] int32, T: stable updates per drop.
  floor: jax.Array  # [] float32, H never drops below this.


def tes_sac_init(
    initial_target,
    *,
    patience,
    decay=TES_DECAY,
    smoothing=TES_SMOOTHING,
    mean_threshold=TES_MEAN_THRESHOLD,
    std_threshold=TES_STD_THRESHOLD,
    floor=0.0,
) -> TesSacState:
  """Starts the TES-SAC target annealing at `initial_target`.

  Xu et al. 2021 ("Target Entropy Annealing for Discrete Soft Actor-Critic",
  arXiv:2112.02852) start discrete SAC with a target near the maximum entropy
  `log A` and lower it by a factor `decay` each time the policy entropy has
  settled at it: it anneals from `initial_target` towards 0 (towards `floor`,
  here; the paper has none), as fast as the policy follows. The defaults are
  their Table 1 values (`decay=0.9`, `lambda=0.999`, mean threshold 0.01,
  std threshold 0.05); `patience` (`T`, the number of stable updates per
  drop) has no published value and must be given.

  Args:
    initial_target: scalar or array, the first target, e.g.
      `entropy_jax.targets.discrete_target(A, 1.0)` for `log A`.
    patience: int (or int array) >= 1, `T`.
    decay: in (0, 1], the factor applied to the target at each drop.
    smoothing: in [0, 1), `lambda`, the moving statistics' forgetting factor.
    mean_threshold, std_threshold: the stability thresholds (non-negative;
      `inf` makes every update stable, giving `annealed_discrete_target`).
    floor: the target never drops below it.

  Returns:
    A `TesSacState`; feed it each update's batch entropy with `tes_sac_update`.
  """
  where = "schedules.tes_sac_init"
  target = _value("initial_target", initial_target, where)
  smoothing = _value("smoothing", smoothing, where)
  if not isinstance(smoothing, jax.core.Tracer) and not bool(
      jnp.all((smoothing >= 0) & (smoothing < 1))
  ):
    raise ValueError(f"{where}: `smoothing` must lie in [0, 1); got {smoothing}.")
  thresholds = {}
  for name, value in (("mean_threshold", mean_threshold), ("std_threshold", std_threshold)):
    arr = jnp.asarray(value, jnp.float32)
    if not isinstance(value, jax.core.Tracer) and not bool(jnp.all(arr >= 0)):
      raise ValueError(f"{where}: `{name}` must be >= 0; got {value!r}.")
    thresholds[name] = arr
  zero_f = jnp.zeros_like(target)
  zero_i = jnp.zeros(jnp.shape(target), jnp.int32)
  return TesSacState(
      target=target, mean=zero_f, var=zero_f, count=zero_i, drops=zero_i,
      observed=zero_i, decay=_decay(decay, where), smoothing=smoothing,
      mean_threshold=thresholds["mean_threshold"], std_threshold=thresholds["std_threshold"],
      patience=_steps("patience", patience, where, 1), floor=_value("floor", floor, where),
  )


def tes_sac_update(tes: TesSacState, entropy: jax.Array) -> TesSacState:
  """One step of TES-SAC's target annealing from a batch entropy estimate.

  Xu et al. 2021, Algorithm 1, with the incremental exponentially weighted
  mean and variance of Finch 2009 ("Incremental calculation of weighted mean
  and variance"), `lambda = smoothing`:

      delta = e - mu;  mu += (1 - lambda) * delta
      sigma^2 = lambda * (sigma^2 + (1 - lambda) * delta^2)
      if |mu - H| < mean_threshold and sigma <= std_threshold: i += 1
      if i >= T: i = 0; H = max(decay * H, floor)

  Our choices where the paper is silent: `mu` starts at the first observed
  entropy (with `sigma^2 = 0`), so a policy far from the first target is not
  counted stable while `mu` is still at its initial value; a non-finite
  `entropy` (e.g. from an update that `apply_gradients` skipped) leaves the
  state unchanged.

  Use it after each temperature update and write the target into the state
  (which must have no `target_schedule`, or `apply_gradients` would
  overwrite it):

      state, metrics = discrete_update(state, probs, log_probs)
      tes = tes_sac_update(tes, metrics["entropy"])
      state = state.replace(target=tes.target)

  Args:
    tes: the current `TesSacState`.
    entropy: scalar, the batch policy entropy of this update.

  Returns:
    The new `TesSacState`.
  """
  e = _checks.scalar("entropy", entropy, "schedules.tes_sac_update").astype(tes.mean.dtype)
  lam = tes.smoothing
  first = tes.observed == 0
  delta = jnp.where(first, 0.0, e - tes.mean)
  mean = jnp.where(first, e, tes.mean + (1.0 - lam) * delta)
  var = jnp.where(first, 0.0, lam * (tes.var + (1.0 - lam) * delta * delta))
  stable = (jnp.abs(mean - tes.target) < tes.mean_threshold) & (
      jnp.sqrt(var) <= tes.std_threshold
  )
  count = tes.count + stable.astype(tes.count.dtype)
  drop = count >= tes.patience
  target = jnp.where(drop, jnp.maximum(tes.target * tes.decay, tes.floor), tes.target)
  new = tes._replace(
      target=target, mean=mean, var=var,
      count=jnp.where(drop, 0, count), drops=tes.drops + drop.astype(tes.drops.dtype),
      observed=tes.observed + 1,
  )
  ok = jnp.isfinite(e)
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, tes)
