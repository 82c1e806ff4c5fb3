"""Tests of entropy_jax.losses: closed forms, a NumPy reference of Velora's formulas,
gradients, loss forms, masks, weights, dtypes and trace-time argument checks."""

import math

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


def np_entropy(probs, log_probs, mask=None):
  """Per-state entropy `-sum_a p log p` in NumPy, with 0 log 0 = 0 and invalid actions left out."""
  probs, log_probs = np.asarray(probs, np.float64), np.asarray(log_probs, np.float64)
  terms = np.where(probs > 0, probs * np.where(probs > 0, log_probs, 0.0), 0.0)
  if mask is not None:
    terms = np.where(mask, terms, 0.0)
  return -terms.sum(-1)


def random_policy(key, batch, actions, dtype=jnp.float32):
  logits = 2.0 * jax.random.normal(key, (batch, actions))
  return jax.nn.softmax(logits).astype(dtype), jax.nn.log_softmax(logits).astype(dtype)


RNG = np.random.default_rng(0)
LOG_PROBS = jnp.asarray(RNG.normal(-1.0, 1.0, size=8), jnp.float32)  # [B]
WEIGHTS = jnp.asarray(RNG.uniform(0.2, 2.0, size=8), jnp.float32)
MASK = jnp.asarray(RNG.random((4, 5)) < 0.7).at[:, 0].set(True)  # [B, A], >= 1 valid action
_LOGITS = jnp.where(MASK, jnp.asarray(RNG.normal(size=(4, 5)), jnp.float32), -jnp.inf)
PROBS, LOG_PROBS_D = jax.nn.softmax(_LOGITS), jax.nn.log_softmax(_LOGITS)  # 0 / -inf where invalid


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
    assert jax.grad(continuous_loss)(0.0, jnp.full(8, -1.0), 2.0) < 0  # target +2 > H=1
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
      jnp.float32(0.5), probs, jnp.log(probs), jnp.float32(target)
    )
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


class LossFormTest(parameterized.TestCase):
  """log-form: d loss / d log_alpha = H - target; alpha-form: alpha * (H - target)."""

  @parameterized.parameters("log", "alpha")
  def test_gradients_closed_form(self, form):
    scale = math.exp(0.4) if form == "alpha" else 1.0
    h = -float(np.mean(np.asarray(LOG_PROBS, np.float64)))
    g = jax.grad(continuous_loss)(jnp.float32(0.4), LOG_PROBS, -2.0, form=form)
    np.testing.assert_allclose(g, scale * (h + 2.0), rtol=1e-5)
    h_d = float(np.mean(np_entropy(PROBS, LOG_PROBS_D)))
    g_d = jax.grad(discrete_loss)(jnp.float32(0.4), PROBS, LOG_PROBS_D, 0.5, form=form)
    np.testing.assert_allclose(g_d, scale * (h_d - 0.5), rtol=1e-5)

  def test_alpha_form_gradient_saturates_instead_of_overflowing(self):
    # A target the policy cannot reach drives alpha to the top of its range (log_alpha 88, alpha 1.65e38); there a
    # statistic of 5 (the target then lowered below the entropy) makes alpha * 5 overflow float32. The gradient
    # saturates at the float32 maximum with its sign, so apply_gradients sees a finite gradient.
    lp = jnp.full((4,), -1.0)  # H = 1
    g_up = jax.grad(continuous_loss)(jnp.float32(88.0), lp, 6.0, form="alpha")  # H - target = -5
    g_down = jax.grad(continuous_loss)(jnp.float32(88.0), lp, -4.0, form="alpha")  # +5
    assert float(g_up) == -float(np.finfo(np.float32).max)
    assert float(g_down) == float(np.finfo(np.float32).max)
    # Below the overflow it is the exact alpha * (H - target); NaN input stays NaN.
    np.testing.assert_allclose(
      jax.grad(continuous_loss)(jnp.float32(80.0), lp, 6.0, form="alpha"), -5.0 * np.exp(80.0), rtol=1e-5
    )
    assert np.isnan(jax.grad(continuous_loss)(jnp.float32(88.0), lp.at[0].set(jnp.nan), 6.0, form="alpha"))
    assert np.isinf(jax.grad(continuous_loss)(jnp.float32(0.0), lp.at[0].set(-jnp.inf), 6.0, form="alpha"))


