"""Target-entropy schedules: the target as a function of the update count.

Each schedule is a `jax.tree_util.Partial` whose numeric parameters are array leaves. Passed to `init_entropy_state`,
it becomes the state's `target_schedule`, and update number `k` (from 0, skipped updates excluded) uses
`schedule(k)`. Because the parameters are leaves, a population can give each member its own schedule::

    states = jax.vmap(lambda t0: init_entropy_state(linear_schedule(t0, 0.2, 10_000)))(jnp.array([1.0, 1.5, 2.0]))

Any optax schedule also works as-is, but its parameters are closed over, so it cannot differ per member. With
`num_actions=A`, `start` and `end` are fractions of `log(A)`, the entropy of a uniform categorical policy. For the
feedback-driven anneal of TES-SAC, see `entropy_jax.tes_sac`; `annealed_discrete_target` is its staircase on a clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from entropy_jax import _checks


def _progress(step: jax.Array, steps: jax.Array, begin: jax.Array) -> jax.Array:
  """`clip((step - begin) / steps, 0, 1)` in float32: how far along the ramp."""
  elapsed = jnp.asarray(step, jnp.float32) - begin.astype(jnp.float32)
  return jnp.clip(elapsed / steps.astype(jnp.float32), 0.0, 1.0)


def _towards(start, end, f, weight):
  """`start + (end - start) * weight`, exactly `end` once the ramp is over (`f >= 1`)."""
  return jnp.where(f >= 1.0, end, start + (end - start) * weight)


def _linear(step, start, end, steps, begin):
  f = _progress(step, steps, begin)
  return _towards(start, end, f, f)


def _cosine(step, start, end, steps, begin):
  f = _progress(step, steps, begin)
  return _towards(start, end, f, 0.5 * (1.0 - jnp.cos(jnp.pi * f)))


def _geometric(step, start, end, steps, begin):
  f = _progress(step, steps, begin)
  return jnp.where(f >= 1.0, end, start * jnp.exp(f * jnp.log(end / start)))


def _ramp(fn: Callable[..., jax.Array], start, end, steps, begin, num_actions: int | None) -> Partial:
  """The one factory behind the anneals: checks the parameters, binds them as leaves."""
  start = _checks.float32_value("start", start)
  end = _checks.float32_value("end", end)
  if num_actions is not None:
    log_a = math.log(_checks.positive_int("num_actions", num_actions))
    start, end = start * log_a, end * log_a
  return Partial(
    fn,
    start=start,
    end=end,
    steps=_checks.int_steps("steps", steps, minimum=1),
    begin=_checks.int_steps("begin", begin, minimum=0),
  )


@_checks.public
def linear_schedule(start, end, steps, *, begin=0, num_actions: int | None = None) -> Partial:
  """Linear anneal from `start` to `end` over `steps` updates after `begin`.

  `target(k) = start + (end - start) * clip((k - begin) / steps, 0, 1)`, the closed form of
  `optax.linear_schedule(start, end, steps, begin)`.

  Args:
    start: scalar or array, the target before `begin`.
    end: scalar or array, the target from `begin + steps` on.
    steps: int (or int array) >= 1, the length of the ramp in updates.
    begin: int (or int array) >= 0, the update count at which the ramp starts.
    num_actions: if given, `start` and `end` are fractions of `log(num_actions)`.

  Returns:
    A `Partial` mapping the update count to a float32 target.
  """
  return _ramp(_linear, start, end, steps, begin, num_actions)


@_checks.public
def cosine_schedule(start, end, steps, *, begin=0, num_actions: int | None = None) -> Partial:
  """Half-cosine anneal from `start` to `end` over `steps` updates after `begin`.

  `target(k) = end + (start - end) * (1 + cos(pi * f)) / 2` with `f = clip((k - begin) / steps, 0, 1)`: Loshchilov &
  Hutter 2017 (SGDR, arXiv:1608.03983), the closed form of `optax.cosine_decay_schedule(start, steps, end / start)`.

  Args and returns as for `linear_schedule`.
  """
  return _ramp(_cosine, start, end, steps, begin, num_actions)


@_checks.public
def exponential_schedule(start, end, steps, *, begin=0, num_actions: int | None = None) -> Partial:
  """Geometric anneal from `start` to `end` over `steps` updates after `begin`.

  `target(k) = start * (end / start) ** clip((k - begin) / steps, 0, 1)`: a constant factor per update, the closed
  form of `optax.exponential_decay(start, steps, end / start, begin, end_value=end)`. `start` and `end` must be
  non-zero and of the same sign.

  Args and returns as for `linear_schedule`.
  """
  schedule = _ramp(_geometric, start, end, steps, begin, num_actions)
  start, end = schedule.keywords["start"], schedule.keywords["end"]
  same_sign = jnp.sign(start) * jnp.sign(end) > 0
  if not isinstance(same_sign, jax.core.Tracer) and not bool(jnp.all(same_sign)):
    raise _checks.error(f"`start` and `end` must be non-zero and of the same sign; got start={start} and end={end}.")
  return schedule


def _staircase(step, initial, decay, steps_per_drop, floor, begin):
  elapsed = jnp.asarray(step, jnp.int32) - begin
  drops = jnp.maximum(elapsed, 0) // steps_per_drop
  return jnp.maximum(initial * decay ** drops.astype(jnp.float32), floor)


@_checks.public
def annealed_discrete_target(
  num_actions: int,
  *,
  steps_per_drop: chex.Numeric,
  initial_ratio: chex.Numeric = 0.98,
  decay: chex.Numeric = 0.9,
  min_ratio: chex.Numeric = 0.0,
  begin: chex.Numeric = 0,
) -> Partial:
  """Xu et al. 2021's annealed discrete target, indexed by the update count.

  `target(k) = max(initial_ratio * log(A) * decay ** floor((k - begin) / steps_per_drop), min_ratio * log(A))`:
  from near the maximum entropy `log A` geometrically towards 0, one factor `decay` (0.9 in the paper's Table 1) every
  `steps_per_drop` updates, never below `min_ratio * log(A)` (the paper has no floor). It equals
  `optax.exponential_decay(H0, steps_per_drop, decay, begin, staircase=True, end_value=H_min)`.

  TES-SAC (Xu et al. 2021, arXiv:2112.02852, Algorithm 1; `entropy_jax.tes_sac`) drops the target only after the
  policy entropy has sat at it for `T` updates; this schedule is that rule with the condition always met, the fastest
  anneal TES-SAC can produce with `T = steps_per_drop`.

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
  log_a = math.log(_checks.positive_int("num_actions", num_actions))
  return Partial(
    _staircase,
    initial=_checks.float32_value("initial_ratio", initial_ratio) * log_a,
    decay=_checks.in_range("decay", decay, low=0, high=1, low_open=True),
    steps_per_drop=_checks.int_steps("steps_per_drop", steps_per_drop, minimum=1),
    floor=_checks.float32_value("min_ratio", min_ratio) * log_a,
    begin=_checks.int_steps("begin", begin, minimum=0),
  )
