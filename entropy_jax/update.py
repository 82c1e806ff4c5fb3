"""Applying a gradient to an `EntropyState`, and the fused one-call updates.

`apply_gradients` is the only place `log_alpha` changes. It clamps `log_alpha` to the state's bounds and to
`[LOG_ALPHA_MIN, LOG_ALPHA_MAX]`, where alpha is a normal float32: reaching that edge is a bound, not a fault. An
update whose gradient, scheduled target or optimizer statistic is not finite is skipped, every field kept bit for bit
but the `skipped` counter, as `optax.apply_if_finite` does for whole models; a non-zero count means the inputs (the
policy's log-probabilities) had NaN or infinite values.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax

from entropy_jax import _checks
from entropy_jax.losses import continuous_entropy, continuous_loss, discrete_entropy, discrete_loss
from entropy_jax.state import LOG_ALPHA_MAX, LOG_ALPHA_MIN, EntropyState
from entropy_jax.targets import masked_discrete_target

Metrics = dict[str, jax.Array]

# Finite gradients are limited to this magnitude before the optimizer sees them. The input it protects against: a
# target the policy cannot reach (above the entropy of a uniform policy on the action box, or above log(number of
# allowed actions) under a mask) raises log_alpha by about lr per Adam update, to LOG_ALPHA_MAX within 88 / 3e-4, about
# 300k updates, a normal SAC run. In the alpha form the gradient is alpha * (H - target), and Adam's second moment of
# it overflows float32 once |gradient| > 1.8e19 (log_alpha > 44 for an entropy gap of 1): every later update would be
# skipped, and alpha could never come down. A scale-invariant optimizer such as Adam reads only the sign beyond it.
GRAD_LIMIT = 2.0**60


@_checks.public
def apply_gradients(state: EntropyState, grad: chex.Numeric) -> EntropyState:
  """One optax update of `log_alpha` from `grad = d loss / d log_alpha`.

  In order: a finite `grad` is limited to `[-GRAD_LIMIT, GRAD_LIMIT]`; the optimizer steps; `log_alpha` is clamped
  to `[log_alpha_min, log_alpha_max]` and to `[LOG_ALPHA_MIN, LOG_ALPHA_MAX]`; `step` advances; with a target
  schedule, `target = schedule(step)`. If `grad`, the new target, or a leaf of the optimizer state that was finite is
  not finite after the step, the update is skipped: the state is returned bit for bit, with `skipped + 1`.

  Args:
    state: the current state (one member; `jax.vmap` it for a population).
    grad: scalar gradient of a temperature loss with respect to `log_alpha`.

  Returns:
    The new state.
  """
  if jnp.ndim(state.log_alpha) != 0:
    raise _checks.error(
      f"`state` must be a single state (log_alpha of shape ()); got log_alpha of shape {jnp.shape(state.log_alpha)}."
      " For a population, use jax.vmap(apply_gradients)(population, grads)."
    )
  grad = _checks.scalar("grad", grad)
  # Limited before the cast: a float64 gradient (under jax_enable_x64) must not turn infinite in float32.
  limited = jnp.clip(grad, -GRAD_LIMIT, GRAD_LIMIT).astype(state.log_alpha.dtype)
  updates, opt_state = state.tx.update(limited, state.opt_state, state.log_alpha)
  lo = jnp.maximum(state.log_alpha_min, LOG_ALPHA_MIN)
  hi = jnp.minimum(state.log_alpha_max, LOG_ALPHA_MAX)
  log_alpha = jnp.clip(optax.apply_updates(state.log_alpha, updates), lo, hi)
  step = state.step + 1
  target = state.target
  if state.target_schedule is not None:
    target = jnp.asarray(state.target_schedule(step), state.target.dtype)

  # `log_alpha` is NaN only if the optimizer produced one.
  ok = jnp.isfinite(grad) & jnp.isfinite(log_alpha) & jnp.isfinite(target)
  # A leaf of the optimizer state that turns non-finite (a statistic that overflows) would freeze alpha for good:
  # skip such a step. Leaves already non-finite (a `best_value = inf` initial value) may stay so.
  for after, before in zip(jax.tree.leaves(opt_state), jax.tree.leaves(state.opt_state)):
    if after is not before and jnp.issubdtype(jnp.result_type(after), jnp.inexact):
      ok &= jnp.all(jnp.isfinite(after) | ~jnp.isfinite(before))
  skipped = state.skipped + jnp.where(ok, 0, 1).astype(state.skipped.dtype)
  # The verdict is read back from the new counter: under vmap, XLA's CPU backend writes each output in a loop of its
  # own, and a verdict written out once spares every other field's loop recomputing the checks from all their inputs.
  ok = skipped == state.skipped

  def keep(new, old):
    return old if new is old else jnp.where(ok, new, old)

  return state.replace(
    log_alpha=keep(log_alpha, state.log_alpha),
    opt_state=jax.tree.map(keep, opt_state, state.opt_state),
    target=keep(target, state.target),
    step=keep(step, state.step),
    skipped=skipped,
  )


@_checks.public
def continuous_update(
  state: EntropyState,
  log_probs: jax.Array,
  *,
  weights: jax.Array | None = None,
) -> tuple[EntropyState, Metrics]:
  """`continuous_loss`, its gradient and `apply_gradients`, in one call.

  Args:
    state: the current state.
    log_probs: `[B]` or `[B, 1]` log-probabilities of freshly sampled actions.
    weights: optional `[B]` per-sample weights.

  Returns:
    `(new_state, metrics)`; metrics holds scalars `loss` (before the step), `alpha` (after it), `entropy` (the batch
    estimate), `target` (the one the loss used) and `skipped` (the state's running count).
  """

  def loss_fn(log_alpha):
    return continuous_loss(log_alpha, log_probs, state.target, weights=weights, form=state.loss_form)

  loss, grad = jax.value_and_grad(loss_fn)(state.log_alpha)
  entropy = continuous_entropy(log_probs, weights)
  return _step(state, loss, grad, entropy, state.target)


@_checks.public
def discrete_update(
  state: EntropyState,
  probs: jax.Array,
  log_probs: jax.Array,
  *,
  mask: jax.Array | None = None,
  weights: jax.Array | None = None,
  masked_target_ratio: float | None = None,
) -> tuple[EntropyState, Metrics]:
  """`discrete_loss`, its gradient and `apply_gradients`, in one call.

  Args:
    state: the current state.
    probs: `[B, A]` action probabilities of the current policy.
    log_probs: `[B, A]` their logarithms.
    mask: optional `[B, A]` bool of valid actions.
    weights: optional `[B]` per-sample weights.
    masked_target_ratio: with a `mask`, use the per-state target `ratio * log(n_valid_b)` instead of `state.target`
      (`entropy_jax.DISCRETE_TARGET_RATIO` is the default 0.6).

  Returns:
    `(new_state, metrics)` as for `continuous_update`; with a per-state target, `metrics["target"]` is its mean.
  """
  target = state.target
  if masked_target_ratio is not None:
    if mask is None:
      raise _checks.error("`masked_target_ratio` needs a `mask`; got mask=None.")
    target = masked_discrete_target(mask, masked_target_ratio)

  def loss_fn(log_alpha):
    return discrete_loss(log_alpha, probs, log_probs, target, mask=mask, weights=weights, form=state.loss_form)

  loss, grad = jax.value_and_grad(loss_fn)(state.log_alpha)
  entropy = discrete_entropy(probs, log_probs, mask=mask, weights=weights)
  return _step(state, loss, grad, entropy, jnp.mean(target))


def _step(state, loss, grad, entropy, target) -> tuple[EntropyState, Metrics]:
  new = apply_gradients(state, grad)
  return new, {"loss": loss, "alpha": new.alpha, "entropy": entropy, "target": target, "skipped": new.skipped}
