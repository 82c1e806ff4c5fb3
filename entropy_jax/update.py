"""Applying a gradient to an `EntropyState`, and the fused one-call updates.

`apply_gradients` is the only place `log_alpha` changes, and it is safe by
construction:

* Bounds: `log_alpha` is clamped to the state's bounds after every step, and
  always to `[LOG_ALPHA_MIN, LOG_ALPHA_MAX]`, the range where alpha is a
  normal float32 (see `entropy_jax.state`). Reaching the edge of that range
  is a bound, not a fault: alpha stays there and moves back as soon as the
  gradient's sign says so.
* Non-finite values: a gradient, scheduled target or optimizer statistic that
  is not finite skips the update, leaving every field bit-identical except
  the `skipped` counter, as `optax.apply_if_finite` does for whole models.
  `skipped` counts nothing else, so a non-zero count means the inputs (the
  policy's log-probabilities) had NaN or infinite values.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import optax

from entropy_jax import _checks
from entropy_jax.losses import (
  continuous_entropy,
  continuous_loss,
  discrete_entropy,
  discrete_loss,
)
from entropy_jax.state import LOG_ALPHA_MAX, LOG_ALPHA_MIN, EntropyState
from entropy_jax.targets import masked_discrete_target

Metrics = dict[str, jax.Array]

# Finite gradients are limited to this magnitude before the optimizer sees
# them: optimizers such as Adam keep the square of the gradient, which must
# stay finite in float32 (FLT_MAX is about 2**128), and for such
# scale-invariant optimizers a larger gradient carries nothing but its sign.
GRAD_LIMIT = 2.0**60


@_checks.public
def apply_gradients(state: EntropyState, grad: chex.Numeric) -> EntropyState:
  """One optax update of `log_alpha` from `grad = d loss / d log_alpha`.

  In order: a finite `grad` is limited to `[-GRAD_LIMIT, GRAD_LIMIT]`; the
  optimizer steps; `log_alpha` is clamped to `[log_alpha_min, log_alpha_max]`
  and to `[LOG_ALPHA_MIN, LOG_ALPHA_MAX]`; `step` advances; with a target
  schedule, `target = schedule(step)`. If `grad`, the new target, or a leaf
  of the optimizer state that was finite is not finite after the step, the
  update is skipped: the returned state equals `state` bit for bit except
  `skipped + 1`.

  Args:
    state: the current state (one member; `jax.vmap` it for a population).
    grad: scalar gradient of a temperature loss with respect to `log_alpha`.

  Returns:
    The new state.
  """
  if jnp.ndim(state.log_alpha) != 0:
    raise ValueError(
      f"{_checks.caller()}: expected a single state (log_alpha of shape ()); got"
      f" log_alpha of shape {jnp.shape(state.log_alpha)}. For a population,"
      " use jax.vmap(apply_gradients)(population, grads)."
    )
  grad = _checks.scalar("grad", grad)
  # Limited before the cast: a float64 gradient (under jax_enable_x64) beyond
  # float32's range is finite, and must not turn infinite in log_alpha's dtype.
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
  # A leaf of the optimizer state that turns non-finite (a statistic that
  # overflows) would freeze alpha for good: skip such a step. Leaves that were
  # already non-finite (e.g. a `best_value = inf` initial value) may stay so,
  # and leaves the optimizer passes through unchanged need no check.
  for after, before in zip(jax.tree.leaves(opt_state), jax.tree.leaves(state.opt_state)):
    if after is not before and jnp.issubdtype(jnp.result_type(after), jnp.inexact):
      ok &= jnp.all(jnp.isfinite(after) | ~jnp.isfinite(before))
  skipped = state.skipped + jnp.where(ok, 0, 1).astype(state.skipped.dtype)
  # The verdict is read back from the new counter, which is computed anyway:
  # under vmap, XLA's CPU backend writes each output array in a loop of its
  # own, and a verdict written out once lets every other field's loop read
  # two [N] arrays instead of recomputing the checks from all their inputs.
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
    `(new_state, metrics)`; metrics holds scalars `loss` (before the step),
    `alpha` (after it), `entropy` (the batch estimate), `target` (the one the
    loss used) and `skipped` (the state's running count).
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
    masked_target_ratio: with a `mask`, use the per-state target
      `ratio * log(n_valid_b)` instead of `state.target` (pass
      `entropy_jax.DISCRETE_TARGET_RATIO` for the default 0.6).

  Returns:
    `(new_state, metrics)` as for `continuous_update`; with a per-state
    target, `metrics["target"]` is its batch mean.
  """
  target = state.target
  if masked_target_ratio is not None:
    if mask is None:
      raise ValueError(f"{_checks.caller()}: `masked_target_ratio` needs a `mask`.")
    target = masked_discrete_target(mask, masked_target_ratio)

  def loss_fn(log_alpha):
    return discrete_loss(log_alpha, probs, log_probs, target, mask=mask, weights=weights, form=state.loss_form)

  loss, grad = jax.value_and_grad(loss_fn)(state.log_alpha)
  entropy = discrete_entropy(probs, log_probs, mask=mask, weights=weights)
  return _step(state, loss, grad, entropy, jnp.mean(target))


def _step(state, loss, grad, entropy, target) -> tuple[EntropyState, Metrics]:
  new_state = apply_gradients(state, grad)
  metrics = {
    "loss": loss,
    "alpha": new_state.alpha,
    "entropy": entropy,
    "target": target,
    "skipped": new_state.skipped,
  }
  return new_state, metrics
