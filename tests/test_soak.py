"""Soak (issue 6): 1,000,000 updates inside one `lax.scan` on random inputs.

(Plus a shorter discrete soak: a masked two-member population under vmap.)

The inputs are drawn inside the scan from a key (a chunk of 1,000 batches at a
time, so the random draws are vectorized) and swing the policy's entropy far
above and below the target, so alpha is driven into both bounds again and
again. One batch in every 1,000 carries a NaN. At the end: log_alpha is
finite, it never left the bounds at any step (a running min/max is carried),
both bounds were reached, and exactly one update per NaN batch was skipped.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from entropy_jax.state import init_entropy_state, init_population
from entropy_jax.update import continuous_update, discrete_update

STEPS = 1_000_000
CHUNK = 1_000
BATCH = 4
# The "rbg" generator: threefry's program takes 3-7x longer to compile on CPU.
KEY = jax.random.key(0, impl="rbg")


def soak(state, update, draw, steps=STEPS):
  """Runs `steps` updates; returns (state, min log_alpha, max log_alpha) over all steps."""

  def chunk(carry, c):
    inputs = draw(jax.random.fold_in(KEY, c))

    def step(carry, x):
      state, lo, hi = carry
      state = update(state, x)
      return (state, jnp.minimum(lo, state.log_alpha), jnp.maximum(hi, state.log_alpha)), None

    return jax.lax.scan(step, carry, inputs)[0], None

  carry = (state, state.log_alpha, state.log_alpha)
  return jax.jit(lambda carry: jax.lax.scan(chunk, carry, jnp.arange(steps // CHUNK))[0])(carry)


def draw_log_probs(key):
  k1, k2 = jax.random.split(key)
  # The entropy drifts for a whole chunk (mean in [-3, 3]), then jumps: runs
  # of 1,000 same-signed gradients drive alpha into one bound or the other.
  shift = jax.random.uniform(k1, (), minval=-3.0, maxval=3.0)
  lps = jax.random.normal(k2, (CHUNK, BATCH)) + shift
  return lps.at[-1, 0].set(jnp.nan)  # one non-finite batch per chunk


def test_one_million_continuous_updates():
  lo, hi = 1e-3, 10.0
  state = init_entropy_state(0.0, optimizer=optax.adam(1e-2), min_alpha=lo, max_alpha=hi)
  final, low, high = soak(state, lambda s, lp: continuous_update(s, lp)[0], draw_log_probs)
  log_lo, log_hi = np.float32(math.log(lo)), np.float32(math.log(hi))
  assert np.isfinite(final.log_alpha)
  assert log_lo <= final.log_alpha <= log_hi
  assert low == log_lo and high == log_hi  # both bounds were hit and held
  assert int(final.skipped) == STEPS // CHUNK
  assert int(final.step) == STEPS - STEPS // CHUNK
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(final.opt_state))


def test_discrete_population_updates():
  # 200,000 steps (the discrete update costs ~5x the continuous one on CPU).
  # Two members under vmap, alpha-form loss, 6 actions of which a random
  # subset is masked out per state; logits scaled from near-uniform to
  # near-deterministic so the entropy crosses the target both ways.
  actions, lo, hi = 6, jnp.array([1e-4, 1e-2]), jnp.array([1.0, 100.0])

  def draw(key):
    z = jax.random.normal(key, (CHUNK, 2, BATCH, 2 * actions + 1))
    scale = jnp.exp(3.0 * jnp.tanh(z[:, :, :1, -1:]))  # per step and member, in (e^-3, e^3)
    logits = scale * z[..., :actions]
    mask = (z[..., actions:2 * actions] > -0.5).at[..., 0].set(True)  # ~70% of actions valid
    logits = jnp.where(mask, logits, -jnp.inf)
    probs, log_probs = jax.nn.softmax(logits), jax.nn.log_softmax(logits)
    return probs.at[-1, 1, 0, 0].set(jnp.nan), log_probs, mask  # member 1: one NaN per chunk

  def update(pop, x):
    probs, log_probs, mask = x
    step = lambda s, p, lp, m: discrete_update(s, p, lp, mask=m)[0]
    return jax.vmap(step)(pop, probs, log_probs, mask)

  adam = optax.adam(3e-3)  # one instance: the members share their static fields
  pops = [init_population(0.5 * math.log(actions), optimizer=adam, loss_form="alpha",
                          min_alpha=float(lo[i]), max_alpha=float(hi[i]), size=1) for i in range(2)]
  pop = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), *pops)
  steps = 200_000
  final, low, high = soak(pop, update, draw, steps)
  np.testing.assert_allclose(final.log_alpha_min, np.log(lo), rtol=1e-6)
  np.testing.assert_allclose(final.log_alpha_max, np.log(hi), rtol=1e-6)
  assert np.all(np.isfinite(final.log_alpha))
  assert np.all(final.log_alpha_min <= low) and np.all(high <= final.log_alpha_max)
  np.testing.assert_array_equal(final.skipped, [0, steps // CHUNK])
  np.testing.assert_array_equal(final.step, [steps, steps - steps // CHUNK])
