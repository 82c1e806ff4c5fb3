"""Tests of entropy_jax.update: apply_gradients and the fused updates.

Closed forms (SGD and Adam steps), the direction of alpha, bounds and the
clamp at alpha's float32 range, skipping of non-finite updates bit for bit,
populations under vmap against a loop, hypothesis properties over
configurations, dtypes and inputs, and a soak of a million updates.
"""

import functools
import itertools
import math
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _trees import assert_bit_identical, assert_trees_equal, assert_vmap_equals_loop, member
from hypothesis import example, given, settings
from hypothesis import strategies as st
from jax.tree_util import Partial

from entropy_jax import (
  LOG_ALPHA_MAX,
  LOG_ALPHA_MIN,
  adam,
  apply_gradients,
  continuous_update,
  discrete_target,
  discrete_update,
  init_entropy_state,
  init_population,
  velora_discrete_target,
)

NAN, INF = float("nan"), float("inf")
ADAM = optax.adam(1e-2)
SGD = optax.sgd(0.1)  # One instance: states built apart share their static fields.
LR_SGD = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
CU = jax.jit(continuous_update)
DU = jax.jit(discrete_update)
AG = jax.jit(apply_gradients)


def policy(key, batch=8, actions=4):
  logits = 2.0 * jax.random.normal(key, (batch, actions))
  return jax.nn.softmax(logits), jax.nn.log_softmax(logits)


def np_entropy(probs, log_probs, mask=None):
  probs, log_probs = np.asarray(probs, np.float64), np.asarray(log_probs, np.float64)
  terms = np.where(probs > 0, probs * np.where(probs > 0, log_probs, 0.0), 0.0)  # 0 log 0 = 0.
  if mask is not None:
    terms = np.where(mask, terms, 0.0)
  return -terms.sum(-1)


def assert_skipped(old, new):
  """`new` is `old` with `skipped + 1` and nothing else changed, bit for bit."""
  assert int(new.skipped) == int(old.skipped) + 1
  assert_bit_identical(new.replace(skipped=old.skipped), old)


@functools.cache
def warm_state(min_alpha=None, max_alpha=None):
  """A state with a history, so the optimizer moments are not zero."""
  state = init_entropy_state(-2.0, initial_alpha=0.5, optimizer=ADAM, min_alpha=min_alpha, max_alpha=max_alpha)
  for i in range(3):
    state, _ = CU(state, jax.random.normal(jax.random.key(i), (8,)))
  return state


RNG = np.random.default_rng(0)
LOG_PROBS = jnp.asarray(RNG.normal(-1.0, 1.0, size=(3, 8)), jnp.float32)  # [N, B]
LOGITS = RNG.normal(size=(3, 4, 5)).astype(np.float32)  # [N, B, A]
MASKS = jnp.asarray(RNG.random((3, 4, 5)) < 0.7).at[..., 0].set(True)  # >= 1 valid.
PROBS = jax.nn.softmax(jnp.where(MASKS, LOGITS, -jnp.inf))  # 0 on invalid actions.
LOG_PROBS_D = jax.nn.log_softmax(jnp.where(MASKS, LOGITS, -jnp.inf))  # -inf there.
WEIGHTS = jnp.asarray(RNG.uniform(0.2, 2.0, size=(3, 8)), jnp.float32)


# ----------------------------------------------------------------------------
# apply_gradients: closed forms.


class ApplyGradientsTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_sgd_closed_form(self):
    s = init_entropy_state(-1.0, initial_alpha=1.0, optimizer=optax.sgd(0.1))
    s = self.variant(apply_gradients)(s, jnp.float32(2.0))
    np.testing.assert_allclose(s.log_alpha, -0.2, rtol=1e-6)
    assert int(s.step) == 1 and int(s.skipped) == 0

  @chex.variants(with_jit=True, without_jit=True)
  def test_adam_first_step_is_lr_times_sign(self):
    for tx in (optax.adam(3e-4), None):  # optax's, and the default
      s = init_entropy_state(-1.0, optimizer=tx)
      s = self.variant(apply_gradients)(s, jnp.float32(-5.0))
      np.testing.assert_allclose(s.log_alpha, 3e-4, rtol=1e-4)

  def test_schedule_sets_target_from_step(self):
    s = init_entropy_state(optax.linear_schedule(0.0, -10.0, 10), optimizer=optax.sgd(0.0))
    for k in range(1, 4):
      s = AG(s, jnp.float32(0.0))
      np.testing.assert_allclose(s.target, -float(k), rtol=1e-6)


# ----------------------------------------------------------------------------
# The fused updates: closed forms and the direction of alpha.


