"""Applying a gradient to an `EntropyState`, and the fused one-call updates.

`apply_gradients` is the only place `log_alpha` changes. It is safe by
construction: a non-finite gradient (or a step that would make `log_alpha`
non-finite) is skipped, leaving every field bit-identical except the
`skipped` counter, as `optax.apply_if_finite` does for whole models; and
`log_alpha` is clipped to the state's bounds after every step.
"""

from __future__ import annotations

from typing import Optional

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
from entropy_jax.state import EntropyState
from entropy_jax.targets import masked_discrete_target

Metrics = dict[str, jax.Array]

# The range of log_alpha in which alpha = exp(log_alpha) is a normal float32
# (FLT_MIN = exp(-87.34), FLT_MAX = exp(88.72)), rounded inwards. A step that
# leaves it is skipped. It is NaN-safe: comparisons with NaN are False.
LOG_ALPHA_SAFE_MIN = -87.0
LOG_ALPHA_SAFE_MAX = 88.0


def apply_gradients(state: EntropyState, grad: jax.Array) -> EntropyState:
  """One optax update of `log_alpha` from `grad = d loss / d log_alpha`.

  Then: clip `log_alpha` to `[log_alpha_min, log_alpha_max]`, advance `step`,
  and, if the state has a target schedule, set `target = schedule(step)`.
  If `grad`, the resulting target, or a leaf of the optimizer state that was
  finite is not finite after the step, or if the new log_alpha leaves
  `[LOG_ALPHA_SAFE_MIN, LOG_ALPHA_SAFE_MAX] = [-87, 88]` (where alpha would
  overflow to inf or underflow towards 0 in float32), the update is skipped:
  the returned state equals `state` bit for bit except `skipped + 1`.

  Args:
    state: the current state.
    grad: scalar gradient of a temperature loss with respect to `log_alpha`.

  Returns:
    The new state.
  """
  where = "apply_gradients"
  if jnp.ndim(state.log_alpha) != 0:
    raise ValueError(
        f"{where}: expected a single state (log_alpha of shape ()); got"
        f" log_alpha of shape {jnp.shape(state.log_alpha)}. For a population,"
        " use jax.vmap(apply_gradients)(population, grads)."
    )
  grad = _checks.scalar("grad", grad, where).astype(state.log_alpha.dtype)
  updates, opt_state = state.tx.update(grad, state.opt_state, state.log_alpha)
  log_alpha = optax.apply_updates(state.log_alpha, updates)
  log_alpha = jnp.clip(log_alpha, state.log_alpha_min, state.log_alpha_max)
  step = state.step + 1
  target = state.target
  if state.target_schedule is not None:
    target = jnp.asarray(state.target_schedule(step), state.target.dtype)
  updated = state.replace(log_alpha=log_alpha, opt_state=opt_state, target=target, step=step)

  # alpha = exp(log_alpha) must stay a normal float32, not just log_alpha
  # finite: past log(FLT_MAX) ~ 88.7 alpha is inf (NaN in the actor loss);
  # below log(FLT_MIN) ~ -87.3 it is subnormal or flushed to 0, where the
  # alpha-form gradient (alpha * statistic) is 0 for ever. The check is made in
  # log space (no exp per member): log_alpha must lie in [-87, 88].
  ok = (
      jnp.isfinite(grad)
      & (log_alpha >= LOG_ALPHA_SAFE_MIN)
      & (log_alpha <= LOG_ALPHA_SAFE_MAX)
      & jnp.isfinite(target)
  )
  # A finite but huge gradient can overflow the optimizer's statistics (Adam's
  # `nu = grad**2` is inf in float32 for |grad| > 1.8e19), which would freeze
  # alpha for good. Skip such a step too. Leaves that were already non-finite
  # (e.g. a `best_value = inf` initial value) are allowed to stay so.
  for after, before in zip(jax.tree.leaves(opt_state), jax.tree.leaves(state.opt_state)):
    if jnp.issubdtype(jnp.result_type(after), jnp.inexact):
      ok &= jnp.all(jnp.isfinite(after) | ~jnp.isfinite(before))
  kept = jax.tree.map(lambda new, old: jnp.where(ok, new, old), updated, state)
  return kept.replace(skipped=state.skipped + jnp.where(ok, 0, 1).astype(state.skipped.dtype))


def continuous_update(
    state: EntropyState,
    log_probs: jax.Array,
    *,
    weights: Optional[jax.Array] = None,
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
    return continuous_loss(
        log_alpha, log_probs, state.target, weights=weights, form=state.loss_form
    )

  loss, grad = jax.value_and_grad(loss_fn)(state.log_alpha)
  entropy = continuous_entropy(log_probs, weights)
  return _step(state, loss, grad, entropy, state.target)


def discrete_update(
    state: EntropyState,
    probs: jax.Array,
    log_probs: jax.Array,
    *,
    mask: Optional[jax.Array] = None,
    weights: Optional[jax.Array] = None,
    masked_target_ratio: Optional[float] = None,
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
      `entropy_jax.targets.DISCRETE_TARGET_RATIO` for the paper's 0.98).

  Returns:
    `(new_state, metrics)` as for `continuous_update`; with a per-state
    target, `metrics["target"]` is its batch mean.
  """
  target = state.target
  if masked_target_ratio is not None:
    if mask is None:
      raise ValueError("discrete_update: `masked_target_ratio` needs a `mask`.")
    target = masked_discrete_target(mask, masked_target_ratio)

  def loss_fn(log_alpha):
    return discrete_loss(
        log_alpha, probs, log_probs, target, mask=mask, weights=weights, form=state.loss_form
    )

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