class MaskTest(chex.TestCase):
  def test_masked_entropy_and_loss_numpy(self):
    # Garbage in the invalid slots must not leak into the result.
    p_bad = jnp.where(MASK, PROBS, 0.3)
    lp_bad = jnp.where(MASK, LOG_PROBS_D, jnp.nan)
    h = np_entropy(PROBS, LOG_PROBS_D, np.asarray(MASK))
    np.testing.assert_allclose(discrete_entropy(p_bad, lp_bad, mask=MASK), h.mean(), rtol=1e-6)
    loss = discrete_loss(jnp.float32(0.7), p_bad, lp_bad, 0.4, mask=MASK)
    np.testing.assert_allclose(loss, 0.7 * (h.mean() - 0.4), rtol=1e-5)

  def test_mask_excludes_invalid_actions(self):
    # Valid actions [0, 1] uniform; the invalid action 2 has garbage that must not count.
    probs = jnp.array([[0.5, 0.5, 0.3]])
    log_probs = jnp.array([[np.log(0.5), np.log(0.5), 7.0]])
    mask = jnp.array([[True, True, False]])
    np.testing.assert_allclose(discrete_entropy(probs, log_probs, mask=mask), np.log(2), rtol=1e-6)


class WeightsTest(chex.TestCase):
  def test_closed_forms(self):
    expected = -0.3 * np.mean(np.asarray(WEIGHTS) * (np.asarray(LOG_PROBS) - 2.0))
    np.testing.assert_allclose(continuous_loss(jnp.float32(0.3), LOG_PROBS, -2.0, weights=WEIGHTS), expected, rtol=1e-5)
    g = jax.grad(continuous_loss)(jnp.float32(0.3), LOG_PROBS, -2.0, weights=WEIGHTS)
    np.testing.assert_allclose(g, expected / 0.3, rtol=1e-5)
    wd = WEIGHTS[:4]
    h = np_entropy(PROBS, LOG_PROBS_D)
    np.testing.assert_allclose(
      discrete_loss(jnp.float32(0.3), PROBS, LOG_PROBS_D, 0.5, weights=wd),
      0.3 * np.mean(np.asarray(wd) * (h - 0.5)),
      rtol=1e-5,
    )
    # Unit weights: the unweighted value, -0.3 * (mean(lp) - 2).
    np.testing.assert_allclose(
      continuous_loss(jnp.float32(0.3), LOG_PROBS, -2.0, weights=jnp.ones(8)),
      -0.3 * (np.mean(np.asarray(LOG_PROBS, np.float64)) - 2.0),
      rtol=1e-5,
    )


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


# Argument checks: the message names the function, the argument and what came. All are trace-time checks (they also
# fire under jit).

LA = jnp.zeros(())
P, LP = random_policy(jax.random.key(0), 4, 3)

