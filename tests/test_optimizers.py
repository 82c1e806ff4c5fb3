"""Tests of entropy_jax.optimizers: the default Adam and PyTorch's optimizers in optax.

Each update rule is checked against a float64 NumPy transcription of
PyTorch's, or in closed form; the default optimizer is checked to be shared
by both APIs, pow-free, and usable under `optax.inject_hyperparams`.
"""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
from _trees import assert_bit_identical

import entropy_jax as ej
from entropy_jax import optimizers
from entropy_jax.compat import EntropyModule


def run(tx, grads, p0=0.0):
  """Applies `tx` to a scalar parameter for each gradient; returns the parameters after each step."""
  update = jax.jit(lambda p, s, g: tx.update(g, s, p))
  p, state, out = jnp.float32(p0), tx.init(jnp.float32(p0)), []
  for g in np.asarray(grads, np.float32):
    u, state = update(p, state, g)
    p = optax.apply_updates(p, u)
    out.append(float(p))
  return np.array(out)


def torch_adam_reference(grads, lr, weight_decay=0.0, p=0.0):
  """torch.optim.Adam / AdamW (single-tensor path) in float64 NumPy.

  AdamW multiplies the float32 parameter by `1 - lr * weight_decay`, a
  Python float that becomes float32 in the product: that rounding is kept.
  """
  m = v = 0.0
  out = []
  decay = float(np.float32(1 - lr * weight_decay))
  for t, g in enumerate(grads, start=1):
    p *= decay
    m = 0.9 * m + 0.1 * g
    v = 0.999 * v + 0.001 * g * g
    p -= lr / (1 - 0.9**t) * m / (np.sqrt(v) / np.sqrt(1 - 0.999**t) + 1e-8)
    out.append(p)
  return np.array(out)


GRADS = np.random.default_rng(1).uniform(0.5, 3.0, size=300) * np.where(
  np.random.default_rng(2).uniform(size=300) < 0.8, 1, -1
)


def test_adam_matches_a_float64_reference_of_pytorchs_adam():
  # float32 rounding only; optax.adam's float32 bias correction is up to 1e-5 off.
  np.testing.assert_allclose(run(ej.adam(1e-2), GRADS), torch_adam_reference(GRADS, 1e-2), rtol=1e-6)
  off = np.max(np.abs(run(optax.adam(1e-2), GRADS) / torch_adam_reference(GRADS, 1e-2) - 1))
  assert off > 1e-6  # the comparison can tell the two bias corrections apart


def test_adamw_matches_pytorchs_with_weight_decay_0_01():
  tx = optimizers.adamw(1e-2)
  # From p = 3 the parameter stays far from 0, where a relative comparison
  # holds. The float32 trajectory drifts from the float64 reference by its own
  # rounding, about 1.5e-6 relative after 300 steps (PyTorch's float32 run
  # shows the same, see test_compat_velora.py); optax.adamw's float32 bias
  # correction is further off.
  want = torch_adam_reference(GRADS, 1e-2, 0.01, p=3.0)
  np.testing.assert_allclose(run(tx, GRADS, p0=3.0), want, rtol=2e-6)
  off = np.max(np.abs(run(optax.adamw(1e-2, weight_decay=0.01), GRADS, p0=3.0) / want - 1))
  assert off > 2e-6
  # A zero gradient leaves only the decoupled decay: p <- p (1 - lr * 0.01).
  np.testing.assert_allclose(run(tx, [0.0], p0=1.0), [1.0 - 1e-2 * 0.01], rtol=1e-7)


def test_rmsprop_eps_is_outside_the_square_root_and_alpha_is_0_99():
  # Torch: v = 0.01 g^2, step = lr * g / (sqrt(v) + 1e-8). For g = 1e-7 that is
  # 5 lr; with eps inside the root it would be ~1e-3 lr, with decay 0.9 3.2 lr.
  g = np.float32(1e-7)
  got = run(optimizers.rmsprop(1e-2), [g])
  np.testing.assert_allclose(got, [-1e-2 * g / (np.sqrt(0.01 * g * g) + 1e-8)], rtol=1e-5)


def test_sgd_and_adam_first_steps():
  np.testing.assert_allclose(run(optax.sgd(0.5), [2.0]), [-1.0], rtol=1e-6)
  # Adam's first step: m_hat = g, v_hat = g^2, so lr * g / (|g| + eps).
  np.testing.assert_allclose(run(ej.adam(1e-2), [2.0]), [-1e-2 * 2.0 / (2.0 + 1e-8)], rtol=1e-6)


def test_both_apis_share_the_default_optimizer():
  state = ej.init_entropy_state(-2.0)
  module = EntropyModule(2)  # Velora's defaults: optim "Adam", lr 3e-4
  lps = np.random.default_rng(0).normal(-1.0, 1.0, size=(50, 8)).astype(np.float32)
  update = jax.jit(ej.continuous_update)
  for lp in lps:
    state, _ = update(state, lp)
    module.gradient_step(module.compute_loss(lp))
  assert_bit_identical(module.state.replace(tx=state.tx), state)
  assert ej.init_population(-1.0, size=2).tx is state.tx  # one shared default instance


def test_the_default_adam_has_no_pow_and_optax_adam_has():
  def primitives(tx):
    jaxpr = jax.make_jaxpr(lambda g, s: tx.update(g, s))(jnp.float32(1.0), tx.init(jnp.float32(0.0)))
    return {e.primitive.name for e in jaxpr.jaxpr.eqns} | {
      e.primitive.name
      for eqn in jaxpr.jaxpr.eqns
      for sub in jax.extend.core.jaxprs_in_params(eqn.params)
      for e in sub.eqns
    }

  assert "pow" not in primitives(ej.adam(3e-4))
  assert "pow" in primitives(optax.adam(3e-4))


def test_injected_learning_rates_give_each_member_its_own():
  lrs = jnp.array([1e-4, 1e-3, 1e-2])
  pop = ej.init_population(-1.0, optimizer=optax.inject_hyperparams(ej.adam)(learning_rate=3e-4), learning_rate=lrs)
  new, _ = jax.jit(jax.vmap(ej.continuous_update))(pop, jnp.full((3, 4), 2.0))  # H = -2 < -1: rise
  np.testing.assert_allclose(new.log_alpha, lrs * 2.0 / (2.0 + 1e-8), rtol=1e-5)
  # Under inject_hyperparams b1 and b2 are float32 arrays; the bias correction
  # is still within float32 rounding of PyTorch's.
  tx = optax.inject_hyperparams(ej.adam)(learning_rate=1e-2)
  np.testing.assert_allclose(run(tx, GRADS[:50]), torch_adam_reference(GRADS[:50], 1e-2), rtol=2e-5)
