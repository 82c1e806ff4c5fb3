"""Tests of entropy_jax.update: apply_gradients and the fused updates."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from absl.testing import parameterized

from entropy_jax import (
    apply_gradients,
    continuous_loss,
    continuous_update,
    discrete_target,
    discrete_update,
    init_entropy_state,
    init_population,
)


def leaves_equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(np.array_equal(x, y, equal_nan=True) for x, y in zip(la, lb))


class ApplyGradientsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_sgd_closed_form(self):
    s = init_entropy_state(-1.0, initial_alpha=1.0, optimizer=optax.sgd(0.1))
    s = self.variant(apply_gradients)(s, jnp.float32(2.0))
    np.testing.assert_allclose(s.log_alpha, -0.2, rtol=1e-6)
    assert int(s.step) == 1 and int(s.skipped) == 0

  @chex.variants(with_jit=True, without_jit=True)
  def test_adam_first_step_is_lr_times_sign(self):
    s = init_entropy_state(-1.0, optimizer=optax.adam(3e-4))
    s = self.variant(apply_gradients)(s, jnp.float32(-5.0))
    np.testing.assert_allclose(s.log_alpha, 3e-4, rtol=1e-4)

  def test_bounds_clip(self):
    s = init_entropy_state(-1.0, initial_alpha=1.0, optimizer=optax.sgd(10.0), min_alpha=0.5, max_alpha=2.0)
    up = apply_gradients(s, jnp.float32(-1.0))
    down = apply_gradients(s, jnp.float32(1.0))
    np.testing.assert_allclose(up.alpha, 2.0, rtol=1e-6)
    np.testing.assert_allclose(down.alpha, 0.5, rtol=1e-6)

  @parameterized.parameters(np.nan, np.inf, -np.inf)
  def test_non_finite_gradient_is_skipped(self, bad):
    s = init_entropy_state(-1.0, optimizer=optax.adam(1e-2))
    s = apply_gradients(s, jnp.float32(1.0))
    skipped = jax.jit(apply_gradients)(s, jnp.float32(bad))
    assert int(skipped.skipped) == 1
    assert leaves_equal(skipped.replace(skipped=s.skipped), s)

  def test_schedule_sets_target_from_step(self):
    s = init_entropy_state(optax.linear_schedule(0.0, -10.0, 10), optimizer=optax.sgd(0.0))
    step = jax.jit(apply_gradients)
    for k in range(1, 4):
      s = step(s, jnp.float32(0.0))
      np.testing.assert_allclose(s.target, -float(k), rtol=1e-6)

  def test_rejects_non_scalar_grad(self):
    with pytest.raises(ValueError, match=r"grad.*scalar.*\(2,\)"):
      apply_gradients(init_entropy_state(-1.0), jnp.ones(2))


class FusedUpdateTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_continuous_matches_grad_then_apply(self):
    s = init_entropy_state(-2.0, initial_alpha=0.5)
    lp = jax.random.normal(jax.random.key(0), (256,)) - 1.0
    fused, metrics = self.variant(continuous_update)(s, lp)
    manual = apply_gradients(s, jax.grad(continuous_loss)(s.log_alpha, lp, s.target))
    assert leaves_equal(fused, manual)
    np.testing.assert_allclose(metrics["loss"], continuous_loss(s.log_alpha, lp, s.target), rtol=1e-6)
    np.testing.assert_allclose(metrics["entropy"], -jnp.mean(lp), rtol=1e-6)
    np.testing.assert_allclose(metrics["alpha"], fused.alpha)
    assert float(metrics["target"]) == -2.0 and int(metrics["skipped"]) == 0

  def test_alpha_rises_below_target_and_falls_above(self):
    step = jax.jit(continuous_update)
    # Entropy 1.0 (log_probs -1); target 3 > 1: alpha rises every step; target -3 < 1: falls.
    for target, sign in ((3.0, 1), (-3.0, -1)):
      s = init_entropy_state(target)
      for _ in range(20):
        new, _ = step(s, jnp.full((32,), -1.0))
        assert sign * (new.log_alpha - s.log_alpha) > 0
        s = new

  def test_discrete_alpha_direction(self):
    step = jax.jit(discrete_update)
    # Near-deterministic policy over 4 actions: H ~ 0.17 < 0.98 log 4: alpha must rise.
    logits = jnp.tile(jnp.array([5.0, 0.0, 0.0, 0.0]), (8, 1))
    p, lp = jax.nn.softmax(logits), jax.nn.log_softmax(logits)
    s = init_entropy_state(discrete_target(4))
    for _ in range(10):
      new, m = step(s, p, lp)
      assert new.log_alpha > s.log_alpha and m["entropy"] < m["target"]
      s = new
    # Uniform policy: H = log 4 > 0.98 log 4: alpha must fall (fresh state: no Adam momentum).
    s = init_entropy_state(discrete_target(4))
    u = jnp.full((8, 4), 0.25)
    new, _ = step(s, u, jnp.log(u))
    assert new.log_alpha < s.log_alpha

  def test_no_gradient_flows_into_policy_through_update(self):
    s = init_entropy_state(-1.0)
    g = jax.grad(lambda lp: continuous_update(s, lp)[0].log_alpha)(jnp.full((4,), -0.3))
    np.testing.assert_array_equal(g, jnp.zeros(4))
    p = jnp.full((3, 2), 0.5)
    g = jax.grad(lambda p: discrete_update(s, p, jnp.log(p))[0].log_alpha)(p)
    np.testing.assert_array_equal(g, jnp.zeros((3, 2)))


def test_jit_eager_and_vmap_agree_member_by_member():
  """Each member: own target, own batch, own learning rate (inject_hyperparams)."""
  n, b = 5, 64
  tx = optax.inject_hyperparams(optax.adam)(learning_rate=3e-4)
  targets = jnp.linspace(-3.0, 1.0, n)
  lrs = jnp.array([1e-4, 1e-3, 1e-2, 3e-2, 1e-1])
  pop = init_population(targets, initial_alpha=jnp.linspace(0.1, 1.0, n), optimizer=tx, learning_rate=lrs)
  batches = jax.random.normal(jax.random.key(7), (20, n, b)) - 1.0

  vstep = jax.jit(jax.vmap(continuous_update))
  pop_v = pop
  for t in range(20):
    pop_v, _ = vstep(pop_v, batches[t])

  jstep = jax.jit(continuous_update)
  for i in range(n):
    member = jax.tree.map(lambda x: x[i], pop)
    eager = jit = member
    for t in range(20):
      eager, _ = continuous_update(eager, batches[t, i])
      jit, _ = jstep(jit, batches[t, i])
    got = jax.tree.map(lambda x: x[i], pop_v)
    for a, e, j in zip(jax.tree.leaves(got), jax.tree.leaves(eager), jax.tree.leaves(jit)):
      np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-7)
      np.testing.assert_allclose(j, e, rtol=1e-6, atol=1e-7)
  # Members really did learn at different rates.
  assert len(set(np.round(np.asarray(pop_v.log_alpha - jnp.log(jnp.linspace(0.1, 1.0, n))), 6))) == n


def test_discrete_vmap_population_with_per_member_batches():
  n, b, a = 4, 16, 3
  pop = init_population(jnp.array([0.1, 0.5, 0.9, 1.0]))
  logits = jax.random.normal(jax.random.key(3), (n, b, a))
  p, lp = jax.nn.softmax(logits), jax.nn.log_softmax(logits)
  new, m = jax.jit(jax.vmap(discrete_update))(pop, p, lp)
  for i in range(n):
    one, mi = discrete_update(jax.tree.map(lambda x: x[i], pop), p[i], lp[i])
    np.testing.assert_allclose(new.log_alpha[i], one.log_alpha, rtol=1e-6)
    np.testing.assert_allclose(m["entropy"][i], mi["entropy"], rtol=1e-6)


def test_update_fuses_into_a_users_jitted_step_without_recompiling():
  traces = []

  @jax.jit
  def sac_step(state, lp):
    traces.append(1)  # runs only while tracing
    return continuous_update(state, lp)

  s = init_entropy_state(-1.0)
  for k in range(5):
    s, _ = sac_step(s, jnp.full((8,), -float(k)))
  assert len(traces) == 1 and int(s.step) == 5