ARRAY_CASES = {  # (call, error, the argument named, what came)
  "cont log_probs rank 3": (
    lambda: continuous_loss(LA, jnp.zeros((2, 3, 1)), -1.0),
    ValueError,
    "log_probs",
    "(2, 3, 1)",
  ),
  "cont log_probs [B, 2]": (lambda: continuous_loss(LA, jnp.zeros((4, 2)), -1.0), ValueError, "log_probs", "(4, 2)"),
  "cont log_probs scalar": (lambda: continuous_loss(LA, jnp.zeros(()), -1.0), ValueError, "log_probs", "()"),
  "cont empty batch": (lambda: continuous_loss(LA, jnp.zeros((0,)), -1.0), ValueError, "log_probs", "(0,)"),
  "cont log_probs int32": (lambda: continuous_loss(LA, jnp.zeros(4, jnp.int32), -1.0), TypeError, "log_probs", "int32"),
  "cont log_probs bool": (lambda: continuous_loss(LA, jnp.zeros(4, bool), -1.0), TypeError, "log_probs", "bool"),
  "cont log_alpha [2]": (lambda: continuous_loss(jnp.zeros(2), jnp.zeros(4), -1.0), ValueError, "log_alpha", "(2,)"),
  "cont log_alpha int": (
    lambda: continuous_loss(jnp.zeros((), jnp.int32), jnp.zeros(4), -1.0),
    TypeError,
    "log_alpha",
    "int32",
  ),
  # A plain Python int target (-action_dim) is accepted as a float; an int array is not.
  "cont target int array": (
    lambda: continuous_loss(LA, jnp.zeros(4), jnp.array(-1, jnp.int32)),
    TypeError,
    "target",
    "int32",
  ),
  "cont target [3] vs B=4": (lambda: continuous_loss(LA, jnp.zeros(4), jnp.zeros(3)), ValueError, "target", "(3,)"),
  "cont weights [3] vs B=4": (
    lambda: continuous_loss(LA, jnp.zeros(4), -1.0, weights=jnp.ones(3)),
    ValueError,
    "weights",
    "(3,)",
  ),
  "cont weights [4, 1]": (
    lambda: continuous_loss(LA, jnp.zeros(4), -1.0, weights=jnp.ones((4, 1))),
    ValueError,
    "weights",
    "(4, 1)",
  ),
  "cont weights int": (
    lambda: continuous_loss(LA, jnp.zeros(4), -1.0, weights=jnp.ones(4, int)),
    TypeError,
    "weights",
    "int32",
  ),
  "cont form='exp'": (lambda: continuous_loss(LA, jnp.zeros(4), -1.0, form="exp"), ValueError, "form", "'exp'"),
  "disc probs [A]": (lambda: discrete_loss(LA, P[0], LP[0], 1.0), ValueError, "probs", "(3,)"),
  "disc probs rank 3": (lambda: discrete_loss(LA, P[None], LP[None], 1.0), ValueError, "probs", "(1, 4, 3)"),
  "disc A mismatch": (lambda: discrete_loss(LA, P, LP[:, :2], 1.0), ValueError, "log_probs", "(4, 2)"),
  "disc B mismatch": (lambda: discrete_loss(LA, P, LP[:2], 1.0), ValueError, "log_probs", "(2, 3)"),
  "disc empty batch": (lambda: discrete_loss(LA, P[:0], LP[:0], 1.0), ValueError, "probs", "(0, 3)"),
  "disc no actions": (lambda: discrete_loss(LA, P[:, :0], LP[:, :0], 1.0), ValueError, "probs", "(4, 0)"),
  "disc probs int32": (lambda: discrete_loss(LA, P.astype(jnp.int32), LP, 1.0), TypeError, "probs", "int32"),
  "disc log_probs int8": (lambda: discrete_loss(LA, P, LP.astype(jnp.int8), 1.0), TypeError, "log_probs", "int8"),
  "disc mask int": (
    lambda: discrete_loss(LA, P, LP, 1.0, mask=jnp.ones((4, 3), jnp.int32)),
    TypeError,
    "mask",
    "int32",
  ),
  "disc mask shape": (lambda: discrete_loss(LA, P, LP, 1.0, mask=jnp.ones((4, 2), bool)), ValueError, "mask", "(4, 2)"),
}


def assert_names(error, function, argument, got):
  """The message starts with the function called, and names the argument and what came."""
  message = str(error.value)
  assert message.startswith(f"{function}: ") and f"`{argument}`" in message and got in message, message


@pytest.mark.parametrize("case", sorted(ARRAY_CASES))
def test_bad_arguments_are_rejected_with_a_message(case):
  fn, error, argument, got = ARRAY_CASES[case]
  with pytest.raises(error) as e:
    fn()
  function = {"cont": "continuous_loss", "disc": "discrete_loss"}[case.split()[0]]
  assert_names(e, function, argument, got)


def test_argument_checks_fire_while_tracing_under_jit():
  for fn, args, argument, got in [
    (continuous_loss, (0.0, jnp.zeros((4, 2)), -1.0), "log_probs", "(4, 2)"),
    (discrete_loss, (0.0, P, LP[:, :2], 0.5), "log_probs", "(4, 2)"),
    (continuous_loss, (0.0, jnp.zeros((0,)), -1.0), "log_probs", "(0,)"),
  ]:
    with pytest.raises(ValueError) as e:
      jax.jit(fn)(*args)
    assert_names(e, fn.__name__, argument, got)


def test_python_int_target_is_accepted():
  # A Velora-style integer target (-action_dim) means the same as the float.
  lp = jnp.array([-1.0, -2.0])
  assert continuous_loss(0.5, lp, -3) == continuous_loss(0.5, lp, -3.0)
  p = jnp.full((2, 2), 0.5)
  assert discrete_loss(0.5, p, jnp.log(p), 1) == discrete_loss(0.5, p, jnp.log(p), 1.0)
  with pytest.raises(TypeError):
    continuous_loss(0.5, lp, jnp.array(-3, jnp.int32))  # an integer *array* is still an error
