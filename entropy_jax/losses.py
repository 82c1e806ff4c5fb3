"""The temperature losses of Soft Actor-Critic, as pure functions of arrays.

Both losses are linear in `log_alpha` (or in `alpha`, the alpha-form): the batch is reduced to one statistic first,
and only that scalar meets the temperature, so under `vmap` no `[N, B]` temporary is built.

References:
  Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications", arXiv:1812.05905, eq. 18 (continuous).
  Christodoulou 2019, "Soft Actor-Critic for Discrete Action Settings", arXiv:1910.07207, eq. 11 (discrete).
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp

from entropy_jax import _checks

LossForm = Literal["log", "alpha"]
LOSS_FORMS = ("log", "alpha")


def _times_temperature(log_alpha: jax.Array, stat: jax.Array, form: str) -> jax.Array:
  """`log_alpha * stat` (log-form) or `exp(log_alpha) * stat` (alpha-form, whose steps shrink with alpha).

  The log-form is SB3's, SBX's, Velora's and Dopamine's; the alpha-form Brax's, CleanRL's, Acme's, Stoix's and rejax's.
  """
  if form not in LOSS_FORMS:
    raise _checks.error(f"`form` must be one of {LOSS_FORMS}; got {form!r}.")
  return log_alpha * stat if form == "log" else _alpha_times(log_alpha, stat)


@jax.custom_jvp
def _alpha_times(log_alpha: jax.Array, stat: jax.Array) -> jax.Array:
  return jnp.exp(log_alpha) * stat


@_alpha_times.defjvp
def _alpha_times_jvp(primals, tangents):
  """The gradient `alpha * stat`, saturated at the largest float of log_alpha's dtype rather than infinite.

  The input it protects against: a target the policy cannot reach drives alpha to `exp(LOG_ALPHA_MAX)`, 1.65e38 (see
  `update.GRAD_LIMIT`); once the target is reachable again, `alpha * (H - target)` overflows float32 for any
  `|H - target| > 2.06`, and `apply_gradients` would skip every update as non-finite, alpha never coming down.
  A non-finite statistic still gives a non-finite derivative.
  """
  log_alpha, stat = primals
  d_log_alpha, d_stat = tangents
  alpha = jnp.exp(log_alpha)
  out = alpha * stat
  big = jnp.finfo(log_alpha.dtype).max  # In log_alpha's dtype: a float64 statistic (x64) may give a larger product.
  slope = jnp.where(jnp.isfinite(stat), jnp.clip(out, -big, big), out).astype(log_alpha.dtype)
  return out, (slope * d_log_alpha).astype(out.dtype) + alpha * d_stat


def _weighted_mean(x: jax.Array, weights: jax.Array | None, dtype):
  """`mean(x)` or `mean(weights * x)`, accumulated in `dtype`."""
  if weights is None:
    return jnp.mean(x, dtype=dtype)
  return jnp.mean(x.astype(dtype) * weights.astype(dtype))


@_checks.public
def continuous_entropy(log_probs: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """The batch estimate of the policy entropy, `-mean_b log pi(a_b | s_b)`.

  Args:
    log_probs: `[B]` or `[B, 1]` log-probabilities of sampled actions.
    weights: optional `[B]` per-sample weights (see `continuous_loss`).

  Returns:
    A scalar in the accumulation dtype (at least float32).
  """
  log_probs = _checks.continuous_log_probs(log_probs)
  w = _checks.sample_weights(weights, log_probs.shape[0])
  dtype = _checks.accumulation_dtype(log_probs)
  return -_weighted_mean(log_probs, w, dtype)


@_checks.public
def continuous_loss(
  log_alpha: jax.Array,
  log_probs: jax.Array,
  target: jax.Array,
  *,
  weights: jax.Array | None = None,
  form: LossForm = "log",
) -> jax.Array:
  """Velora's / SAC's continuous temperature loss.

  `loss = -mean_b(log_alpha * stop_gradient(log_probs_b + target)) = -log_alpha * stop_gradient(mean_b(log_probs_b)
  + target)`, the second form being what is computed (Haarnoja et al. 2018, eq. 18, with `log_alpha` as the trained
  variable as in their reference code). The gradient `H - target` is positive when the policy's entropy `H` exceeds
  the target, so gradient descent lowers alpha, and negative when below, raising it.

  Args:
    log_alpha: scalar, the log temperature.
    log_probs: `[B]` or `[B, 1]`, log pi(a_b | s_b) for actions sampled from the current policy. No gradient flows
      back into them.
    target: scalar target entropy (typically `-action_dim`), or `[B]`.
    weights: optional `[B]` per-sample weights, e.g. importance weights from prioritized replay (Schaul et al. 2016):
      the loss becomes `-log_alpha * mean_b(w_b * (log_probs_b + target))`, the critic loss's convention.
    form: `"log"` (default, Velora / SB3) differentiates the loss above; `"alpha"` (Brax / CleanRL) replaces
      `log_alpha` by `exp(log_alpha)`.

  Returns:
    A scalar loss, in float32 for float32, bfloat16 or float16 inputs.
  """
  log_alpha = _checks.scalar("log_alpha", log_alpha)
  log_probs = _checks.continuous_log_probs(log_probs)
  batch = log_probs.shape[0]
  target = _checks.batch_vector("target", target, batch)
  w = _checks.sample_weights(weights, batch)
  dtype = _checks.accumulation_dtype(log_probs, target)
  if target.ndim == 0:
    # Reduce first: mean(w * (lp + t)) = mean(w * lp) + t * mean(w).
    mean_w = 1.0 if w is None else jnp.mean(w, dtype=dtype)
    stat = _weighted_mean(log_probs, w, dtype) + target.astype(dtype) * mean_w
  else:
    stat = _weighted_mean(log_probs.astype(dtype) + target.astype(dtype), w, dtype)
  return _times_temperature(log_alpha, -jax.lax.stop_gradient(stat), form)


@_checks.public
def discrete_entropy(
  probs: jax.Array,
  log_probs: jax.Array,
  *,
  mask: jax.Array | None = None,
  weights: jax.Array | None = None,
) -> jax.Array:
  """The batch mean of the exact per-state entropy, `-mean_b sum_a p log p`.

  Args:
    probs: `[B, A]` action probabilities pi(a | s_b).
    log_probs: `[B, A]` their logarithms.
    mask: optional `[B, A]` bool, True for valid actions; invalid actions are left out of the sum.
    weights: optional `[B]` per-sample weights.

  Returns:
    A scalar in the accumulation dtype (at least float32).
  """
  probs, log_probs, mask = _checks.discrete_inputs(probs, log_probs, mask)
  w = _checks.sample_weights(weights, probs.shape[0])
  dtype = _checks.accumulation_dtype(probs, log_probs)
  return _weighted_mean(_per_state_entropy(probs, log_probs, mask, dtype), w, dtype)


@_checks.public
def discrete_loss(
  log_alpha: jax.Array,
  probs: jax.Array,
  log_probs: jax.Array,
  target: jax.Array,
  *,
  mask: jax.Array | None = None,
  weights: jax.Array | None = None,
  form: LossForm = "log",
) -> jax.Array:
  """Velora's / discrete SAC's temperature loss, exact over actions.

  `loss = log_alpha * stop_gradient(H - target)`, with `H = -mean_b sum_a probs[b, a] * log_probs[b, a]`
  (Christodoulou 2019, eq. 11: the expectation over actions is exact, not sampled). Alpha rises when `H < target`,
  falls when above. A term with `probs == 0` and `log_probs == -inf` counts as 0 (the limit of `p log p`); any other
  NaN or infinity propagates into the loss, so that `apply_gradients` can skip the update.

  Args:
    log_alpha: scalar, the log temperature.
    probs: `[B, A]` action probabilities. No gradient flows back into them.
    log_probs: `[B, A]` log action probabilities. No gradient flows back.
    target: scalar target entropy (typically `0.6 * log(A)`), or `[B]` (one per state, e.g. from a mask).
    mask: optional `[B, A]` bool, True where an action is valid; invalid actions are left out of the entropy.
    weights: optional `[B]` per-sample weights: `loss = log_alpha * mean_b(w_b * (H_b - target_b))`.
    form: `"log"` (default) or `"alpha"` (see `continuous_loss`).

  Returns:
    A scalar loss, in float32 for float32, bfloat16 or float16 inputs.
  """
  log_alpha = _checks.scalar("log_alpha", log_alpha)
  probs, log_probs, mask = _checks.discrete_inputs(probs, log_probs, mask)
  batch = probs.shape[0]
  target = _checks.batch_vector("target", target, batch)
  w = _checks.sample_weights(weights, batch)
  dtype = _checks.accumulation_dtype(probs, log_probs, target)
  h = _per_state_entropy(probs, log_probs, mask, dtype)  # [B]
  if target.ndim == 0:
    mean_w = 1.0 if w is None else jnp.mean(w, dtype=dtype)
    stat = _weighted_mean(h, w, dtype) - target.astype(dtype) * mean_w
  else:
    stat = _weighted_mean(h - target.astype(dtype), w, dtype)
  return _times_temperature(log_alpha, jax.lax.stop_gradient(stat), form)


def _per_state_entropy(probs, log_probs, mask, dtype) -> jax.Array:
  """`H_b = -sum_a p log p` over valid actions, accumulated in `dtype`."""
  p = probs.astype(dtype)
  lp = log_probs.astype(dtype)
  terms = jnp.where((p == 0) & (lp == -jnp.inf), jnp.zeros((), dtype), p * lp)
  if mask is not None:
    terms = jnp.where(mask, terms, jnp.zeros((), dtype))
  return -jnp.sum(terms, axis=-1)
