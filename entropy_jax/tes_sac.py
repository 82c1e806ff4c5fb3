"""TES-SAC: the discrete target annealed by feedback from the policy entropy.

Xu et al. 2021, "Target Entropy Annealing for Discrete Soft Actor-Critic" (arXiv:2112.02852, Algorithm 1), start
discrete SAC with a target near the maximum entropy `log A` and multiply it by `decay` each time the moving average of
the policy entropy has settled at it. `annealed_discrete_target` in `entropy_jax.schedules` is the same sequence of
targets on a fixed clock. The choices where the paper is silent are stated in `tes_sac_update`; the docs page
"Targets and schedules" compares them with a public RLlib implementation.

Usage, after each temperature update (the state must have no `target_schedule`, which would overwrite the target)::

    state, metrics = discrete_update(state, probs, log_probs)
    tes = tes_sac_update(tes, metrics["entropy"])
    state = state.replace(target=tes.target)
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from entropy_jax import _checks

# Xu et al. 2021, Table 1.
TES_DECAY = 0.9
TES_SMOOTHING = 0.999
TES_MEAN_THRESHOLD = 0.01
TES_STD_THRESHOLD = 0.05


class TesSacState(NamedTuple):
  """State of the TES-SAC target annealing (Xu et al. 2021, Algorithm 1).

  All fields are scalar arrays (`[N]` in a population), hyperparameters included, so each member can have its own.
  """

  target: jax.Array  # [] float32, the current target entropy H.
  mean: jax.Array  # [] float32, moving average mu of the batch entropy.
  var: jax.Array  # [] float32, moving variance sigma^2 of the batch entropy.
  stable: jax.Array  # [] int32, stable updates counted towards the next drop (i).
  drops: jax.Array  # [] int32, the number of drops so far.
  observed: jax.Array  # [] int32, finite entropies seen (0: mu not set yet).
  decay: jax.Array  # [] float32, factor applied to H at each drop.
  smoothing: jax.Array  # [] float32, lambda of the moving statistics.
  mean_threshold: jax.Array  # [] float32, stable when |mu - H| < this.
  std_threshold: jax.Array  # [] float32, ... and sigma <= this.
  patience: jax.Array  # [] int32, T: stable updates per drop.
  floor: jax.Array  # [] float32, H never drops below this.


@_checks.public
def tes_sac_init(
  initial_target: chex.Numeric,
  *,
  patience: chex.Numeric,
  decay: chex.Numeric = TES_DECAY,
  smoothing: chex.Numeric = TES_SMOOTHING,
  mean_threshold: chex.Numeric = TES_MEAN_THRESHOLD,
  std_threshold: chex.Numeric = TES_STD_THRESHOLD,
  floor: chex.Numeric = 0.0,
) -> TesSacState:
  """Starts the TES-SAC target annealing at `initial_target`.

  The defaults are Xu et al.'s Table 1 values; `patience` (`T`, the number of stable updates per drop) has no
  published value and must be given.

  Args:
    initial_target: scalar or array, the first target, e.g. `entropy_jax.discrete_target(A, 1.0)` for `log A`.
    patience: int (or int array) >= 1, `T`.
    decay: in (0, 1], the factor applied to the target at each drop.
    smoothing: in [0, 1), `lambda`, the moving statistics' forgetting factor.
    mean_threshold: non-negative; stable when `|mu - H| <` this.
    std_threshold: non-negative; stable when `sigma <=` this (`inf` for both thresholds makes every update stable,
      which gives `annealed_discrete_target`).
    floor: the target never drops below it (the paper has none: 0).

  Returns:
    A `TesSacState`; feed it each update's batch entropy with `tes_sac_update`.
  """
  target = _checks.float32_value("initial_target", initial_target)
  zero_f, zero_i = jnp.zeros_like(target), jnp.zeros(jnp.shape(target), jnp.int32)
  return TesSacState(
    target=target,
    mean=zero_f,
    var=zero_f,
    stable=zero_i,
    drops=zero_i,
    observed=zero_i,
    decay=_checks.in_range("decay", decay, low=0, high=1, low_open=True),
    smoothing=_checks.in_range(
      "smoothing", _checks.float32_value("smoothing", smoothing), low=0, high=1, high_open=True
    ),
    mean_threshold=_checks.non_negative("mean_threshold", mean_threshold),
    std_threshold=_checks.non_negative("std_threshold", std_threshold),
    patience=_checks.int_steps("patience", patience, minimum=1),
    floor=_checks.float32_value("floor", floor),
  )


@_checks.public
def tes_sac_update(tes: TesSacState, entropy: chex.Numeric) -> TesSacState:
  """One step of TES-SAC's target annealing from a batch entropy estimate.

  Xu et al. 2021, Algorithm 1, with the incremental exponentially weighted mean and variance of Finch 2009
  ("Incremental calculation of weighted mean and variance"), `lambda = smoothing`::

      delta = e - mu;  mu += (1 - lambda) * delta
      sigma^2 = lambda * (sigma^2 + (1 - lambda) * delta^2)
      if |mu - H| < mean_threshold and sigma <= std_threshold: i += 1
      if i >= T: i = 0; H = max(decay * H, floor)

  Where the paper is silent: `mu` starts at the first observed entropy (with `sigma^2 = 0`), so that a policy far
  from the first target is not counted stable while `mu` sits at an arbitrary initial value; and a non-finite
  `entropy` (from an update that `apply_gradients` skipped) leaves the state unchanged.

  Args:
    tes: the current `TesSacState`.
    entropy: scalar, the batch policy entropy of this update (`metrics["entropy"]` of `discrete_update`).

  Returns:
    The new `TesSacState`.
  """
  e = _checks.scalar("entropy", entropy).astype(tes.mean.dtype)
  lam = tes.smoothing
  first = tes.observed == 0
  delta = jnp.where(first, 0.0, e - tes.mean)
  mean = jnp.where(first, e, tes.mean + (1.0 - lam) * delta)
  var = jnp.where(first, 0.0, lam * (tes.var + (1.0 - lam) * delta * delta))
  is_stable = (jnp.abs(mean - tes.target) < tes.mean_threshold) & (jnp.sqrt(var) <= tes.std_threshold)
  count = tes.stable + is_stable.astype(tes.stable.dtype)
  drop = count >= tes.patience
  target = jnp.where(drop, jnp.maximum(tes.target * tes.decay, tes.floor), tes.target)
  new = tes._replace(
    target=target,
    mean=mean,
    var=var,
    stable=jnp.where(drop, 0, count),
    drops=tes.drops + drop.astype(tes.drops.dtype),
    observed=tes.observed + 1,
  )
  ok = jnp.isfinite(e)
  return jax.tree.map(lambda n, o: jnp.where(ok, n, o), new, tes)
