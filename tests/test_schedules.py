"""Tests of entropy_jax.schedules: target anneals and TES-SAC (Xu et al. 2021).

Closed forms are checked against optax's own schedules (independent code for
the same formula) and NumPy; population behaviour by comparing `vmap` with a
Python loop over members built one by one.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from entropy_jax import schedules
from entropy_jax.state import init_entropy_state
from entropy_jax.targets import discrete_target
from entropy_jax.update import apply_gradients, continuous_update, discrete_update
from _trees import assert_trees_equal

STEPS = jnp.arange(0, 60, dtype=jnp.int32)
SGD = optax.sgd(0.05)  # One instance: states built apart share their static fields.
KINDS = pytest.mark.parametrize("kind", ["linear", "cosine", "exponential"])


def stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


class TestAnnealClosedForm:

  def test_linear_matches_optax(self):
    ours = schedules.linear(1.5, 0.25, 40, begin=7)
    ref = optax.linear_schedule(1.5, 0.25, 40, transition_begin=7)
    np.testing.assert_allclose(jax.vmap(ours)(STEPS), jax.vmap(ref)(STEPS), rtol=1e-6)

  def test_cosine_matches_optax(self):
    ours = schedules.cosine(2.0, 0.5, 30)
    ref = optax.cosine_decay_schedule(2.0, 30, alpha=0.5 / 2.0)
    np.testing.assert_allclose(jax.vmap(ours)(STEPS), jax.vmap(ref)(STEPS), rtol=1e-6)

  def test_cosine_negative_targets_and_begin_numpy(self):
    # Continuous targets are negative: anneal -1 -> -6 after a 10-update hold.
    ours = jax.vmap(schedules.cosine(-1.0, -6.0, 25, begin=10))(STEPS)
    f = np.clip((np.arange(60) - 10) / 25.0, 0.0, 1.0)
    expected = -6.0 + 5.0 * 0.5 * (1.0 + np.cos(np.pi * f))
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)

  def test_exponential_matches_optax(self):
    ours = schedules.exponential(1.6, 0.2, 24, begin=5)
    ref = optax.exponential_decay(1.6, 24, 0.2 / 1.6, transition_begin=5, end_value=0.2)
    np.testing.assert_allclose(jax.vmap(ours)(STEPS), jax.vmap(ref)(STEPS), rtol=1e-5)

  def test_exponential_constant_factor_per_update(self):
    values = np.asarray(jax.vmap(schedules.exponential(-1.0, -8.0, 30))(STEPS[:31]))
    np.testing.assert_allclose(values[1:] / values[:-1], 8.0 ** (1 / 30), rtol=1e-5)

  @KINDS
  def test_endpoints_are_exact(self, kind):
    fn = getattr(schedules, kind)(0.9, 0.3, 17, begin=3)
    assert float(fn(0)) == float(np.float32(0.9)) == float(fn(3))
    assert float(fn(20)) == float(np.float32(0.3)) == float(fn(10_000))

  @KINDS
  def test_ratios_of_log_num_actions(self, kind):
    fn = getattr(schedules, kind)(0.98, 0.3, 10, num_actions=6)
    np.testing.assert_allclose(fn(0), discrete_target(6, 0.98), rtol=1e-6)
    np.testing.assert_allclose(fn(10), discrete_target(6, 0.3), rtol=1e-6)

  def test_invalid_parameters_name_the_values(self):
    with pytest.raises(ValueError, match=r"same sign.*start=1\.0.*end=-1\.0"):
      schedules.exponential(1.0, -1.0, 10)
    with pytest.raises(ValueError, match=r"`steps` must be >= 1; got 0"):
      schedules.linear(1.0, 0.0, 0)
    with pytest.raises(TypeError, match=r"`steps` must be an int.*10\.5"):
      schedules.cosine(1.0, 0.0, 10.5)
    with pytest.raises(ValueError, match=r"`start` must be finite"):
      schedules.linear(float("nan"), 0.0, 5)
    with pytest.raises(ValueError, match=r"`decay` must lie in \(0, 1\]; got 1\.5"):
      schedules.annealed_discrete_target(4, steps_per_drop=3, decay=1.5)


class TestStaircase:

  def test_matches_optax_staircase_and_numpy(self):
    a, t = 18, 7
    ours = jax.vmap(schedules.annealed_discrete_target(a, steps_per_drop=t, min_ratio=0.4, begin=2))(STEPS)
    h0 = 0.98 * math.log(a)
    ref = optax.exponential_decay(h0, t, 0.9, transition_begin=2, staircase=True, end_value=0.4 * math.log(a))
    np.testing.assert_allclose(ours, jax.vmap(ref)(STEPS), rtol=1e-6)
    drops = np.maximum(np.arange(60) - 2, 0) // t
    np.testing.assert_allclose(ours, np.maximum(h0 * 0.9**drops, 0.4 * math.log(a)), rtol=1e-6)
    assert float(ours[0]) == float(np.float32(h0))


class ScheduleInStateTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_update_k_uses_schedule_of_k(self):
    # SGD(lr) on the log-form loss: log_alpha_K = -lr * sum_k (H - target_k).
    fn = schedules.linear(-1.0, -3.0, 6)
    state = init_entropy_state(fn, optimizer=optax.sgd(0.1))
    log_probs = jnp.array([0.5, -1.5, 0.25])  # H = 0.25
    update = self.variant(continuous_update)
    used = []
    for _ in range(9):
      state, metrics = update(state, log_probs)
      used.append(float(metrics["target"]))
    expected = [float(fn(k)) for k in range(9)]
    np.testing.assert_array_equal(used, expected)
    assert float(state.target) == float(fn(9)) and int(state.step) == 9
    np.testing.assert_allclose(state.log_alpha, -0.1 * sum(0.25 - t for t in expected), rtol=1e-5)

  def test_skipped_update_keeps_the_schedule_position(self):
    state = init_entropy_state(schedules.linear(1.0, 0.0, 4), optimizer=optax.sgd(0.1))
    state = apply_gradients(state, jnp.nan)
    assert int(state.step) == 0 and int(state.skipped) == 1 and float(state.target) == 1.0
    state = apply_gradients(state, 0.0)
    assert float(state.target) == 0.75


STARTS = jnp.array([0.9, 0.7, 0.98])
ENDS = jnp.array([0.1, 0.35, 0.5])
LENGTHS = jnp.array([5, 9, 3], jnp.int32)


def make_schedule(kind, start, end, length):
  if kind == "staircase":
    return schedules.annealed_discrete_target(6, steps_per_drop=length, initial_ratio=start, min_ratio=end)
  return getattr(schedules, kind)(start, end, length, num_actions=6)


@pytest.mark.parametrize("kind", ["linear", "cosine", "exponential", "staircase"])
def test_schedule_vmap_per_member_parameters_equals_loop(kind):
  # Parameters built under vmap are [N] leaves; each member reads its own.
  values = jax.vmap(lambda s, e, n: jax.vmap(make_schedule(kind, s, e, n))(STEPS))(STARTS, ENDS, LENGTHS)
  for i in range(3):
    one = make_schedule(kind, float(STARTS[i]), float(ENDS[i]), int(LENGTHS[i]))
    assert_trees_equal(values[i], jax.vmap(one)(STEPS))


def test_population_of_scheduled_states_vmap_equals_loop():
  def init(start, end, length):
    return init_entropy_state(make_schedule("cosine", start, end, length), optimizer=SGD)

  probs = jax.nn.softmax(jnp.array([[0.1, 0.2, -1.0, 0.3, 0.0, 2.0], [1.0, 0.0, 0.0, 0.0, -1.0, 0.5]]))
  log_probs = jnp.log(probs)

  def run(state):
    def body(s, _):
      s, m = discrete_update(s, probs, log_probs)
      return s, m["target"]
    return jax.lax.scan(body, state, None, length=12)

  population = jax.vmap(init)(STARTS, ENDS, LENGTHS)
  final, targets = jax.jit(jax.vmap(run))(population)
  run_one = jax.jit(run)
  for i in range(3):
    member = init(float(STARTS[i]), float(ENDS[i]), int(LENGTHS[i]))
    final_i, targets_i = run_one(member)
    assert_trees_equal(targets[i], targets_i)
    assert_trees_equal(jax.tree.map(lambda x: x[i], final), final_i)
  np.testing.assert_allclose(targets[:, 0], STARTS * math.log(6), rtol=1e-6)
  np.testing.assert_allclose(targets[:, -1], jax.vmap(lambda s, e, n: make_schedule("cosine", s, e, n)(11))(
      STARTS, ENDS, LENGTHS), rtol=1e-6)


# ----------------------------------------------------------------------------
# TES-SAC feedback rule.


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
    s = schedules.tes_sac_update(s, entropy_fn(t, s.target))
    return s, (s.target, s.mean, s.var, s.count, s.drops)
  return jax.lax.scan(body, tes, jnp.arange(n))


class TestTesSac:

  def test_always_stable_is_the_staircase(self):
    # With infinite thresholds every update counts: H_n = H0 * decay^(n // T).
    a, t, n = 6, 4, 23
    tes = schedules.tes_sac_init(
        discrete_target(a), patience=t, mean_threshold=jnp.inf, std_threshold=jnp.inf)
    _, (targets, *_, drops) = jax.jit(scan_tes, static_argnums=(1, 2))(
        tes, lambda i, h: 0.5 * jnp.cos(i * 1.0), n)
    staircase = schedules.annealed_discrete_target(a, steps_per_drop=t)
    np.testing.assert_allclose(targets, jax.vmap(staircase)(jnp.arange(1, n + 1)), rtol=1e-6)
    np.testing.assert_array_equal(drops, np.arange(1, n + 1) // t)

  def test_matches_numpy_transcription_closed_loop(self):
    # A policy whose entropy tracks the target with noise: drops do happen.
    noise = np.asarray(jax.random.normal(jax.random.PRNGKey(0), (300,)), np.float32) * np.float32(0.02)
    entropy_fn_np = lambda t, h: np.float32(h) + noise[t] + np.float32(0.03)
    entropy_fn_jx = lambda t, h: h + jnp.asarray(noise)[t] + 0.03
    kw = dict(patience=6, decay=0.8, lam=0.9, mean_thr=0.05, std_thr=0.04)
    ref = tes_numpy(1.7, entropy_fn_np, 300, **kw)
    tes = schedules.tes_sac_init(
        1.7, patience=6, decay=0.8, smoothing=0.9, mean_threshold=0.05, std_threshold=0.04)
    final, (targets, means, vars_, counts, drops) = jax.jit(scan_tes, static_argnums=(1, 2))(
        tes, entropy_fn_jx, 300)
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
    tes = schedules.tes_sac_init(1.75, patience=5, smoothing=0.5, mean_threshold=0.5, std_threshold=0.6)
    _, (targets, *_, drops) = jax.jit(scan_tes, static_argnums=(1, 2))(tes, lambda i, h: e[i], 400)
    lower = 1.75 * 0.9 ** (np.arange(1, 401) // 5)
    assert int(drops[-1]) > 0
    assert np.all(np.asarray(targets) >= lower * (1 - 1e-6))

  def test_floor(self):
    tes = schedules.tes_sac_init(1.0, patience=1, decay=0.5, floor=0.3,
                                 mean_threshold=jnp.inf, std_threshold=jnp.inf)
    for _ in range(4):
      tes = schedules.tes_sac_update(tes, 0.2)
    assert float(tes.target) == np.float32(0.3) and int(tes.drops) == 4

  def test_non_finite_entropy_changes_nothing(self):
    tes = schedules.tes_sac_init(1.0, patience=3)
    tes = schedules.tes_sac_update(tes, 0.9)
    for bad in (jnp.nan, jnp.inf):
      chex.assert_trees_all_equal(jax.jit(schedules.tes_sac_update)(tes, bad), tes)  # Bit for bit.

  def test_first_observation_sets_the_mean(self):
    tes = schedules.tes_sac_update(schedules.tes_sac_init(1.0, patience=3), 0.4)
    assert float(tes.mean) == np.float32(0.4) and float(tes.var) == 0.0 and int(tes.count) == 0

  def test_vmap_per_member_hyperparameters_equals_loop(self):
    params = dict(
        initial_target=jnp.array([1.1, 1.2, 1.0]), patience=jnp.array([3, 5, 2], jnp.int32),
        decay=jnp.array([0.9, 0.5, 0.8]), smoothing=jnp.array([0.5, 0.8, 0.0]),
        mean_threshold=jnp.array([0.3, 0.2, 0.1]), std_threshold=jnp.array([0.5, 0.3, 0.2]))
    e = jax.random.uniform(jax.random.PRNGKey(3), (3, 80), minval=0.5, maxval=1.5)
    run = lambda tes, ent: jax.lax.scan(
        lambda s, x: (schedules.tes_sac_update(s, x), s.target), tes, ent)
    population = jax.vmap(lambda kw: schedules.tes_sac_init(**kw))(params)
    final, targets = jax.jit(jax.vmap(run))(population, e)
    run_one = jax.jit(run)
    for i in range(3):
      member = schedules.tes_sac_init(**{k: v[i] for k, v in params.items()})
      final_i, targets_i = run_one(member, e[i])
      assert_trees_equal(targets[i], targets_i)
      assert_trees_equal(jax.tree.map(lambda x: x[i], final), final_i)
    assert np.all(np.asarray(final.drops) > 0)

  def test_drives_discrete_update_target(self):
    # The documented wiring: TES writes `target` into a schedule-free state.
    probs = jnp.full((2, 4), 0.25)
    state = init_entropy_state(discrete_target(4, 1.0), optimizer=optax.sgd(0.1))
    tes = schedules.tes_sac_init(discrete_target(4, 1.0), patience=2, smoothing=0.0,
                                 mean_threshold=0.1, std_threshold=0.1)
    step = jax.jit(lambda s, t: _tes_step(s, t, probs))
    used = []
    for _ in range(6):
      state, tes, target_used = step(state, tes)
      used.append(float(target_used))
    h = math.log(4)
    np.testing.assert_allclose(used, [h, h, 0.9 * h, 0.9 * h, 0.9 * h, 0.9 * h], rtol=1e-6)
    assert float(state.target) == float(tes.target)

  def test_invalid_hyperparameters(self):
    with pytest.raises(ValueError, match=r"`smoothing` must lie in \[0, 1\); got 1\.0"):
      schedules.tes_sac_init(1.0, patience=3, smoothing=1.0)
    with pytest.raises(ValueError, match=r"`patience` must be >= 1; got 0"):
      schedules.tes_sac_init(1.0, patience=0)
    with pytest.raises(ValueError, match=r"`std_threshold` must be >= 0; got -0\.1"):
      schedules.tes_sac_init(1.0, patience=2, std_threshold=-0.1)
    with pytest.raises(ValueError, match=r"`entropy` must be a scalar.*\(2,\)"):
      schedules.tes_sac_update(schedules.tes_sac_init(1.0, patience=2), jnp.ones(2))


def _tes_step(state, tes, probs):
  state, metrics = discrete_update(state, probs, jnp.log(probs))
  tes = schedules.tes_sac_update(tes, metrics["entropy"])
  return state.replace(target=tes.target), tes, metrics["target"]
