"""Issue 7's features, each proved by a closed form and a vmap-vs-loop check.

Loss forms, target schedules, action masks, sample weights, per-member
hyperparameters and the fixed-alpha mode. Expected values are computed by
hand or with NumPy from the formula in the docstring each feature cites.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from entropy_jax.losses import continuous_loss, discrete_entropy, discrete_loss
from entropy_jax.state import fixed_alpha_state, init_entropy_state, init_population
from entropy_jax.targets import masked_discrete_target
from entropy_jax.update import apply_gradients, continuous_update, discrete_update
from _trees import assert_trees_equal

SGD = optax.sgd(0.1)  # One instance: states built apart share their static fields.
LR_SGD = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)


def member(tree, i):
  return jax.tree.map(lambda x: x[i], tree)


def assert_vmap_equals_loop(fn, population, *args):
  """`jit(vmap(fn))` on the population equals `jit(fn)` member by member."""
  batched = jax.jit(jax.vmap(fn))(population, *args)
  one = jax.jit(fn)
  n = jax.tree.leaves(population)[0].shape[0]
  for i in range(n):
    assert_trees_equal(member(batched, i), one(member(population, i), *(member(a, i) for a in args)))
  return batched


def np_entropy(probs, log_probs, mask=None):
  terms = np.where(probs > 0, probs * np.where(probs > 0, log_probs, 0.0), 0.0)  # 0 log 0 = 0.
  if mask is not None:
    terms = np.where(mask, terms, 0.0)
  return -terms.sum(-1)


RNG = np.random.default_rng(0)
LOG_PROBS = jnp.asarray(RNG.normal(-1.0, 1.0, size=(3, 8)), jnp.float32)  # [N, B]
LOGITS = RNG.normal(size=(3, 4, 5)).astype(np.float32)  # [N, B, A]
MASKS = jnp.asarray(RNG.random((3, 4, 5)) < 0.7).at[..., 0].set(True)  # >= 1 valid.
PROBS = jax.nn.softmax(jnp.where(MASKS, LOGITS, -jnp.inf))  # 0 on invalid actions.
LOG_PROBS_D = jax.nn.log_softmax(jnp.where(MASKS, LOGITS, -jnp.inf))  # -inf there.
WEIGHTS = jnp.asarray(RNG.uniform(0.2, 2.0, size=(3, 8)), jnp.float32)


# ----------------------------------------------------------------------------
# Loss forms.


class TestLossForms:

  @pytest.mark.parametrize("form", ["log", "alpha"])
  def test_gradients_closed_form(self, form):
    log_alpha, target = jnp.float32(0.4), -2.0
    h = -float(np.mean(LOG_PROBS[0]))
    scale = math.exp(0.4) if form == "alpha" else 1.0
    g = jax.grad(continuous_loss)(log_alpha, LOG_PROBS[0], target, form=form)
    np.testing.assert_allclose(g, scale * (h - target), rtol=1e-5)
    probs, log_probs = PROBS[0], LOG_PROBS_D[0]
    h_d = float(np.mean(np_entropy(np.asarray(probs), np.asarray(log_probs))))
    g_d = jax.grad(discrete_loss)(log_alpha, probs, log_probs, 0.5, form=form)
    np.testing.assert_allclose(g_d, scale * (h_d - 0.5), rtol=1e-5)

  def test_alpha_form_state_sgd_step(self):
    # SGD: log_alpha' = log_alpha - lr * alpha * (H - target).
    s = init_entropy_state(-2.0, initial_alpha=0.5, optimizer=SGD, loss_form="alpha")
    s1, m = jax.jit(continuous_update)(s, LOG_PROBS[0])
    h = -float(np.mean(LOG_PROBS[0]))
    np.testing.assert_allclose(s1.log_alpha, math.log(0.5) - 0.1 * 0.5 * (h + 2.0), rtol=1e-5)
    np.testing.assert_allclose(m["loss"], -0.5 * (-h - 2.0), rtol=1e-5)
    s_log, _ = jax.jit(continuous_update)(s.replace(loss_form="log"), LOG_PROBS[0])
    np.testing.assert_allclose(s_log.log_alpha, math.log(0.5) - 0.1 * (h + 2.0), rtol=1e-5)

  @pytest.mark.parametrize("form", ["log", "alpha"])
  def test_vmap_equals_loop(self, form):
    pop = init_population(jnp.array([-1.0, 0.3, 1.2]), initial_alpha=jnp.array([0.2, 1.0, 3.0]),
                          optimizer=SGD, loss_form=form)
    out = assert_vmap_equals_loop(lambda s, p, lp: discrete_update(s, p, lp), pop, PROBS, LOG_PROBS_D)
    h = np.mean(np_entropy(np.asarray(PROBS), np.asarray(LOG_PROBS_D)), -1)
    alpha0 = np.array([0.2, 1.0, 3.0])
    scale = alpha0 if form == "alpha" else 1.0
    expected = np.log(alpha0) - 0.1 * scale * (h - np.array([-1.0, 0.3, 1.2]))
    np.testing.assert_allclose(out[0].log_alpha, expected, rtol=1e-5)

  def test_unknown_form_names_it(self):
    with pytest.raises(ValueError, match=r"one of \('log', 'alpha'\); got 'exp'"):
      init_entropy_state(0.0, loss_form="exp")


# ----------------------------------------------------------------------------
# Target as a function of the update count (any callable, optax as-is).


class TestTargetSchedules:

  def test_optax_schedule_as_is(self):
    sched = optax.piecewise_constant_schedule(-1.0, {2: 3.0, 4: 0.5})  # -1, -1, -3, -3, -1.5
    s = init_entropy_state(sched, optimizer=SGD)
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

  def test_partial_schedule_parameters_vmap_per_member(self):
    # `Partial` arguments are leaves: one schedule parameter per member.
    def my_schedule(step, init_value, slope):
      return init_value + slope * step

    inits, slopes = jnp.array([-1.0, -2.0, -4.0]), jnp.array([0.5, -0.25, 0.0])
    pop = init_population(inits, optimizer=SGD).replace(
        target_schedule=jax.tree_util.Partial(my_schedule, init_value=inits, slope=slopes))
    grads = jnp.array([0.1, -0.3, 2.0])

    def two_steps(s, g):
      return apply_gradients(apply_gradients(s, g), g)

    out = assert_vmap_equals_loop(two_steps, pop, grads)
    np.testing.assert_allclose(out.target, inits + 2 * slopes, rtol=1e-6)
    np.testing.assert_allclose(out.log_alpha, -0.1 * 2 * grads, rtol=1e-6)


# ----------------------------------------------------------------------------
# Discrete action masks.


class TestMasks:

  def test_masked_entropy_and_loss_numpy(self):
    p, lp, mask = PROBS[0], LOG_PROBS_D[0], MASKS[0]
    # Garbage in the invalid slots must not leak into the result.
    p_bad = jnp.where(mask, p, 0.3)
    lp_bad = jnp.where(mask, lp, jnp.nan)
    h = np_entropy(np.asarray(p), np.asarray(lp), np.asarray(mask))
    np.testing.assert_allclose(discrete_entropy(p_bad, lp_bad, mask=mask), h.mean(), rtol=1e-6)
    loss = discrete_loss(jnp.float32(0.7), p_bad, lp_bad, 0.4, mask=mask)
    np.testing.assert_allclose(loss, 0.7 * (h.mean() - 0.4), rtol=1e-5)

  def test_masked_target_closed_form(self):
    mask = jnp.array([[True, True, True, True], [True, False, True, False], [False, False, True, False]])
    np.testing.assert_allclose(masked_discrete_target(mask, 0.9),
                               [0.9 * math.log(4), 0.9 * math.log(2), 0.0], rtol=1e-6)

  def test_update_with_per_state_target(self):
    # SGD lr=0.1 from log_alpha=0: log_alpha' = -0.1 * mean_b(H_b - 0.98 log n_b).
    pop = init_population(0.0, optimizer=SGD, size=3)

    def update(s, p, lp, m):
      return discrete_update(s, p, lp, mask=m, masked_target_ratio=0.98)

    out, metrics = assert_vmap_equals_loop(update, pop, PROBS, LOG_PROBS_D, MASKS)
    h = np_entropy(np.asarray(PROBS), np.asarray(LOG_PROBS_D), np.asarray(MASKS))
    t = 0.98 * np.log(np.asarray(MASKS).sum(-1))
    np.testing.assert_allclose(out.log_alpha, -0.1 * (h - t).mean(-1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(metrics["target"], t.mean(-1), rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(metrics["loss"])))

  def test_ratio_without_mask_is_an_error(self):
    s = init_entropy_state(1.0)
    with pytest.raises(ValueError, match="`masked_target_ratio` needs a `mask`"):
      discrete_update(s, PROBS[0], LOG_PROBS_D[0], masked_target_ratio=0.98)


# ----------------------------------------------------------------------------
# Per-sample weights.


class TestWeights:

  def test_closed_forms(self):
    w, lp = WEIGHTS[0], LOG_PROBS[0]
    expected = -0.3 * np.mean(np.asarray(w) * (np.asarray(lp) - 2.0))
    np.testing.assert_allclose(continuous_loss(jnp.float32(0.3), lp, -2.0, weights=w), expected, rtol=1e-5)
    g = jax.grad(continuous_loss)(jnp.float32(0.3), lp, -2.0, weights=w)
    np.testing.assert_allclose(g, expected / 0.3, rtol=1e-5)
    p, lpd = PROBS[0], LOG_PROBS_D[0]
    wd = WEIGHTS[0, :4]
    h = np_entropy(np.asarray(p), np.asarray(lpd))
    np.testing.assert_allclose(discrete_loss(jnp.float32(0.3), p, lpd, 0.5, weights=wd),
                               0.3 * np.mean(np.asarray(wd) * (h - 0.5)), rtol=1e-5)
    # Unit weights are the unweighted loss.
    np.testing.assert_allclose(continuous_loss(jnp.float32(0.3), lp, -2.0, weights=jnp.ones(8)),
                               continuous_loss(jnp.float32(0.3), lp, -2.0), rtol=1e-6)

  def test_weights_shape_error_names_shapes(self):
    with pytest.raises(ValueError, match=r"shape \(8,\).*got shape \(7,\)"):
      continuous_loss(jnp.float32(0.0), LOG_PROBS[0], -1.0, weights=jnp.ones(7))

  def test_vmap_equals_loop(self):
    pop = init_population(jnp.array([-1.0, -2.0, -3.0]), optimizer=SGD)
    fn = lambda s, lp, w: continuous_update(s, lp, weights=w)
    out, _ = assert_vmap_equals_loop(fn, pop, LOG_PROBS, WEIGHTS)
    stat = np.mean(np.asarray(WEIGHTS) * (np.asarray(LOG_PROBS) + np.array([[-1.0], [-2.0], [-3.0]])), -1)
    np.testing.assert_allclose(out.log_alpha, 0.1 * stat, rtol=1e-5)


# ----------------------------------------------------------------------------
# Per-member hyperparameters: learning rate, target, bounds.


class TestPerMemberHyperparameters:

  def test_learning_rate_and_target(self):
    lrs, targets = jnp.array([0.01, 0.1, 1.0]), jnp.array([-1.0, -2.0, -0.5])
    pop = init_population(targets, optimizer=LR_SGD, learning_rate=lrs)
    out, _ = assert_vmap_equals_loop(continuous_update, pop, LOG_PROBS)
    h = -np.mean(np.asarray(LOG_PROBS), -1)
    np.testing.assert_allclose(out.log_alpha, -np.asarray(lrs) * (h - np.asarray(targets)), rtol=1e-5)

  def test_bounds(self):
    pop = init_population(0.0, optimizer=optax.sgd(1.0), size=3).replace(
        log_alpha_min=jnp.log(jnp.array([0.5, 0.1, 0.01])),
        log_alpha_max=jnp.log(jnp.array([2.0, 10.0, 1.5])))
    down = assert_vmap_equals_loop(apply_gradients, pop, jnp.full(3, 5.0))  # log_alpha -> -5
    np.testing.assert_allclose(down.alpha, [0.5, 0.1, 0.01], rtol=1e-6)
    up = assert_vmap_equals_loop(apply_gradients, pop, jnp.full(3, -1.0))  # log_alpha -> 1
    np.testing.assert_allclose(up.alpha, [2.0, math.e, 1.5], rtol=1e-6)


# ----------------------------------------------------------------------------
# Fixed alpha.


class TestFixedAlpha:

  def test_alpha_never_changes(self):
    s = fixed_alpha_state(0.2, -3.0)
    lp = LOG_PROBS[0]
    update = jax.jit(continuous_update)
    log_alpha0 = np.asarray(s.log_alpha)
    for _ in range(3):
      s, m = update(s, lp)
    np.testing.assert_array_equal(s.log_alpha, log_alpha0)
    np.testing.assert_allclose(m["alpha"], 0.2, rtol=1e-6)
    np.testing.assert_allclose(m["loss"], -math.log(0.2) * (np.mean(np.asarray(lp)) - 3.0), rtol=1e-5)
    assert int(s.step) == 3 and int(s.skipped) == 0
    s = apply_gradients(s, jnp.nan)
    assert int(s.skipped) == 1 and int(s.step) == 3

  def test_same_structure_and_vmap_equals_loop(self):
    assert jax.tree.structure(fixed_alpha_state(0.1)) == jax.tree.structure(fixed_alpha_state(3.0))
    alphas = jnp.array([0.05, 0.2, 1.0])
    pop = jax.vmap(fixed_alpha_state)(alphas)
    out, m = assert_vmap_equals_loop(lambda s, p, lp: discrete_update(s, p, lp), pop, PROBS, LOG_PROBS_D)
    np.testing.assert_array_equal(out.log_alpha, pop.log_alpha)
    np.testing.assert_allclose(m["alpha"], alphas, rtol=1e-6)

  def test_invalid_alpha_names_it(self):
    with pytest.raises(ValueError, match=r"`initial_alpha` must be positive and finite; got 0\.0"):
      fixed_alpha_state(0.0)