class FusedUpdateTest(chex.TestCase):
  @chex.variants(with_jit=True, without_jit=True)
  def test_continuous_closed_form(self):
    # SGD(0.1) on the log form: log_alpha' = log(0.5) - 0.1 * (H - target).
    s = init_entropy_state(-2.0, initial_alpha=0.5, optimizer=SGD)
    lp = np.asarray(jax.random.normal(jax.random.key(0), (256,)) - 1.0)
    fused, metrics = self.variant(continuous_update)(s, lp)
    h = -float(np.mean(lp.astype(np.float64)))
    np.testing.assert_allclose(fused.log_alpha, math.log(0.5) - 0.1 * (h + 2.0), rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], -math.log(0.5) * (-h - 2.0), rtol=1e-5)
    np.testing.assert_allclose(metrics["entropy"], h, rtol=1e-5)
    np.testing.assert_allclose(metrics["alpha"], np.exp(np.float32(fused.log_alpha)), rtol=1e-6)
    assert float(metrics["target"]) == -2.0 and int(metrics["skipped"]) == 0

  @chex.variants(with_jit=True, without_jit=True)
  def test_discrete_closed_form(self):
    s = init_entropy_state(0.5, initial_alpha=2.0, optimizer=SGD)
    new, metrics = self.variant(discrete_update)(s, PROBS[0], LOG_PROBS_D[0])
    h = float(np.mean(np_entropy(PROBS[0], LOG_PROBS_D[0])))
    np.testing.assert_allclose(new.log_alpha, math.log(2.0) - 0.1 * (h - 0.5), rtol=1e-5)
    np.testing.assert_allclose(metrics["entropy"], h, rtol=1e-5)

  def test_alpha_rises_below_target_and_falls_above(self):
    # Entropy 1.0 (log_probs -1); target 3 > 1: alpha rises every step; target -3 < 1: falls.
    for target, sign in ((3.0, 1), (-3.0, -1)):
      s = init_entropy_state(target)
      for _ in range(20):
        new, _ = CU(s, jnp.full((32,), -1.0))
        assert sign * (new.log_alpha - s.log_alpha) > 0
        s = new

  def test_discrete_alpha_direction(self):
    # Near-deterministic policy over 4 actions: H ~ 0.17 < 0.6 log 4: alpha must rise.
    logits = jnp.tile(jnp.array([5.0, 0.0, 0.0, 0.0]), (8, 1))
    p, lp = jax.nn.softmax(logits), jax.nn.log_softmax(logits)
    s = init_entropy_state(discrete_target(4))
    for _ in range(10):
      new, m = DU(s, p, lp)
      assert new.log_alpha > s.log_alpha and m["entropy"] < m["target"]
      s = new
    # Uniform policy: H = log 4 > 0.6 log 4: alpha must fall (fresh state: no Adam momentum).
    s = init_entropy_state(discrete_target(4))
    u = jnp.full((8, 4), 0.25)
    new, _ = DU(s, u, jnp.log(u))
    assert new.log_alpha < s.log_alpha

  def test_no_gradient_flows_into_policy_through_update(self):
    s = init_entropy_state(-1.0)
    g = jax.grad(lambda lp: continuous_update(s, lp)[0].log_alpha)(jnp.full((4,), -0.3))
    np.testing.assert_array_equal(g, jnp.zeros(4))
    p = jnp.full((3, 2), 0.5)
    g = jax.grad(lambda p: discrete_update(s, p, jnp.log(p))[0].log_alpha)(p)
    np.testing.assert_array_equal(g, jnp.zeros((3, 2)))

  def test_alpha_form_sgd_step(self):
    # SGD: log_alpha' = log_alpha - lr * alpha * (H - target).
    s = init_entropy_state(-2.0, initial_alpha=0.5, optimizer=SGD, loss_form="alpha")
    s1, m = CU(s, LOG_PROBS[0])
    h = -float(np.mean(np.asarray(LOG_PROBS[0], np.float64)))
    np.testing.assert_allclose(s1.log_alpha, math.log(0.5) - 0.1 * 0.5 * (h + 2.0), rtol=1e-5)
    np.testing.assert_allclose(m["loss"], -0.5 * (-h - 2.0), rtol=1e-5)
    s_log, _ = CU(s.replace(loss_form="log"), LOG_PROBS[0])
    np.testing.assert_allclose(s_log.log_alpha, math.log(0.5) - 0.1 * (h + 2.0), rtol=1e-5)

  def test_masked_update_with_per_state_target(self):
    # SGD lr=0.1 from log_alpha=0: log_alpha' = -0.1 * mean_b(H_b - 0.98 log n_b).
    pop = init_population(0.0, optimizer=SGD, size=3)

    def update(s, p, lp, m):
      return discrete_update(s, p, lp, mask=m, masked_target_ratio=0.98)

    out, metrics = assert_vmap_equals_loop(update, pop, PROBS, LOG_PROBS_D, MASKS)
    h = np_entropy(PROBS, LOG_PROBS_D, np.asarray(MASKS))
    t = 0.98 * np.log(np.asarray(MASKS).sum(-1))
    np.testing.assert_allclose(out.log_alpha, -0.1 * (h - t).mean(-1), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(metrics["target"], t.mean(-1), rtol=1e-6)
    with pytest.raises(ValueError, match="`masked_target_ratio` needs a `mask`"):
      discrete_update(init_entropy_state(1.0), PROBS[0], LOG_PROBS_D[0], masked_target_ratio=0.98)


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


UPDATE_ARRAY_CASES = {  # (call, error, the function named, the argument named, what came)
  "cont update [B, 2]": (
    lambda s, d: continuous_update(s, jnp.zeros((4, 2))),
    ValueError,
    "continuous_update",
    "log_probs",
    "(4, 2)",
  ),
  "cont update empty": (
    lambda s, d: continuous_update(s, jnp.zeros((0, 1))),
    ValueError,
    "continuous_update",
    "log_probs",
    "(0, 1)",
  ),
  "cont update, unvmapped population": (
    lambda s, d: continuous_update(init_population(-1.0, size=3), jnp.zeros(4)),
    ValueError,
    "continuous_update",
    "log_alpha",
    "(3,)",
  ),
  "disc update int": (
    lambda s, d: discrete_update(d, PROBS[0], LOG_PROBS_D[0].astype(jnp.int32)),
    TypeError,
    "discrete_update",
    "log_probs",
    "int32",
  ),
  "disc ratio without mask": (
    lambda s, d: discrete_update(d, PROBS[0], LOG_PROBS_D[0], masked_target_ratio=0.6),
    ValueError,
    "discrete_update",
    "mask",
    "None",
  ),
  "grad [3]": (lambda s, d: apply_gradients(s, jnp.zeros(3)), ValueError, "apply_gradients", "grad", "(3,)"),
  "grad int": (lambda s, d: apply_gradients(s, 1), TypeError, "apply_gradients", "grad", "int32"),
  "grad str": (lambda s, d: apply_gradients(s, "a"), TypeError, "apply_gradients", "grad", "'a'"),
  "apply_gradients, unvmapped population": (
    lambda s, d: apply_gradients(init_population(-1.0, size=3), 1.0),
    ValueError,
    "apply_gradients",
    "state",
    "(3,)",
  ),
}


@pytest.mark.parametrize("case", sorted(UPDATE_ARRAY_CASES))
def test_bad_arguments_are_rejected_with_a_message(case):
  fn, error, function, argument, got = UPDATE_ARRAY_CASES[case]
  with pytest.raises(error) as e:
    fn(init_entropy_state(-1.0), init_entropy_state(0.5))
  message = str(e.value)
  assert message.startswith(f"{function}: ") and f"`{argument}`" in message and got in message, message


# ----------------------------------------------------------------------------
# Bounds, and the clamp at alpha's float32 range.


@pytest.mark.parametrize("direction", ["down", "up"])
def test_bounds_hold_and_are_reached_exactly(direction):
  lo, hi = 0.05, 2.0
  state = init_entropy_state(-1.0, initial_alpha=0.5, optimizer=optax.sgd(0.3), min_alpha=lo, max_alpha=hi)
  # H = -mean(log_probs); H > target lowers alpha, H < target raises it.
  lp = jnp.full((4,), -5.0 if direction == "down" else 5.0)
  history = []
  for _ in range(40):
    state, _ = CU(state, lp)
    history.append(float(state.log_alpha))
  log_lo, log_hi = float(np.log(np.float32(lo))), float(np.log(np.float32(hi)))
  assert all(log_lo <= h <= log_hi for h in history)
  assert history[-1] == (log_lo if direction == "down" else log_hi)
  assert int(state.skipped) == 0


def test_per_member_bounds_under_vmap():
  pop = init_population(0.0, optimizer=optax.sgd(1.0), size=3).replace(
    log_alpha_min=jnp.log(jnp.array([0.5, 0.1, 0.01])), log_alpha_max=jnp.log(jnp.array([2.0, 10.0, 1.5]))
  )
  down = assert_vmap_equals_loop(apply_gradients, pop, jnp.full(3, 5.0))  # log_alpha -> -5
  np.testing.assert_allclose(down.alpha, [0.5, 0.1, 0.01], rtol=1e-6)
  up = assert_vmap_equals_loop(apply_gradients, pop, jnp.full(3, -1.0))  # log_alpha -> 1
  np.testing.assert_allclose(up.alpha, [2.0, math.e, 1.5], rtol=1e-6)


@pytest.mark.parametrize(
  "grad, edge",
  [(200.0, LOG_ALPHA_MIN), (-200.0, LOG_ALPHA_MAX), (90.0, LOG_ALPHA_MIN)],
  ids=["log_alpha=-200", "log_alpha=200", "log_alpha=-90"],
)
def test_leaving_alphas_float32_range_is_a_bound_not_a_skip(grad, edge):
  # log_alpha stays finite, but alpha = exp(log_alpha) would be 0, inf, or
  # below float32's smallest normal: the step stops at the edge and counts.
  state = init_entropy_state(-1.0, optimizer=optax.sgd(1.0))
  new = AG(state, jnp.float32(grad))
  assert float(new.log_alpha) == edge and int(new.skipped) == 0 and int(new.step) == 1
  assert np.isfinite(float(new.alpha)) and float(new.alpha) >= np.finfo(np.float32).tiny
  # A hand-made state without bounds of its own (infinite ones) gets the same clamp.
  unbounded = state.replace(log_alpha_min=jnp.float32(-INF), log_alpha_max=jnp.float32(INF))
  assert float(AG(unbounded, jnp.float32(grad)).log_alpha) == edge


def scan_updates(state, update, n):
  """`n` updates `state = update(state)` in one `lax.scan`."""
  return jax.jit(lambda s: jax.lax.scan(lambda s, _: (update(s), None), s, None, length=n)[0])(state)


UNIFORM_ON_2_OF_4 = jnp.array([[0.5, 0.5, 0.0, 0.0]] * 4)
MASK_2_OF_4 = UNIFORM_ON_2_OF_4 > 0
UNIFORM_ON_4 = jnp.full((4, 4), 0.25)
UNREACHABLE = {
  # A 6-D tanh-squashed action box holds at most 6 log 2 = 4.16 nats: a target of 5 is out of reach (H = 4); then
  # the target drops to the box's default, -6, below the entropy.
  "continuous": (
    5.0,
    lambda s: continuous_update(s, jnp.full((8,), -4.0))[0],
    -6.0,
    lambda s: continuous_update(s, jnp.full((8,), -4.0))[0],
  ),
  # Two of four actions allowed: log 2 = 0.69 nats at most, below the paper's 0.98 log 4 = 1.36; then the mask
  # lifts, and the uniform policy's log 4 = 1.39 lies above the target.
  "discrete under a mask": (
    0.98 * math.log(4),
    lambda s: discrete_update(s, UNIFORM_ON_2_OF_4, jnp.log(UNIFORM_ON_2_OF_4), mask=MASK_2_OF_4)[0],
    0.98 * math.log(4),
    lambda s: discrete_update(s, UNIFORM_ON_4, jnp.log(UNIFORM_ON_4))[0],
  ),
}


@pytest.mark.parametrize("form", ["log", "alpha"])
@pytest.mark.parametrize("case", sorted(UNREACHABLE))
def test_a_target_out_of_reach_drives_alpha_to_the_ceiling_and_alpha_comes_back(case, form):
  """The input `GRAD_LIMIT` and the alpha-form's saturated gradient protect against.

  The gradient keeps one sign, and Adam raises log_alpha by about lr per update, to LOG_ALPHA_MAX (at the default lr
  3e-4 within about 300k updates, a normal SAC run; lr 0.5 here). In the alpha form the gradient there is
  alpha * (H - target), 1.65e38 times the entropy gap: its square overflows Adam's second moment, and the product
  itself overflows float32 once the gap exceeds 2.06 (the continuous case's is 10). Once the target is reachable,
  alpha must come down, and no update may be skipped.
  """
  target, climb, reachable, descend = UNREACHABLE[case]
  state = scan_updates(init_entropy_state(target, optimizer=adam(0.5), loss_form=form), climb, 400)
  assert float(state.log_alpha) == LOG_ALPHA_MAX and int(state.skipped) == 0
  state = scan_updates(state.replace(target=jnp.float32(reachable)), descend, 100)
  assert float(state.log_alpha) < LOG_ALPHA_MAX - 1 and int(state.skipped) == 0 and int(state.step) == 500


def test_an_alpha_at_the_floor_stays_there_and_comes_back():
  # Velora's discrete target, 0.98 log(1 / A), lies below any categorical entropy: alpha falls to LOG_ALPHA_MIN (in
  # the log form; the alpha form's steps vanish on the way down, as that form intends). It stays there, no update
  # skipped, and rises once a reachable target lies above the entropy.
  probs = jnp.array([[0.97, 0.01, 0.01, 0.01]] * 4)  # H = 0.17
  update = lambda s: discrete_update(s, probs, jnp.log(probs))[0]
  state = scan_updates(init_entropy_state(velora_discrete_target(4), optimizer=adam(1.0)), update, 120)
  assert float(state.log_alpha) == LOG_ALPHA_MIN and int(state.skipped) == 0
  state = state.replace(target=jnp.float32(discrete_target(4)))  # 0.83 > H
  history = []
  for _ in range(30):
    state = DU(state, probs, jnp.log(probs))[0]
    history.append(float(state.log_alpha))
  assert int(state.skipped) == 0
  left = [h for h in history if h != LOG_ALPHA_MIN]
  assert left and all(b > a for a, b in itertools.pairwise(left))  # it leaves the floor and keeps rising


# ----------------------------------------------------------------------------
# Non-finite values inside jit: the update is skipped, bit for bit.

BAD_VALUES = [NAN, INF, -INF]


@pytest.mark.parametrize("bad", BAD_VALUES, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["log_probs", "weights"])
def test_continuous_non_finite_is_skipped(bad, where):
  state = warm_state()
  lp = jax.random.normal(jax.random.key(5), (8,))
  w = jnp.ones(8)
  if where == "log_probs":
    lp = lp.at[3].set(bad)
  else:
    w = w.at[3].set(bad)
  new, metrics = CU(state, lp, weights=w)
  assert_skipped(state, new)
  assert int(metrics["skipped"]) == int(state.skipped) + 1
  # The same state then accepts a good batch.
  good, _ = CU(new, lp.at[3].set(0.0), weights=jnp.ones(8))
  assert int(good.step) == int(state.step) + 1 and np.isfinite(good.log_alpha)


@pytest.mark.parametrize("bad", BAD_VALUES, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", ["probs", "log_probs"])
def test_discrete_non_finite_is_skipped(bad, where):
  state = warm_state()
  p, lp = policy(jax.random.key(1))
  if where == "probs":
    p = p.at[2, 1].set(bad)
  else:
    lp = lp.at[2, 1].set(bad)  # p > 0 there, so p * -inf = -inf is not the 0 log 0 case.
  new, _ = DU(state, p, lp)
  assert_skipped(state, new)


@pytest.mark.parametrize("grad", [NAN, INF, -INF], ids=["nan", "inf", "-inf"])
def test_non_finite_gradient_is_skipped(grad):
  state = warm_state(min_alpha=1e-3, max_alpha=1e3)
  assert_skipped(state, AG(state, jnp.float32(grad)))


@pytest.mark.parametrize("grad", [1e18, 1e20, -3e38], ids=["1e18", "1e20", "-3e38"])
def test_a_huge_finite_gradient_is_limited_not_skipped(grad):
  # The alpha form's gradient near the ceiling (see the test above): Adam's nu = grad**2 would overflow float32
  # beyond ~1.8e19 and freeze alpha for good. Adam's step is lr * sign(grad) whatever its size.
  state = warm_state()
  new = AG(state, jnp.float32(grad))
  assert int(new.skipped) == int(state.skipped) and int(new.step) == int(state.step) + 1
  assert np.all(np.isfinite(np.asarray(new.opt_state[0].nu)))
  assert math.copysign(1.0, float(state.log_alpha) - float(new.log_alpha)) == math.copysign(1.0, grad)


def test_non_finite_schedule_value_is_skipped():
  # A schedule that returns NaN from step 2 on: the state never holds a NaN target.
  schedule = Partial(lambda t, step: jnp.where(step >= 2, jnp.nan, t), jnp.float32(-1.0))
  state = init_entropy_state(schedule, optimizer=ADAM)
  lp = jnp.zeros(4)
  state, _ = CU(state, lp)
  assert int(state.step) == 1 and int(state.skipped) == 0
  new, _ = CU(state, lp)
  assert_skipped(state, new)
  assert float(new.target) == -1.0


def test_optimizer_state_initialised_to_inf_is_not_a_skip():
  # Some optimizers start a leaf at +inf (reduce_on_plateau's best_value);
  # a leaf that was already inf must not block updates.
  keeps_inf = optax.GradientTransformation(
    lambda params: jnp.float32(jnp.inf), lambda updates, state, params=None: (updates, state)
  )
  tx = optax.chain(optax.adam(1e-2), keeps_inf)
  state = init_entropy_state(-1.0, optimizer=tx)
  new, _ = CU(state, jnp.full((4,), 2.0))
  assert int(new.skipped) == 0 and int(new.step) == 1
  assert float(new.log_alpha) > 0.0  # H = -2 is below the target -1: alpha rises.


def test_population_skips_only_the_bad_member():
  pop = init_population(jnp.array([-1.0, -2.0, -3.0]), optimizer=ADAM)
  lps = jax.random.normal(jax.random.key(3), (3, 8)).at[1, 0].set(jnp.nan)
  new, _ = jax.jit(jax.vmap(continuous_update))(pop, lps)
  np.testing.assert_array_equal(new.skipped, [0, 1, 0])
  np.testing.assert_array_equal(new.step, [1, 0, 1])
  assert_skipped(member(pop, 1), member(new, 1))
  for i in (0, 2):
    solo, _ = CU(member(pop, i), lps[i])
    np.testing.assert_array_max_ulp(member(new, i).log_alpha, solo.log_alpha, maxulp=2)


# Documented safe behaviours (not skips).


def test_zero_probability_with_minus_inf_log_prob_counts_as_zero():
  p = jnp.array([[0.5, 0.5, 0.0]])
  lp = jnp.log(p)  # [log .5, log .5, -inf]
  state = init_entropy_state(0.5, optimizer=optax.sgd(1.0))
  new, metrics = DU(state, p, lp)
  assert int(new.skipped) == 0
  np.testing.assert_allclose(metrics["entropy"], np.log(2.0), rtol=1e-6)
  # log-form gradient is H - target; sgd(1) moves log_alpha by -(H - target).
  np.testing.assert_allclose(new.log_alpha, -(np.log(2.0) - 0.5), rtol=1e-6)


def test_masked_out_non_finite_entries_are_ignored():
  p, lp = policy(jax.random.key(4))
  mask = jnp.ones(p.shape, bool).at[:, 3].set(False)
  clean_p, clean_lp = p.at[:, 3].set(0.0), lp.at[:, 3].set(0.0)
  dirty_p, dirty_lp = p.at[:, 3].set(jnp.nan), lp.at[:, 3].set(-jnp.inf)
  state = warm_state()
  clean, _ = DU(state, clean_p, clean_lp, mask=mask)
  dirty, _ = DU(state, dirty_p, dirty_lp, mask=mask)
  assert int(dirty.skipped) == int(state.skipped)
  assert_bit_identical(clean, dirty)


# ----------------------------------------------------------------------------
# Populations: vmap against a loop over members, each with its own settings.


@pytest.mark.parametrize("form", ["log", "alpha"])
def test_vmap_equals_loop_for_both_loss_forms(form):
  alpha0 = np.array([0.2, 1.0, 3.0])
  pop = init_population(jnp.array([-1.0, 0.3, 1.2]), initial_alpha=alpha0, optimizer=SGD, loss_form=form)
  out = assert_vmap_equals_loop(lambda s, p, lp: discrete_update(s, p, lp), pop, PROBS, LOG_PROBS_D)
  h = np.mean(np_entropy(PROBS, LOG_PROBS_D), -1)
  scale = alpha0 if form == "alpha" else 1.0
  expected = np.log(alpha0) - 0.1 * scale * (h - np.array([-1.0, 0.3, 1.2]))
  np.testing.assert_allclose(out[0].log_alpha, expected, rtol=1e-5)


def test_weighted_updates_vmap_equals_loop():
  pop = init_population(jnp.array([-1.0, -2.0, -3.0]), optimizer=SGD)
  out, _ = assert_vmap_equals_loop(lambda s, lp, w: continuous_update(s, lp, weights=w), pop, LOG_PROBS, WEIGHTS)
  stat = np.mean(np.asarray(WEIGHTS) * (np.asarray(LOG_PROBS) + np.array([[-1.0], [-2.0], [-3.0]])), -1)
  np.testing.assert_allclose(out.log_alpha, 0.1 * stat, rtol=1e-5)


def test_per_member_learning_rate_and_target():
  lrs, targets = jnp.array([0.01, 0.1, 1.0]), jnp.array([-1.0, -2.0, -0.5])
  pop = init_population(targets, optimizer=LR_SGD, learning_rate=lrs)
  out, _ = assert_vmap_equals_loop(continuous_update, pop, LOG_PROBS)
  h = -np.mean(np.asarray(LOG_PROBS), -1)
  np.testing.assert_allclose(out.log_alpha, -np.asarray(lrs) * (h - np.asarray(targets)), rtol=1e-5)


def test_jit_eager_and_vmap_agree_member_by_member_over_20_updates():
  """Each member: own target, own batch, own learning rate (inject_hyperparams)."""
  n, b = 5, 64
  tx = optax.inject_hyperparams(optax.adam)(learning_rate=3e-4)
  lrs = jnp.array([1e-4, 1e-3, 1e-2, 3e-2, 1e-1])
  pop = init_population(
    jnp.linspace(-3.0, 1.0, n), initial_alpha=jnp.linspace(0.1, 1.0, n), optimizer=tx, learning_rate=lrs
  )
  batches = jax.random.normal(jax.random.key(7), (20, n, b)) - 1.0
  vstep = jax.jit(jax.vmap(continuous_update))
  pop_v = pop
  for t in range(20):
    pop_v, _ = vstep(pop_v, batches[t])
  for i in range(n):
    eager = jit = member(pop, i)
    for t in range(20):
      eager, _ = continuous_update(eager, batches[t, i])
      jit, _ = CU(jit, batches[t, i])
    chex.assert_trees_all_close(member(pop_v, i), eager, rtol=1e-6, atol=1e-7)
    chex.assert_trees_all_close(jit, eager, rtol=1e-6, atol=1e-7)
  # Members really did learn at different rates.
  assert len(set(np.round(np.asarray(pop_v.log_alpha - jnp.log(jnp.linspace(0.1, 1.0, n))), 6))) == n


# ----------------------------------------------------------------------------
# Properties (hypothesis) over batch shapes, input dtypes (float32, bfloat16,
# float16), targets, initial alphas, optimizers, learning rates, loss forms
# and bounds. Optimizers are `optax.inject_hyperparams` instances built once,
# so the learning rate is a state leaf and every example reuses compiled
# programs; batch sizes come from a short list for the same reason.

SETTINGS = settings(max_examples=8, deadline=None, derandomize=True)

OPTIMIZERS = {
  "adam": optax.inject_hyperparams(optax.adam)(learning_rate=1e-3),
  "sgd": optax.inject_hyperparams(optax.sgd)(learning_rate=1e-3, momentum=0.9),
  "adamw": optax.inject_hyperparams(optax.adamw)(learning_rate=1e-3, weight_decay=1e-2),
}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
BATCHES = [1, 6]
ACTIONS = [2, 5]

# Explicit examples: plain SGD without bounds, where one large gradient moves
# log_alpha by ~1000 (alpha would underflow to 0 or overflow to inf without
# the clamp at alpha's float32 range).
UNBOUNDED_SGD = {
  "target": 0.0,
  "initial_alpha": 1.0,
  "min_alpha": None,
  "max_alpha": None,
  "optimizer": "sgd",
  "learning_rate": 1e-3,
  "loss_form": "log",
}


VCU = jax.jit(jax.vmap(continuous_update))


@st.composite
def configs(draw):
  alpha = math.exp(draw(st.floats(-7.0, 4.6)))
  bounded = draw(st.booleans())
  lo = alpha * math.exp(-draw(st.floats(0.1, 5.0))) if bounded else None
  hi = alpha * math.exp(draw(st.floats(0.1, 5.0))) if bounded else None
  return {
    "target": draw(st.floats(-20.0, 20.0).map(lambda t: 0.0 if abs(t) < 1e-30 else t)),  # float32-representable
    "initial_alpha": alpha,
    "min_alpha": lo,
    "max_alpha": hi,
    "optimizer": draw(st.sampled_from(sorted(OPTIMIZERS))),
    "learning_rate": math.exp(draw(st.floats(math.log(1e-4), math.log(0.3)))),
    "loss_form": draw(st.sampled_from(["log", "alpha"])),
  }


def make_state(cfg):
  state = init_entropy_state(
    cfg["target"],
    initial_alpha=cfg["initial_alpha"],
    optimizer=OPTIMIZERS[cfg["optimizer"]],
    min_alpha=cfg["min_alpha"],
    max_alpha=cfg["max_alpha"],
    loss_form=cfg["loss_form"],
  )
  opt_state = optax.tree_utils.tree_set(state.opt_state, learning_rate=jnp.float32(cfg["learning_rate"]))
  return state.replace(opt_state=opt_state)


def continuous_inputs(seed, batch, dtype, scale):
  rng = np.random.default_rng(seed)
  return jnp.asarray(scale * rng.standard_normal(batch) - scale, DTYPES[dtype])


def discrete_inputs(seed, batch, actions, dtype, scale):
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(scale * rng.standard_normal((batch, actions)), jnp.float32)
  return (jax.nn.softmax(logits).astype(DTYPES[dtype]), jax.nn.log_softmax(logits).astype(DTYPES[dtype]))


# The strategies every discrete property draws from: a configuration, a batch
# size, a number of actions, an input dtype and a seed for the inputs.
DISCRETE_CASES = dict(
  cfg=configs(),
  batch=st.sampled_from(BATCHES),
  actions=st.sampled_from(ACTIONS),
  dtype=st.sampled_from(sorted(DTYPES)),
  seed=st.integers(0, 2**16),
)


def assert_sane(state):
  """alpha finite and positive; log_alpha within the state's bounds."""
  alpha = float(state.alpha)
  assert math.isfinite(alpha) and alpha > 0.0, alpha
  assert float(state.log_alpha_min) <= float(state.log_alpha) <= float(state.log_alpha_max)


EPS = float(np.finfo(np.float32).eps)
ULPS = 8  # relative error allowed in each step's increment (derivation below)


def assert_same_step(old, a, b, metrics_a, metrics_b):
  """`a` and `b`, two results of one update of `old`, agree to rounding.

  vmap runs XLA's vectorised CPU exp/log kernels, a single member the scalar
  ones; they differ by up to 2 ulp (see tests/_trees.py); and jit may
  fuse `sum / B` into `sum * (1 / B)`, which eager does not (1 ulp). Each new
  leaf is `old + increment`, and an increment is at most a few roundings away
  from one exp: the alpha-form gradient `exp(log_alpha) * stat` (3 ulp),
  Adam's `nu` increment `(1 - b2) * g**2` (twice the relative error of `g`,
  plus two roundings: 8 ulp). So |a - b| <= 8 eps (|old| + |a - old|); a
  subtraction that cancels makes that an absolute bound, not a relative one.
  The statistic itself is such a subtraction: `H - target` carries the
  roundings of `H` and of the target, not of the difference, so where the two
  nearly cancel the increments' relative error grows by `(|H| + |target|) /
  |H - target|`.
  """
  h, t = float(metrics_a["entropy"]), float(metrics_a["target"])
  rel = ULPS * EPS * (1 + (abs(h) + abs(t)) / max(abs(h - t), np.finfo(np.float32).tiny))
  for x0, x, y in zip(jax.tree.leaves(old), jax.tree.leaves(a), jax.tree.leaves(b)):
    x0, x, y = np.asarray(x0), np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    if np.issubdtype(x.dtype, np.floating):
      finite = np.isfinite(x0)  # the bounds (+-inf) are copied as they are
      np.testing.assert_array_equal(x[~finite], y[~finite])
      x0, x, y = x0[finite], x[finite], y[finite]
      bound = ULPS * EPS * np.abs(x0) + rel * np.abs(x - x0) + np.finfo(np.float32).tiny
      assert np.all(np.abs(x - y) <= bound), (x0, x, y)
    else:
      np.testing.assert_array_equal(x, y)
  for key in ("entropy", "target", "skipped"):
    assert_trees_equal(metrics_a[key], metrics_b[key])
  np.testing.assert_allclose(metrics_a["loss"], metrics_b["loss"], rtol=rel, atol=0)
  # alpha = exp(log_alpha): an absolute error d in log_alpha is a relative d in alpha.
  d = ULPS * EPS * (abs(float(old.log_alpha)) + abs(float(a.log_alpha) - float(old.log_alpha)))
  np.testing.assert_allclose(metrics_a["alpha"], metrics_b["alpha"], rtol=d + 3 * EPS, atol=0)


@SETTINGS
@example(
  cfg=dict(UNBOUNDED_SGD, initial_alpha=50.0, learning_rate=0.3, loss_form="alpha"),
  batch=6,
  dtype="float32",
  scale=30.0,
  seed=0,
)  # a step of ~-2e4 in log_alpha
@given(
  cfg=configs(),
  batch=st.sampled_from(BATCHES),
  dtype=st.sampled_from(sorted(DTYPES)),
  scale=st.floats(0.01, 30.0),
  seed=st.integers(0, 2**16),
)
def test_continuous_alpha_stays_finite_positive_and_bounded(cfg, batch, dtype, scale, seed):
  state = make_state(cfg)
  for i in range(6):
    state, metrics = CU(state, continuous_inputs(seed + i, batch, dtype, scale))
    assert_sane(state)
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["entropy"])
  assert int(state.step) + int(state.skipped) == 6


@SETTINGS
@given(**DISCRETE_CASES, scale=st.floats(0.01, 30.0))
def test_discrete_alpha_stays_finite_positive_and_bounded(cfg, batch, actions, dtype, scale, seed):
  state = make_state(cfg)
  for i in range(6):
    probs, log_probs = discrete_inputs(seed + i, batch, actions, dtype, scale)
    state, metrics = DU(state, probs, log_probs)
    assert_sane(state)
    # The exact entropy of a categorical policy lies in [0, log A].
    assert -1e-2 <= float(metrics["entropy"]) <= math.log(actions) * (1 + 1e-2)


@settings(SETTINGS, max_examples=int(os.environ.get("AGREE_EXAMPLES", 6)))
@given(
  cfgs=st.lists(configs(), min_size=3, max_size=3),
  batch=st.sampled_from(BATCHES),
  dtype=st.sampled_from(sorted(DTYPES)),
  seed=st.integers(0, 2**16),
)
def test_jit_eager_and_vmap_agree(cfgs, batch, dtype, seed):
  # One optimizer and loss form for the stacked population (static fields).
  cfgs = [dict(c, optimizer=cfgs[0]["optimizer"], loss_form=cfgs[0]["loss_form"]) for c in cfgs]
  states = [make_state(c) for c in cfgs]
  # Inputs on a grid of 1/64 (|x| < 64): every partial sum of the batch is
  # exact in float32, so the batch mean does not depend on the order of the
  # reduction (eager, fused under jit and batched under vmap each pick their
  # own; with arbitrary inputs they differ by the summation error, up to
  # B * eps * sum|x|, which is float non-associativity, not disagreement).
  inputs = [jnp.round(continuous_inputs(seed + i, batch, "float32", 3.0) * 64) / 64 for i in range(3)]
  inputs = [x.astype(DTYPES[dtype]) for x in inputs]
  population = jax.tree.map(lambda *xs: jnp.stack(xs), *states)
  batched, batched_metrics = VCU(population, jnp.stack(inputs))
  for i, (state, lp) in enumerate(zip(states, inputs)):
    eager, eager_metrics = continuous_update(state, lp)
    jitted, jitted_metrics = CU(state, lp)
    one = member(batched, i)
    assert_same_step(state, jitted, eager, jitted_metrics, eager_metrics)
    assert_same_step(state, one, jitted, member(batched_metrics, i), jitted_metrics)


@SETTINGS
@given(
  **DISCRETE_CASES,
  bad=st.sampled_from([math.nan, math.inf, -math.inf]),
  where=st.sampled_from(["continuous", "probs", "log_probs"]),
  position=st.integers(0, 10**6),
)
def test_non_finite_input_skips_the_update_bit_for_bit(cfg, batch, actions, dtype, bad, where, position, seed):
  state = make_state(cfg)
  state, _ = CU(state, continuous_inputs(seed, batch, "float32", 1.0))  # non-trivial moments
  if where == "continuous":
    lp = continuous_inputs(seed + 1, batch, dtype, 2.0)
    new, _ = CU(state, lp.at[position % batch].set(bad))
  else:
    probs, log_probs = discrete_inputs(seed + 1, batch, actions, dtype, 2.0)
    b, a = position % batch, (position // batch) % actions
    if where == "probs":
      probs = probs.at[b, a].set(bad)
    else:
      # -inf with probs > 0 (not the 0 * log 0 case): make the entry positive.
      probs = probs.at[b, a].set(jnp.maximum(probs[b, a], 0.1))
      log_probs = log_probs.at[b, a].set(bad)
    new, _ = DU(state, probs, log_probs)
  assert int(new.skipped) == int(state.skipped) + 1
  assert_bit_identical(new.replace(skipped=state.skipped), state)


@settings(SETTINGS, max_examples=25)  # cheap: one program per optimizer and loss form
@example(cfg=UNBOUNDED_SGD, grads=[1e6])
@example(cfg=dict(UNBOUNDED_SGD, loss_form="alpha"), grads=[-1e6, 3e38])
@given(
  cfg=configs(),
  grads=st.lists(
    st.one_of(
      # sign * 10**e, e uniform in [-3, 38]: every magnitude float32 holds.
      st.tuples(st.sampled_from([-1.0, 1.0]), st.floats(-3.0, 38.0)).map(lambda se: se[0] * 10.0 ** se[1]),
      st.sampled_from([0.0, math.nan, math.inf, -math.inf]),
    ),
    min_size=1,
    max_size=8,
  ),
)
def test_bounds_hold_for_any_gradient(cfg, grads):
  state = make_state(cfg)
  for g in grads:
    new = AG(state, jnp.float32(g))
    assert_sane(new)
    # Only a non-finite gradient is skipped; a finite one, however large, is
    # limited and applied (alpha then stops at a bound).
    assert int(new.skipped) == int(state.skipped) + (0 if math.isfinite(g) else 1)
    state = new


# ----------------------------------------------------------------------------
# Soak: 1,000,000 updates inside one `lax.scan` on random inputs (and a
# shorter discrete soak of a masked two-member population under vmap). The
# inputs are drawn inside the scan from a key (a chunk of 1,000 batches at a
# time) and swing the entropy far above and below the target, so alpha is
# driven into both bounds again and again; one batch in every 1,000 carries a
# NaN. At the end: log_alpha is finite, it never left the bounds at any step
# (a running min/max is carried), both bounds were reached, and exactly one
# update per NaN batch was skipped.

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


@pytest.mark.slow
def test_soak_one_million_continuous_updates():
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


@pytest.mark.slow
def test_soak_discrete_population_updates():
  # 200,000 steps (the discrete update costs ~5x the continuous one on CPU).
  # Two members under vmap, alpha-form loss, 6 actions of which a random
  # subset is masked out per state; logits scaled from near-uniform to
  # near-deterministic so the entropy crosses the target both ways.
  actions, lo, hi = 6, jnp.array([1e-4, 1e-2]), jnp.array([1.0, 100.0])

  def draw(key):
    z = jax.random.normal(key, (CHUNK, 2, BATCH, 2 * actions + 1))
    scale = jnp.exp(3.0 * jnp.tanh(z[:, :, :1, -1:]))  # per step and member, in (e^-3, e^3)
    logits = scale * z[..., :actions]
    mask = (z[..., actions : 2 * actions] > -0.5).at[..., 0].set(True)  # ~70% of actions valid
    logits = jnp.where(mask, logits, -jnp.inf)
    probs, log_probs = jax.nn.softmax(logits), jax.nn.log_softmax(logits)
    return probs.at[-1, 1, 0, 0].set(jnp.nan), log_probs, mask  # member 1: one NaN per chunk

  def update(pop, x):
    probs, log_probs, mask = x
    step = lambda s, p, lp, m: discrete_update(s, p, lp, mask=m)[0]
    return jax.vmap(step)(pop, probs, log_probs, mask)

  adam = optax.adam(3e-3)  # one instance: the members share their static fields
  pops = [
    init_population(
      0.5 * math.log(actions), optimizer=adam, loss_form="alpha", min_alpha=float(lo[i]), max_alpha=float(hi[i]), size=1
    )
    for i in range(2)
  ]
  pop = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), *pops)
  steps = 200_000
  final, low, high = soak(pop, update, draw, steps)
  np.testing.assert_allclose(final.log_alpha_min, np.log(lo), rtol=1e-6)
  np.testing.assert_allclose(final.log_alpha_max, np.log(hi), rtol=1e-6)
  assert np.all(np.isfinite(final.log_alpha))
  assert np.all(final.log_alpha_min <= low) and np.all(high <= final.log_alpha_max)
  np.testing.assert_array_equal(final.skipped, [0, steps // CHUNK])
  np.testing.assert_array_equal(final.step, [steps, steps - steps // CHUNK])
