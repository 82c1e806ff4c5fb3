"""Tests of entropy_jax.tes_sac: the TES-SAC target anneal (Xu et al. 2021, arXiv:2112.02852).

Checked against a float32 NumPy transcription of Algorithm 1 over a closed
loop, against the staircase schedule when every update is stable, never to
anneal faster than that staircase, and under vmap against a loop.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _trees import assert_bit_identical, assert_trees_equal, member

from entropy_jax import (
  annealed_discrete_target,
  discrete_target,
  discrete_update,
  init_entropy_state,
  tes_sac_init,
  tes_sac_update,
)


def tes_numpy(h0, entropy_fn, n, *, patience, decay, lam, mean_thr, std_thr, floor=0.0):
  """Float32 NumPy transcription of Xu et al. 2021, Algorithm 1 (+ our mu init)."""
  f = np.float32
  target, mean, var, count, drops = f(h0), f(0), f(0), 0, 0
  lam, decay, mean_thr, std_thr = f(lam), f(decay), f(mean_thr), f(std_thr)
  out = []
  for t in range(n):
    e = f(entropy_fn(t, target))
    if t == 0:
      mean, var = e, f(0)
    else:
      delta = f(e - mean)
      mean = f(mean + f(f(1) - lam) * delta)
      var = f(lam * f(var + f(f(f(1) - lam) * delta) * delta))  # JAX's order.
    if abs(f(mean - target)) < mean_thr and np.sqrt(var) <= std_thr:
      count += 1
    if count >= patience:
      count, drops = 0, drops + 1
      target = max(f(target * decay), f(floor))
    out.append((target, mean, var, count, drops))
  return out


def scan_tes(tes, entropy_fn, n):
  def body(s, t):
    s = tes_sac_update(s, entropy_fn(t, s.target))
    return s, (s.target, s.mean, s.var, s.stable, s.drops)

  return jax.lax.scan(body, tes, jnp.arange(n))


class TestTesSac:
  def test_always_stable_is_the_staircase(self):
    # With infinite thresholds every update counts: H_n = H0 * decay^(n // T).
    a, t, n = 6, 4, 23
    tes = tes_sac_init(discrete_target(a, 0.98), patience=t, mean_threshold=jnp.inf, std_threshold=jnp.inf)
    _, (targets, *_, drops) = jax.jit(scan_tes, static_argnums=(1, 2))(tes, lambda i, h: 0.5 * jnp.cos(i * 1.0), n)
    staircase = annealed_discrete_target(a, steps_per_drop=t)
    np.testing.assert_allclose(targets, jax.vmap(staircase)(jnp.arange(1, n + 1)), rtol=1e-6)
    np.testing.assert_array_equal(drops, np.arange(1, n + 1) // t)

  def test_matches_numpy_transcription_closed_loop(self):
    # A policy whose entropy tracks the target with noise: drops do happen.
    noise = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (300,)), np.float32) * np.float32(0.02)
    entropy_fn_np = lambda t, h: np.float32(h) + noise[t] + np.float32(0.03)
    entropy_fn_jx = lambda t, h: h + jnp.asarray(noise)[t] + 0.03
    kw = dict(patience=6, decay=0.8, lam=0.9, mean_thr=0.05, std_thr=0.04)
    ref = tes_numpy(1.7, entropy_fn_np, 300, **kw)
    tes = tes_sac_init(1.7, patience=6, decay=0.8, smoothing=0.9, mean_threshold=0.05, std_threshold=0.04)
    final, (targets, means, vars_, counts, drops) = jax.jit(scan_tes, static_argnums=(1, 2))(tes, entropy_fn_jx, 300)
    ref_t, ref_m, ref_v, ref_c, ref_d = map(np.array, zip(*ref))
    assert ref_d[-1] >= 5  # The test exercises several drops.
    np.testing.assert_array_equal(drops, ref_d)
    np.testing.assert_array_equal(counts, ref_c)
    np.testing.assert_allclose(targets, ref_t, rtol=1e-6)
    np.testing.assert_allclose(means, ref_m, rtol=1e-5)
    np.testing.assert_allclose(vars_, ref_v, rtol=1e-4, atol=1e-9)
    assert int(final.observed) == 300

  @pytest.mark.parametrize("seed", [1, 2])
  def test_never_below_the_staircase(self, seed):
    # Drops need T stable updates each, so H_n >= H0 * decay^(n // T).
    e = jax.random.uniform(jax.random.PRNGKey(seed), (400,), minval=0.0, maxval=1.8)
    tes = tes_sac_init(1.75, patience=5, smoothing=0.5, mean_threshold=0.5, std_threshold=0.6)
    _, (targets, *_, drops) = jax.jit(scan_tes, static_argnums=(1, 2))(tes, lambda i, h: e[i], 400)
    lower = 1.75 * 0.9 ** (np.arange(1, 401) // 5)
    assert int(drops[-1]) > 0
    assert np.all(np.asarray(targets) >= lower * (1 - 1e-6))

  def test_floor(self):
    tes = tes_sac_init(1.0, patience=1, decay=0.5, floor=0.3, mean_threshold=jnp.inf, std_threshold=jnp.inf)
    for _ in range(4):
      tes = tes_sac_update(tes, 0.2)
    assert float(tes.target) == np.float32(0.3) and int(tes.drops) == 4

  def test_non_finite_entropy_changes_nothing(self):
    tes = tes_sac_init(1.0, patience=3)
    tes = tes_sac_update(tes, 0.9)
    for bad in (jnp.nan, jnp.inf):
      assert_bit_identical(jax.jit(tes_sac_update)(tes, bad), tes)

  def test_first_observation_sets_the_mean(self):
    tes = tes_sac_update(tes_sac_init(1.0, patience=3), 0.4)
    assert float(tes.mean) == np.float32(0.4) and float(tes.var) == 0.0 and int(tes.stable) == 0

  def test_vmap_per_member_hyperparameters_equals_loop(self):
    params = dict(
      initial_target=jnp.array([1.1, 1.2, 1.0]),
      patience=jnp.array([3, 5, 2], jnp.int32),
      decay=jnp.array([0.9, 0.5, 0.8]),
      smoothing=jnp.array([0.5, 0.8, 0.0]),
      mean_threshold=jnp.array([0.3, 0.2, 0.1]),
      std_threshold=jnp.array([0.5, 0.3, 0.2]),
    )
    e = jax.random.uniform(jax.random.PRNGKey(3), (3, 80), minval=0.5, maxval=1.5)
    run = lambda tes, ent: jax.lax.scan(lambda s, x: (tes_sac_update(s, x), s.target), tes, ent)
    population = jax.vmap(lambda kw: tes_sac_init(**kw))(params)
    final, targets = jax.jit(jax.vmap(run))(population, e)
    run_one = jax.jit(run)
    for i in range(3):
      one = tes_sac_init(**{k: v[i] for k, v in params.items()})
      final_i, targets_i = run_one(one, e[i])
      assert_trees_equal(targets[i], targets_i)
      assert_trees_equal(member(final, i), final_i)
    assert np.all(np.asarray(final.drops) > 0)

  def test_drives_discrete_update_target(self):
    # The documented wiring: TES writes `target` into a schedule-free state.
    probs = jnp.full((2, 4), 0.25)
    state = init_entropy_state(discrete_target(4, 1.0), optimizer=optax.sgd(0.1))
    tes = tes_sac_init(discrete_target(4, 1.0), patience=2, smoothing=0.0, mean_threshold=0.1, std_threshold=0.1)
    step = jax.jit(lambda s, t: _tes_step(s, t, probs))
    used = []
    for _ in range(6):
      state, tes, target_used = step(state, tes)
      used.append(float(target_used))
    h = math.log(4)
    np.testing.assert_allclose(used, [h, h, 0.9 * h, 0.9 * h, 0.9 * h, 0.9 * h], rtol=1e-6)
    assert float(state.target) == float(tes.target)

  def test_invalid_hyperparameters(self):
    # The message names the function called, the argument and the value that came.
    cases = [
      (lambda: tes_sac_init(1.0, patience=3, smoothing=1.0), r"tes_sac_init: `smoothing` .*got 1\.0"),
      (lambda: tes_sac_init(1.0, patience=0), r"tes_sac_init: `patience` .*got 0"),
      (lambda: tes_sac_init(1.0, patience=2, std_threshold=-0.1), r"tes_sac_init: `std_threshold` .*got -0\.1"),
      (lambda: tes_sac_update(tes_sac_init(1.0, patience=2), jnp.ones(2)), r"tes_sac_update: `entropy` .*\(2,\)"),
    ]
    for fn, message in cases:
      with pytest.raises(ValueError, match=f"^{message}"):
        fn()


def _tes_step(state, tes, probs):
  state, metrics = discrete_update(state, probs, jnp.log(probs))
  tes = tes_sac_update(tes, metrics["entropy"])
  return state.replace(target=tes.target), tes, metrics["target"]
