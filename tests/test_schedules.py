"""Tests of entropy_jax.schedules: the target as a function of the update count.

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
from _trees import assert_trees_equal, assert_vmap_equals_loop, member

from entropy_jax import (
  annealed_discrete_target,
  apply_gradients,
  continuous_update,
  cosine_schedule,
  discrete_target,
  discrete_update,
  exponential_schedule,
  init_entropy_state,
  init_population,
  linear_schedule,
)

STEPS = jnp.arange(0, 60, dtype=jnp.int32)
SGD = optax.sgd(0.05)  # One instance: states built apart share their static fields.
SCHEDULES = {"linear": linear_schedule, "cosine": cosine_schedule, "exponential": exponential_schedule}
KINDS = pytest.mark.parametrize("kind", sorted(SCHEDULES))


class TestAnnealClosedForm:
  def test_linear_matches_optax(self):
    ours = linear_schedule(1.5, 0.25, 40, begin=7)
    ref = optax.linear_schedule(1.5, 0.25, 40, transition_begin=7)
    np.testing.assert_allclose(jax.vmap(ours)(STEPS), jax.vmap(ref)(STEPS), rtol=1e-6)

  def test_cosine_matches_optax(self):
    ours = cosine_schedule(2.0, 0.5, 30)
    ref = optax.cosine_decay_schedule(2.0, 30, alpha=0.5 / 2.0)
    np.testing.assert_allclose(jax.vmap(ours)(STEPS), jax.vmap(ref)(STEPS), rtol=1e-6)

  def test_cosine_negative_targets_and_begin_numpy(self):
    # Continuous targets are negative: anneal -1 -> -6 after a 10-update hold.
    ours = jax.vmap(cosine_schedule(-1.0, -6.0, 25, begin=10))(STEPS)
    f = np.clip((np.arange(60) - 10) / 25.0, 0.0, 1.0)
    expected = -6.0 + 5.0 * 0.5 * (1.0 + np.cos(np.pi * f))
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)

  def test_exponential_matches_optax(self):
    ours = exponential_schedule(1.6, 0.2, 24, begin=5)
    ref = optax.exponential_decay(1.6, 24, 0.2 / 1.6, transition_begin=5, end_value=0.2)
    np.testing.assert_allclose(jax.vmap(ours)(STEPS), jax.vmap(ref)(STEPS), rtol=1e-5)

  def test_exponential_constant_factor_per_update(self):
    values = np.asarray(jax.vmap(exponential_schedule(-1.0, -8.0, 30))(STEPS[:31]))
    np.testing.assert_allclose(values[1:] / values[:-1], 8.0 ** (1 / 30), rtol=1e-5)

  @KINDS
  def test_endpoints_are_exact(self, kind):
    fn = SCHEDULES[kind](0.9, 0.3, 17, begin=3)
    assert float(fn(0)) == float(np.float32(0.9)) == float(fn(3))
    assert float(fn(20)) == float(np.float32(0.3)) == float(fn(10_000))

  @KINDS
  def test_ratios_of_log_num_actions(self, kind):
    fn = SCHEDULES[kind](0.98, 0.3, 10, num_actions=6)
    np.testing.assert_allclose(fn(0), discrete_target(6, 0.98), rtol=1e-6)
    np.testing.assert_allclose(fn(10), discrete_target(6, 0.3), rtol=1e-6)

  def test_invalid_parameters_name_the_values(self):
    # The message names the function called, the argument and the value that came.
    cases = [
      (lambda: exponential_schedule(1.0, -1.0, 10), ValueError, r"exponential_schedule: `start` and `end`.*-1\.0"),
      (lambda: linear_schedule(1.0, 0.0, 0), ValueError, r"linear_schedule: `steps` .*got 0"),
      (lambda: cosine_schedule(1.0, 0.0, 10.5), TypeError, r"cosine_schedule: `steps` .*got 10\.5"),
      (lambda: linear_schedule(float("nan"), 0.0, 5), ValueError, r"linear_schedule: `start` .*got nan"),
      (
        lambda: annealed_discrete_target(4, steps_per_drop=3, decay=1.5),
        ValueError,
        r"annealed_discrete_target: `decay` .*got 1\.5",
      ),
      (lambda: cosine_schedule(1.0, 1e39, 10), ValueError, r"cosine_schedule: `end` .*got 1e\+39"),
    ]
    for fn, error, message in cases:
      with pytest.raises(error, match=f"^{message}"):
        fn()


class TestStaircase:
  def test_matches_optax_staircase_and_numpy(self):
    a, t = 18, 7
    ours = jax.vmap(annealed_discrete_target(a, steps_per_drop=t, min_ratio=0.4, begin=2))(STEPS)
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
    fn = linear_schedule(-1.0, -3.0, 6)
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
    state = init_entropy_state(linear_schedule(1.0, 0.0, 4), optimizer=optax.sgd(0.1))
    state = apply_gradients(state, jnp.nan)
    assert int(state.step) == 0 and int(state.skipped) == 1 and float(state.target) == 1.0
    state = apply_gradients(state, 0.0)
    assert float(state.target) == 0.75


STARTS = jnp.array([0.9, 0.7, 0.98])
ENDS = jnp.array([0.1, 0.35, 0.5])
LENGTHS = jnp.array([5, 9, 3], jnp.int32)


def make_schedule(kind, start, end, length):
  if kind == "staircase":
    return annealed_discrete_target(6, steps_per_drop=length, initial_ratio=start, min_ratio=end)
  return SCHEDULES[kind](start, end, length, num_actions=6)


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
    one = init(float(STARTS[i]), float(ENDS[i]), int(LENGTHS[i]))
    final_i, targets_i = run_one(one)
    assert_trees_equal(targets[i], targets_i)
    assert_trees_equal(member(final, i), final_i)
  np.testing.assert_allclose(targets[:, 0], STARTS * math.log(6), rtol=1e-6)
  np.testing.assert_allclose(
    targets[:, -1], jax.vmap(lambda s, e, n: make_schedule("cosine", s, e, n)(11))(STARTS, ENDS, LENGTHS), rtol=1e-6
  )


def test_an_optax_schedule_works_as_is():
  schedule = optax.piecewise_constant_schedule(-1.0, {2: 3.0, 4: 0.5})  # -1, -1, -3, -3, -1.5
  s = init_entropy_state(schedule, optimizer=optax.sgd(0.1))
  g = jnp.float32(0.25)
  targets, log_alphas = [], []
  step = jax.jit(apply_gradients)
  for _ in range(5):
    targets.append(float(s.target))
    s = step(s, g)
    log_alphas.append(float(s.log_alpha))
  assert targets == [-1.0, -1.0, -3.0, -3.0, -1.5]
  np.testing.assert_allclose(log_alphas, -0.1 * 0.25 * np.arange(1, 6), rtol=1e-6)
  assert float(s.target) == -1.5 and int(s.step) == 5


def test_a_partial_schedule_has_one_parameter_per_member():
  # `Partial` arguments are leaves: one schedule parameter per member.
  def my_schedule(step, init_value, slope):
    return init_value + slope * step

  inits, slopes = jnp.array([-1.0, -2.0, -4.0]), jnp.array([0.5, -0.25, 0.0])
  pop = init_population(inits, optimizer=SGD).replace(
    target_schedule=jax.tree_util.Partial(my_schedule, init_value=inits, slope=slopes)
  )
  grads = jnp.array([0.1, -0.3, 2.0])

  def two_steps(s, g):
    return apply_gradients(apply_gradients(s, g), g)

  out = assert_vmap_equals_loop(two_steps, pop, grads)
  np.testing.assert_allclose(out.target, inits + 2 * slopes, rtol=1e-6)
  np.testing.assert_allclose(out.log_alpha, -0.05 * 2 * grads, rtol=1e-6)
