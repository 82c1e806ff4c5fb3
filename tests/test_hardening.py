"""Issue 6: bad input gets a clear error or a documented safe behaviour.

Every case of the issue is tried against the functional core: the
constructors, the losses, the fused updates and `apply_gradients`. Errors
must name the expected and the received value, shape or dtype (checked with
`match=`). Non-finite values inside `jit` skip the update: the new state is
bit-identical to the old one except `skipped + 1`, compared leaf by leaf on
the raw bytes. The opt-in probs check of `entropy_jax.debug` is tested last.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.experimental import checkify
from jax.tree_util import Partial

from entropy_jax.debug import check_probs, checked_discrete_update, default_atol
from entropy_jax.losses import continuous_loss, discrete_loss
from entropy_jax.state import init_entropy_state, init_population
from entropy_jax.targets import continuous_target, discrete_target
from entropy_jax.update import apply_gradients, continuous_update, discrete_update
from _trees import assert_bit_identical

ADAM = optax.adam(1e-2)
INJECTED = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
NAN, INF = float("nan"), float("inf")


def assert_skipped(old, new):
  """`new` is `old` with `skipped + 1` and nothing else changed, bit for bit."""
  assert int(new.skipped) == int(old.skipped) + 1
  assert_bit_identical(new.replace(skipped=old.skipped), old)


def policy(key, batch=8, actions=4):
  logits = 2.0 * jax.random.normal(key, (batch, actions))
  return jax.nn.softmax(logits), jax.nn.log_softmax(logits)


# One jitted function each: every test reuses the compiled programs.
CU = jax.jit(continuous_update)
DU = jax.jit(discrete_update)
AG = jax.jit(apply_gradients)
CDU = jax.jit(checked_discrete_update, static_argnames="atol")


@functools.cache
def _warm_state(min_alpha=None, max_alpha=None):
  state = init_entropy_state(-2.0, initial_alpha=0.5, optimizer=ADAM, min_alpha=min_alpha, max_alpha=max_alpha)
  for i in range(3):
    state, _ = CU(state, jax.random.normal(jax.random.key(i), (8,)))
  return state


def warm_state(**kw):
  """A state with a history, so the optimizer moments are not zero."""
  return _warm_state(**kw)


# ---------------------------------------------------------------------------
# Constructors: a clear error naming the argument and the received value.

CONSTRUCTOR_CASES = {
    "initial_alpha=0": (lambda: init_entropy_state(-1.0, initial_alpha=0.0), ValueError,
                        r"`initial_alpha` must be positive and finite; got 0\.0"),
    "initial_alpha<0": (lambda: init_entropy_state(-1.0, initial_alpha=-0.5), ValueError,
                        r"`initial_alpha` must be positive and finite; got -0\.5"),
    "initial_alpha=nan": (lambda: init_entropy_state(-1.0, initial_alpha=NAN), ValueError,
                          r"`initial_alpha` must be positive and finite; got nan"),
    "initial_alpha=inf": (lambda: init_entropy_state(-1.0, initial_alpha=INF), ValueError,
                          r"`initial_alpha` must be positive and finite; got inf"),
    "initial_alpha=str": (lambda: init_entropy_state(-1.0, initial_alpha="1"), TypeError,
                          r"`initial_alpha` must be a real number; got '1'"),
    "initial_alpha=None": (lambda: init_entropy_state(-1.0, initial_alpha=None), TypeError,
                           r"`initial_alpha` must be a number or numeric array; got None"),
    "initial_alpha=bool": (lambda: init_entropy_state(-1.0, initial_alpha=True), TypeError,
                           r"`initial_alpha` must be a real number; got True"),
    "initial_alpha=[N]": (lambda: init_entropy_state(-1.0, initial_alpha=jnp.ones(2)), ValueError,
                          r"`initial_alpha` must be a scalar; got shape \(2,\)\. Use init_population"),
    "target=nan": (lambda: init_entropy_state(NAN), ValueError, r"`target` must be finite; got nan"),
    "target=-inf": (lambda: init_entropy_state(-INF), ValueError, r"`target` must be finite; got -inf"),
    "target=None": (lambda: init_entropy_state(None), TypeError,
                    r"`target` must be a number or numeric array; got None"),
    "target=[3]": (lambda: init_entropy_state(jnp.ones(3)), ValueError,
                   r"`target` must be a scalar; got shape \(3,\)"),
    "schedule(0)=nan": (lambda: init_entropy_state(lambda step: jnp.float32(NAN)), ValueError,
                        r"`target` must be finite"),
    "optimizer='adam'": (lambda: init_entropy_state(-1.0, optimizer="adam"), TypeError,
                         r"`optimizer` must be an optax GradientTransformation; got str"),
    "injected lr<0": (lambda: init_entropy_state(
        -1.0, optimizer=optax.inject_hyperparams(optax.adam)(learning_rate=-1e-3)), ValueError,
                      r"`learning_rate` must be finite and >= 0; got -0\.001"),
    "injected lr=nan": (lambda: init_entropy_state(
        -1.0, optimizer=optax.inject_hyperparams(optax.sgd)(learning_rate=NAN)), ValueError,
                        r"`learning_rate` must be finite and >= 0; got nan"),
    "population lr<0": (lambda: init_population(
        -1.0, optimizer=INJECTED, learning_rate=jnp.array([1e-3, -1e-3])), ValueError,
                        r"`learning_rate` must be finite and >= 0; got \[ 0\.001 -0\.001\]"),
    "population lr, no inject": (lambda: init_population(
        -1.0, optimizer=ADAM, learning_rate=jnp.array([1e-3, 1e-2])), ValueError,
                                 r"could not set hyperparameters \['learning_rate'\].*inject_hyperparams"),
    "population sizes differ": (lambda: init_population(
        jnp.zeros(3), initial_alpha=jnp.ones(2)), ValueError, r"must share N=3; got sizes"),
    "population, no size": (lambda: init_population(-1.0), ValueError, r"pass `size`"),
    "loss_form='exp'": (lambda: init_entropy_state(-1.0, loss_form="exp"), ValueError,
                        r"`loss_form` must be one of \('log', 'alpha'\); got 'exp'"),
    "min_alpha=0": (lambda: init_entropy_state(-1.0, min_alpha=0.0), ValueError,
                    r"`min_alpha` must be positive and finite; got 0\.0"),
    "max_alpha=nan": (lambda: init_entropy_state(-1.0, max_alpha=NAN), ValueError,
                      r"`max_alpha` must be positive and finite; got nan"),
    "min_alpha>max_alpha": (lambda: init_entropy_state(-1.0, min_alpha=2.0, max_alpha=1.0),
                            ValueError, r"need min_alpha < max_alpha; got 2\.0 and 1\.0"),
    "initial_alpha outside bounds": (lambda: init_entropy_state(-1.0, initial_alpha=5.0, max_alpha=1.0),
                                     ValueError, r"initial_alpha=5\.0 lies outside the bounds \[None, 1\.0\]"),
    "action_dim=0": (lambda: continuous_target(0), ValueError,
                     r"`action_dim` must be a positive int; got 0"),
    "action_dim=-2": (lambda: discrete_target(-2), ValueError,
                      r"`action_dim` must be a positive int; got -2"),
    "action_dim=1.5": (lambda: continuous_target(1.5), TypeError,
                       r"`action_dim` must be a positive int; got 1\.5 of type float"),
    "action_dim=True": (lambda: discrete_target(True), TypeError,
                        r"`action_dim` must be a positive int; got True of type bool"),
    "ratio=nan": (lambda: discrete_target(4, NAN), ValueError, r"`ratio` must be finite; got nan"),
}


@pytest.mark.parametrize("case", sorted(CONSTRUCTOR_CASES))
def test_constructor_rejects(case):
  fn, error, message = CONSTRUCTOR_CASES[case]
  with pytest.raises(error, match=message):
    fn()


def test_constructor_checks_also_run_when_traced():
  # jax.eval_shape / jit trace the constructor: concrete bad arguments must
  # still be rejected, and good ones must build (abstract) states.
  with pytest.raises(ValueError, match=r"`initial_alpha` must be positive and finite; got -1\.0"):
    jax.eval_shape(lambda: init_entropy_state(-1.0, initial_alpha=-1.0))
  with pytest.raises(ValueError, match=r"lies outside the bounds"):
    jax.eval_shape(lambda: init_population(-1.0, initial_alpha=[0.5, 3.0], max_alpha=2.0))
  abstract = jax.eval_shape(lambda: init_population(-1.0, size=3, min_alpha=0.1))
  assert abstract.log_alpha.shape == (3,) and abstract.log_alpha.dtype == jnp.float32
  built = jax.jit(lambda: init_entropy_state(-1.0, initial_alpha=0.5, max_alpha=2.0))()
  np.testing.assert_array_equal(built.log_alpha, np.log(np.float32(0.5)))


def test_zero_injected_learning_rate_is_allowed_for_warmup():
  # Documented: lr == 0 is accepted (a warm-up schedule starts there).
  tx = optax.inject_hyperparams(optax.sgd)(learning_rate=optax.linear_schedule(0.0, 0.1, 10))
  state = init_entropy_state(-1.0, optimizer=tx)
  new, _ = CU(state, jnp.zeros(4))
  assert float(new.log_alpha) == 0.0 and int(new.step) == 1 and int(new.skipped) == 0


# ---------------------------------------------------------------------------
# Array inputs: wrong rank, shapes, empty batch, integer dtypes.

LA = jnp.zeros(())
P, LP = policy(jax.random.key(0), 4, 3)
STATE = init_entropy_state(-1.0, optimizer=ADAM)
DSTATE = init_entropy_state(0.5, optimizer=ADAM)

ARRAY_CASES = {
    # continuous_loss
    "cont log_probs rank 3": (lambda: continuous_loss(LA, jnp.zeros((2, 3, 1)), -1.0), ValueError,
                              r"`log_probs` must have shape \[B\] or \[B, 1\]; got shape \(2, 3, 1\)"),
    "cont log_probs [B, 2]": (lambda: continuous_loss(LA, jnp.zeros((4, 2)), -1.0), ValueError,
                              r"`log_probs` must have shape \[B\] or \[B, 1\]; got shape \(4, 2\)"),
    "cont log_probs scalar": (lambda: continuous_loss(LA, jnp.zeros(()), -1.0), ValueError,
                              r"got shape \(\)"),
    "cont empty batch": (lambda: continuous_loss(LA, jnp.zeros((0,)), -1.0), ValueError,
                         r"`log_probs` has an empty batch \(shape \(0,\)\)"),
    "cont log_probs int32": (lambda: continuous_loss(LA, jnp.zeros(4, jnp.int32), -1.0), TypeError,
                             r"`log_probs` must be a floating-point array; got dtype int32"),
    "cont log_probs bool": (lambda: continuous_loss(LA, jnp.zeros(4, bool), -1.0), TypeError,
                            r"`log_probs` must be a floating-point array; got dtype bool"),
    "cont log_alpha [2]": (lambda: continuous_loss(jnp.zeros(2), jnp.zeros(4), -1.0), ValueError,
                           r"`log_alpha` must be a scalar \(shape \(\)\); got shape \(2,\)"),
    "cont log_alpha int": (lambda: continuous_loss(jnp.zeros((), jnp.int32), jnp.zeros(4), -1.0),
                           TypeError, r"`log_alpha` must be a floating-point array; got dtype int32"),
    # A plain Python int target (-action_dim) is accepted as a float; an int array is not.
    "cont target int": (lambda: continuous_loss(LA, jnp.zeros(4), jnp.array(-1, jnp.int32)), TypeError,
                        r"`target` must be a floating-point array; got dtype int32"),
    "cont target [3] vs B=4": (lambda: continuous_loss(LA, jnp.zeros(4), jnp.zeros(3)), ValueError,
                               r"`target` must be a scalar or have shape \(4,\).*got shape \(3,\)"),
    "cont weights [3] vs B=4": (lambda: continuous_loss(LA, jnp.zeros(4), -1.0, weights=jnp.ones(3)),
                                ValueError, r"`weights` must have shape \(4,\).*got shape \(3,\)"),
    "cont weights int": (lambda: continuous_loss(LA, jnp.zeros(4), -1.0, weights=jnp.ones(4, int)),
                         TypeError, r"`weights` must be a floating-point array; got dtype int32"),
    "cont form='exp'": (lambda: continuous_loss(LA, jnp.zeros(4), -1.0, form="exp"), ValueError,
                        r"`form` must be one of \('log', 'alpha'\); got 'exp'"),
    # discrete_loss
    "disc probs [A]": (lambda: discrete_loss(LA, P[0], LP[0], 1.0), ValueError,
                       r"`probs` must have shape \[B, A\]; got shape \(3,\)"),
    "disc probs rank 3": (lambda: discrete_loss(LA, P[None], LP[None], 1.0), ValueError,
                          r"`probs` must have shape \[B, A\]; got shape \(1, 4, 3\)"),
    "disc A mismatch": (lambda: discrete_loss(LA, P, LP[:, :2], 1.0), ValueError,
                        r"`probs` and `log_probs` must have the same shape \[B, A\]; got \(4, 3\) and \(4, 2\)"),
    "disc B mismatch": (lambda: discrete_loss(LA, P, LP[:2], 1.0), ValueError,
                        r"got \(4, 3\) and \(2, 3\)"),
    "disc empty batch": (lambda: discrete_loss(LA, P[:0], LP[:0], 1.0), ValueError,
                         r"`probs` has an empty batch \(shape \(0, 3\)\)"),
    "disc no actions": (lambda: discrete_loss(LA, P[:, :0], LP[:, :0], 1.0), ValueError,
                        r"`probs` has no actions \(shape \(4, 0\)\); expected A >= 1"),
    "disc probs int32": (lambda: discrete_loss(LA, P.astype(jnp.int32), LP, 1.0), TypeError,
                         r"`probs` must be a floating-point array; got dtype int32"),
    "disc log_probs int8": (lambda: discrete_loss(LA, P, LP.astype(jnp.int8), 1.0), TypeError,
                            r"`log_probs` must be a floating-point array; got dtype int8"),
    "disc mask int": (lambda: discrete_loss(LA, P, LP, 1.0, mask=jnp.ones((4, 3), jnp.int32)),
                      TypeError, r"`mask` must be bool; got dtype int32"),
    "disc mask shape": (lambda: discrete_loss(LA, P, LP, 1.0, mask=jnp.ones((4, 2), bool)),
                        ValueError, r"`mask` must have the shape of `probs`, \(4, 3\); got \(4, 2\)"),
    # fused updates and apply_gradients
    "cont update [B, 2]": (lambda: continuous_update(STATE, jnp.zeros((4, 2))), ValueError,
                           r"continuous_loss: `log_probs` must have shape \[B\] or \[B, 1\]; got shape \(4, 2\)"),
    "cont update int": (lambda: continuous_update(STATE, jnp.zeros(4, jnp.int32)), TypeError,
                        r"got dtype int32"),
    "cont update empty": (lambda: continuous_update(STATE, jnp.zeros((0, 1))), ValueError,
                          r"empty batch \(shape \(0, 1\)\)"),
    "cont update, unvmapped population": (lambda: continuous_update(init_population(-1.0, size=3), jnp.zeros(4)),
                                          ValueError, r"`log_alpha` must be a scalar.*got shape \(3,\).*vmap"),
    "disc update mismatch": (lambda: discrete_update(DSTATE, P, LP[:, :2]), ValueError,
                             r"got \(4, 3\) and \(4, 2\)"),
    "disc update int": (lambda: discrete_update(DSTATE, P, LP.astype(jnp.int32)), TypeError,
                        r"`log_probs` must be a floating-point array; got dtype int32"),
    "disc update ratio, no mask": (lambda: discrete_update(DSTATE, P, LP, masked_target_ratio=0.98),
                                   ValueError, r"`masked_target_ratio` needs a `mask`"),
    "grad [3]": (lambda: apply_gradients(STATE, jnp.zeros(3)), ValueError,
                 r"`grad` must be a scalar \(shape \(\)\); got shape \(3,\)"),
    "grad int": (lambda: apply_gradients(STATE, 1), TypeError,
                 r"`grad` must be a floating-point array; got dtype int32"),
    "grad str": (lambda: apply_gradients(STATE, "a"), TypeError,
                 r"`grad` must be a number or numeric array; got 'a' of type str"),
    "apply_gradients, unvmapped population": (lambda: apply_gradients(init_population(-1.0, size=3), 1.0),
                                              ValueError,
                                              r"expected a single state \(log_alpha of shape \(\)\); got"
                                              r" log_alpha of shape \(3,\).*jax\.vmap"),
}


@pytest.mark.parametrize("case", sorted(ARRAY_CASES))
def test_array_input_rejected(case):
  fn, error, message = ARRAY_CASES[case]
  with pytest.raises(error, match=message):
    fn()


def test_shape_errors_are_raised_at_trace_time_under_jit():
  with pytest.raises(ValueError, match=r"got \(4, 3\) and \(4, 2\)"):
    DU(DSTATE, P, LP[:, :2])
  with pytest.raises(TypeError, match=r"got dtype int32"):
    CU(STATE, jnp.zeros(4, jnp.int32))
  with pytest.raises(ValueError, match=r"empty batch"):
    CU(STATE, jnp.zeros((0,)))


# ---------------------------------------------------------------------------
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


@pytest.mark.parametrize("grad", [NAN, INF, -INF, 1e20, -3e38], ids=["nan", "inf", "-inf", "1e20", "-3e38"])
def test_bad_gradient_is_skipped(grad):
  # 1e20 and -3e38 are finite, but Adam's nu = grad**2 overflows float32: the
  # step would freeze alpha for good, so it is skipped too.
  state = warm_state(min_alpha=1e-3, max_alpha=1e3)
  new = AG(state, jnp.float32(grad))
  assert_skipped(state, new)


@pytest.mark.parametrize("grad", [200.0, -200.0, 90.0], ids=["log_alpha=-200", "log_alpha=200", "log_alpha=-90"])
def test_step_that_underflows_or_overflows_alpha_is_skipped(grad):
  # log_alpha stays finite, but alpha = exp(log_alpha) would be 0, inf, or
  # below float32's smallest normal (log_alpha < -87).
  state = init_entropy_state(-1.0, optimizer=optax.sgd(1.0))
  new = AG(state, jnp.float32(grad))
  assert_skipped(state, new)
  assert float(AG(state, jnp.float32(50.0)).log_alpha) == -50.0  # a representable step is taken


def test_large_finite_gradient_that_fits_is_applied():
  # The overflow guard does not skip a large gradient Adam can represent.
  state = warm_state()
  new = AG(state, jnp.float32(1e18))
  assert int(new.skipped) == int(state.skipped) and int(new.step) == int(state.step) + 1
  assert np.all(np.isfinite(np.asarray(new.opt_state[0].nu)))


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
      lambda params: jnp.float32(jnp.inf), lambda updates, state, params=None: (updates, state))
  tx = optax.chain(optax.adam(1e-2), keeps_inf)
  state = init_entropy_state(-1.0, optimizer=tx)
  new, _ = CU(state, jnp.full((4,), 2.0))
  assert int(new.skipped) == 0 and int(new.step) == 1
  assert float(new.log_alpha) > 0.0  # H = -2 is below the target -1: alpha rises.


def test_population_skips_only_the_bad_member():
  pop = init_population(jnp.array([-1.0, -2.0, -3.0]), optimizer=ADAM)
  lps = jax.random.normal(jax.random.key(3), (3, 8)).at[1, 0].set(jnp.nan)
  new, metrics = jax.jit(jax.vmap(continuous_update))(pop, lps)
  np.testing.assert_array_equal(new.skipped, [0, 1, 0])
  np.testing.assert_array_equal(new.step, [1, 0, 1])
  member = lambda tree, i: jax.tree.map(lambda x: x[i], tree)
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


# ---------------------------------------------------------------------------
# Bounds.


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
  log_lo, log_hi = float(np.float32(math.log(lo))), float(np.float32(math.log(hi)))
  assert all(log_lo <= h <= log_hi for h in history)
  assert history[-1] == (log_lo if direction == "down" else log_hi)
  assert int(state.skipped) == 0


# ---------------------------------------------------------------------------
# The opt-in probs check (entropy_jax.debug).


def test_checked_update_accepts_a_distribution_and_matches_the_fast_path():
  p, lp = policy(jax.random.key(6), 16, 5)
  state = warm_state()
  err, (new, metrics) = CDU(state, p, lp)
  assert err.get() is None
  fast, fast_metrics = DU(state, p, lp)
  assert_bit_identical(new, fast)
  assert_bit_identical(metrics, fast_metrics)


BAD_PROBS = {
    "unnormalised": (lambda p, lp: (p.at[2].multiply(1.01), lp), r"row 2 sums to 1\.0"),
    "negative": (lambda p, lp: (p.at[3, 0].add(-p[3, 0] - 0.1).at[3, 1].add(p[3, 0] + 0.1), lp),
                 r"probs must be >= 0; row 3 has min -0\.1"),
    "nan": (lambda p, lp: (p.at[1, 1].set(jnp.nan), lp), r"probs must be finite; row 1"),
    "logits passed as probs": (lambda p, lp: (2.0 * lp, lp), r"probs must be >= 0; row 0"),
    "log_probs of another row": (lambda p, lp: (p, lp.at[4].set(lp[0])),
                                 r"exp\(log_probs\) must equal probs \(atol 1e-05\); row 4"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROBS))
def test_checked_update_reports_bad_probs(case):
  p, lp = policy(jax.random.key(7), 8, 4)
  make, message = BAD_PROBS[case]
  bad_p, bad_lp = make(p, lp)
  err, _ = CDU(warm_state(), bad_p, bad_lp)
  with pytest.raises(Exception, match=message):
    err.throw()
  # Off by default: the fast path runs on the same input without a report.
  DU(warm_state(), bad_p, bad_lp)


def test_probs_check_tolerance_is_per_dtype_and_honours_masks():
  assert default_atol(jnp.float32) == 1e-5
  assert default_atol(jnp.float16) == 4 * 2.0**-10
  assert default_atol(jnp.bfloat16) == 4 * 2.0**-7
  p, lp = policy(jax.random.key(8), 8, 4)
  for dtype in (jnp.bfloat16, jnp.float16):
    err, _ = CDU(warm_state(), p.astype(dtype), lp.astype(dtype))
    assert err.get() is None, dtype
  # Off by just over the tolerance fails, just under passes.
  tol = default_atol(jnp.float32)
  for scale, ok in ((1 + 0.5 * tol, True), (1 + 3 * tol, False)):
    err, _ = CDU(warm_state(), p * scale, jnp.log(p * scale))
    assert (err.get() is None) == ok, scale
  # Masked-out entries are neither checked nor summed.
  mask = jnp.ones(p.shape, bool).at[:, 0].set(False)
  renorm = jnp.where(mask, p, 0.0) / jnp.sum(jnp.where(mask, p, 0.0), -1, keepdims=True)
  garbage = jnp.where(mask, renorm, -7.0)
  err, _ = CDU(warm_state(), garbage, jnp.log(renorm), mask=mask)
  assert err.get() is None
  with pytest.raises(ValueError, match=r"`atol` must be positive and finite; got -1\.0"):
    CDU(warm_state(), p, lp, atol=-1.0)


def test_probs_check_adds_nothing_to_the_default_program():
  p, lp = policy(jax.random.key(9))
  state = warm_state()
  fast = jax.make_jaxpr(discrete_update)(state, p, lp)
  checked = jax.make_jaxpr(checked_discrete_update)(state, p, lp)
  assert len(checked.eqns) > len(fast.eqns)
  # check_probs composes with any function the user checkifies.
  err, _ = checkify.checkify(lambda q: check_probs(q))(-p)
  assert "probs must be >= 0" in err.get()
