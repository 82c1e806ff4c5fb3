"""Tests of entropy_jax.losses: closed forms, a NumPy reference of Velora's formulas,
gradients, dtypes and trace-time shape checks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from entropy_jax import continuous_entropy, continuous_loss, discrete_entropy, discrete_loss


# --- An independent NumPy implementation of Velora 0.2.0's formulas (float64). ---
def np_velora_continuous(log_alpha, log_probs, target):
  # loss = -(log_alpha * (log_probs + target)).mean()
  return -np.mean(log_alpha * (np.asarray(log_probs, np.float64) + target))


def np_velora_discrete(log_alpha, probs, log_probs, target):
  # entropy_mean = -sum(probs * log_probs, dim=1).mean(); loss = log_alpha * (entropy_mean - target)
  p, lp = np.asarray(probs, np.float64), np.asarray(log_probs, np.float64)
  return log_alpha * (-np.sum(p * lp, axis=1).mean() - target)


def random_policy(key, batch, actions, dtype=jnp.float32):
  logits = 2.0 * jax.random.normal(key, (batch, actions))
  return jax.nn.softmax(logits).astype(dtype), jax.nn.log_softmax(logits).astype(dtype)


class ContinuousLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_closed_form_value_and_gradient(self):
    # mean(log_probs) = -2, target = -2: statistic = -4; loss = -0.3 * -4 = 1.2,
    # d loss / d log_alpha = 4 = H - target with H = 2.
    f = self.variant(jax.value_and_grad(continuous_loss))
    loss, grad = f(jnp.float32(0.3), jnp.array([-1.0, -2.0, -3.0]), jnp.float32(-2.0))
    np.testing.assert_allclose(loss, 1.2, rtol=1e-6)
    np.testing.assert_allclose(grad, 4.0, rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_column_vector_equals_vector(self):
    lp = jax.random.normal(jax.random.key(0), (64,)) - 1.0
    f = self.variant(continuous_loss)
    np.testing.assert_array_equal(f(0.5, lp, -3.0), f(0.5, lp[:, None], -3.0))

  @parameterized.parameters((1, 1), (256, 3), (7, 18))
  def test_matches_numpy_velora(self, batch, action_dim):
    rng = np.random.default_rng(batch * 100 + action_dim)
    for _ in range(5):
      log_alpha = rng.normal()
      lp = rng.normal(-action_dim, 2.0, size=(batch, 1)).astype(np.float32)
      ours = jax.jit(continuous_loss)(jnp.float32(log_alpha), lp, float(-action_dim))
      ref = np_velora_continuous(np.float32(log_alpha), lp, -action_dim)
      np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6 * abs(log_alpha) * action_dim)

  def test_no_gradient_reaches_log_probs(self):
    lp = jnp.array([-1.0, -0.5, -2.5])
    g = jax.grad(continuous_loss, argnums=(1, 2))(jnp.float32(0.7), lp, jnp.float32(-1.0))
    np.testing.assert_array_equal(g[0], jnp.zeros(3))
    np.testing.assert_array_equal(g[1], 0.0)

  def test_entropy_estimate(self):
    np.testing.assert_allclose(continuous_entropy(jnp.array([-1.0, -3.0])), 2.0)

  def test_gradient_sign_follows_entropy_gap(self):
    # Entropy 1 below target 2: gradient negative, so descent raises log_alpha.
    assert jax.grad(continuous_loss)(0.0, jnp.full(8, -1.0), -(-2.0)) < 0  # target +2 > H=1
    # Entropy 1 above target -3: gradient positive, descent lowers log_alpha.
    assert jax.grad(continuous_loss)(0.0, jnp.full(8, -1.0), -3.0) > 0

  def test_per_sample_target(self):
    lp = jnp.array([-1.0, -2.0])
    t = jnp.array([-1.0, -3.0])
    # mean(lp + t) = mean([-2, -5]) = -3.5
    np.testing.assert_allclose(jax.grad(continuous_loss)(0.0, lp, t), 3.5)


class DiscreteLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_closed_form_uniform_policy(self):
    # H = log 4 for a uniform policy over 4 actions; target 0.5 (well away from H,
    # so the expected value is not a float32 cancellation).
    probs = jnp.full((5, 4), 0.25)
    target = 0.5
    loss, grad = self.variant(jax.value_and_grad(discrete_loss))(
        jnp.float32(0.5), probs, jnp.log(probs), jnp.float32(target))
    np.testing.assert_allclose(grad, np.log(4) - target, rtol=1e-5)
    np.testing.assert_allclose(loss, 0.5 * (np.log(4) - target), rtol=1e-5)

  def test_zero_probability_with_minus_inf_log_counts_as_zero(self):
    probs = jnp.array([[0.5, 0.5], [1.0, 0.0]])
    log_probs = jnp.array([[np.log(0.5)] * 2, [0.0, -np.inf]])
    h = discrete_entropy(probs, log_probs)
    np.testing.assert_allclose(h, np.log(2) / 2, rtol=1e-6)

  def test_nan_propagates(self):
    probs = jnp.array([[0.5, 0.5]])
    log_probs = jnp.array([[jnp.nan, np.log(0.5)]])
    assert jnp.isnan(jax.grad(discrete_loss)(0.0, probs, log_probs, 0.5))

  @parameterized.parameters((1, 2), (256, 6), (33, 18))
  def test_matches_numpy_velora(self, batch, actions):
    key = jax.random.key(batch + actions)
    for i in range(5):
      probs, log_probs = random_policy(jax.random.fold_in(key, i), batch, actions)
      log_alpha = float(jax.random.normal(jax.random.fold_in(key, 100 + i)))
      target = 0.98 * np.log(1.0 / actions)  # Velora's own target value
      ours = jax.jit(discrete_loss)(jnp.float32(log_alpha), probs, log_probs, jnp.float32(target))
      ref = np_velora_discrete(np.float32(log_alpha), probs, log_probs, np.float32(target))
      np.testing.assert_allclose(ours, ref, rtol=1e-5)

  def test_no_gradient_reaches_policy(self):
    probs, log_probs = random_policy(jax.random.key(1), 4, 3)
    g = jax.grad(discrete_loss, argnums=(1, 2))(jnp.float32(0.3), probs, log_probs, 0.5)
    np.testing.assert_array_equal(g[0], jnp.zeros_like(probs))
    np.testing.assert_array_equal(g[1], jnp.zeros_like(probs))

  def test_gradient_sign_follows_entropy_gap(self):
    probs, log_probs = random_policy(jax.random.key(2), 16, 4)
    h = float(discrete_entropy(probs, log_probs))
    assert jax.grad(discrete_loss)(0.0, probs, log_probs, h + 0.1) < 0  # below target: alpha up
    assert jax.grad(discrete_loss)(0.0, probs, log_probs, h - 0.1) > 0  # above target: alpha down

  def test_mask_excludes_invalid_actions(self):
    # Valid actions [0, 1] uniform; the invalid action 2 has garbage that must not count.
    probs = jnp.array([[0.5, 0.5, 0.3]])
    log_probs = jnp.array([[np.log(0.5), np.log(0.5), 7.0]])
    mask = jnp.array([[True, True, False]])
    np.testing.assert_allclose(discrete_entropy(probs, log_probs, mask=mask), np.log(2), rtol=1e-6)


class DtypeTest(parameterized.TestCase):

  def test_float32_stays_float32(self):
    assert continuous_loss(jnp.float32(0.1), jnp.ones(4, jnp.float32), -1.0).dtype == jnp.float32
    p = jnp.full((2, 2), 0.5)
    assert discrete_loss(jnp.float32(0.1), p, jnp.log(p), 0.5).dtype == jnp.float32

  @parameterized.parameters(jnp.bfloat16, jnp.float16)
  def test_low_precision_accumulates_in_float32(self, dtype):
    # 4096 copies of -1.0078125 (exact in bf16/f16): a low-precision running sum would lose digits.
    lp = jnp.full((4096,), -1.0078125, dtype)
    g = jax.jit(jax.grad(continuous_loss))(jnp.float32(0.0), lp, jnp.float32(-1.0))
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(g, 2.0078125, rtol=1e-6)
    probs, log_probs = random_policy(jax.random.key(3), 512, 5, dtype)
    loss = discrete_loss(jnp.float32(1.0), probs, log_probs, 0.0)
    assert loss.dtype == jnp.float32
    ref = np_velora_discrete(1.0, np.asarray(probs, np.float32), np.asarray(log_probs, np.float32), 0.0)
    np.testing.assert_allclose(loss, ref, rtol=1e-5)

  def test_x64(self):
    with jax.enable_x64(True):
      lp = jnp.asarray(np.array([-1.0, -2.0]), jnp.float64)
      loss, grad = jax.jit(jax.value_and_grad(continuous_loss))(jnp.float32(0.5), lp, -1.0)
      np.testing.assert_allclose(grad, 2.5)
      assert grad.dtype == jnp.float32  # the gradient has log_alpha's dtype
      assert loss.dtype == jnp.float64


class ShapeCheckTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("matrix", (4, 2), r"\[B\] or \[B, 1\]; got shape \(4, 2\)"),
      ("rank3", (4, 1, 1), r"got shape \(4, 1, 1\)"),
      ("scalar", (), r"got shape \(\)"),
      ("empty", (0,), r"empty batch \(shape \(0,\)\)"),
  )
  def test_continuous_log_probs_shape(self, shape, msg):
    with pytest.raises(ValueError, match=msg):
      jax.jit(continuous_loss)(0.0, jnp.zeros(shape), -1.0)

  def test_continuous_integer_dtype(self):
    with pytest.raises(TypeError, match="floating-point.*int32"):
      continuous_loss(0.0, jnp.zeros(4, jnp.int32), -1.0)

  def test_continuous_non_scalar_log_alpha(self):
    with pytest.raises(ValueError, match=r"log_alpha.*scalar.*got shape \(3,\)"):
      continuous_loss(jnp.zeros(3), jnp.zeros(4), -1.0)

  def test_continuous_target_shape(self):
    with pytest.raises(ValueError, match=r"target.*\(4,\).*got shape \(3,\)"):
      continuous_loss(0.0, jnp.zeros(4), jnp.zeros(3))

  @parameterized.named_parameters(
      ("mismatch", (4, 3), (4, 2), r"same shape \[B, A\]; got \(4, 3\) and \(4, 2\)"),
      ("rank1", (4,), (4,), r"\[B, A\]; got shape \(4,\)"),
      ("empty_batch", (0, 3), (0, 3), r"empty batch"),
      ("no_actions", (4, 0), (4, 0), r"no actions"),
  )
  def test_discrete_shapes(self, p_shape, lp_shape, msg):
    with pytest.raises(ValueError, match=msg):
      jax.jit(discrete_loss)(0.0, jnp.ones(p_shape), jnp.zeros(lp_shape), 0.5)

  def test_discrete_mask_checks(self):
    p = jnp.full((2, 2), 0.5)
    with pytest.raises(TypeError, match="bool"):
      discrete_loss(0.0, p, jnp.log(p), 0.5, mask=jnp.ones((2, 2)))
    with pytest.raises(ValueError, match=r"mask.*\(2, 2\); got \(2, 3\)"):
      discrete_loss(0.0, p, jnp.log(p), 0.5, mask=jnp.ones((2, 3), bool))

  def test_weights_shape(self):
    with pytest.raises(ValueError, match=r"weights.*\(4,\).*got shape \(4, 1\)"):
      continuous_loss(0.0, jnp.zeros(4), -1.0, weights=jnp.ones((4, 1)))

  def test_unknown_form(self):
    with pytest.raises(ValueError, match="form.*'exp'"):
      continuous_loss(0.0, jnp.zeros(4), -1.0, form="exp")


def test_python_int_target_is_accepted():
  # A Velora-style integer target (-action_dim) means the same as the float.
  lp = jnp.array([-1.0, -2.0])
  assert continuous_loss(0.5, lp, -3) == continuous_loss(0.5, lp, -3.0)
  p = jnp.full((2, 2), 0.5)
  assert discrete_loss(0.5, p, jnp.log(p), 1) == discrete_loss(0.5, p, jnp.log(p), 1.0)
  with pytest.raises(TypeError, match="floating-point.*int32"):
    continuous_loss(0.5, lp, jnp.array(-3, jnp.int32))  # an integer *array* is still an error
