"""Tests of entropy_jax.state: construction, validation in float32, populations, pytree behaviour.

The property tests at the end draw constructor arguments from the whole
float64 and float32 ranges (NaN and infinities included): every argument a
constructor accepts must give a state whose first update with finite inputs
is applied as the optimizer says (not skipped), moving log_alpha or leaving
it at the bound it is pushed against; every other argument is refused with a
`ValueError` or `TypeError` that names the usable range.
"""

import dataclasses
import functools
import math
import re

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _trees import assert_vmap_equals_loop, member, stack
from hypothesis import example, given, settings
from hypothesis import strategies as st

import entropy_jax as ej
from entropy_jax import (
  ALPHA_MAX,
  ALPHA_MIN,
  LOG_ALPHA_MAX,
  LOG_ALPHA_MIN,
  EntropyState,
  continuous_update,
  discrete_update,
  fixed_alpha_state,
  init_entropy_state,
  init_population,
)

NAN, INF = float("nan"), float("inf")
INJECTED = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)


def test_init_values_and_dtypes():
  s = init_entropy_state(-3.0, initial_alpha=0.2)
  np.testing.assert_allclose(s.log_alpha, math.log(0.2), rtol=1e-6)
  np.testing.assert_allclose(s.alpha, 0.2, rtol=1e-6)
  assert s.log_alpha.dtype == s.target.dtype == jnp.float32
  assert s.step.dtype == s.skipped.dtype == jnp.int32
  assert int(s.step) == int(s.skipped) == 0
  assert float(s.target) == -3.0
  assert s.target_schedule is None and s.loss_form == "log"
  assert s.tx is ej.state.DEFAULT_OPTIMIZER


@pytest.mark.parametrize("grad", [1e4, -1e4])
def test_a_state_without_bounds_stops_where_alpha_is_a_normal_float32(grad):
  s = ej.apply_gradients(init_entropy_state(-1.0, optimizer=optax.sgd(1.0)), grad)
  assert float(s.log_alpha) in (LOG_ALPHA_MIN, LOG_ALPHA_MAX) and int(s.skipped) == 0
  assert np.finfo(np.float32).tiny <= float(s.alpha) < np.inf


def test_init_under_x64_keeps_float32():
  with jax.enable_x64(True):
    s = init_entropy_state(-1.0)
    assert s.log_alpha.dtype == jnp.float32 and s.step.dtype == jnp.int32
    with pytest.raises(ValueError, match=r"`initial_alpha` .*got 1e\+39"):  # the float32 rule holds under x64 too
      init_entropy_state(-1.0, initial_alpha=1e39)


def test_state_is_immutable_pytree_with_static_optimizer():
  tx = optax.sgd(0.1)
  s = init_entropy_state(-1.0, optimizer=tx)
  with pytest.raises(dataclasses.FrozenInstanceError):
    s.log_alpha = jnp.float32(1.0)
  leaves, treedef = jax.tree.flatten(s)
  assert all(isinstance(x, jax.Array) for x in leaves)
  assert jax.tree.unflatten(treedef, leaves).tx is tx
  assert s.replace(target=jnp.float32(2.0)).target == 2.0 and s.target == -1.0


def test_bounds_are_log_space():
  s = init_entropy_state(-1.0, initial_alpha=0.5, min_alpha=0.01, max_alpha=10.0)
  np.testing.assert_allclose([s.log_alpha_min, s.log_alpha_max], np.log([0.01, 10.0]), rtol=1e-6)


def test_schedule_target_starts_at_schedule_zero():
  s = init_entropy_state(optax.linear_schedule(-1.0, -3.0, 100))
  assert float(s.target) == -1.0
  assert isinstance(s.target_schedule, jax.tree_util.Partial)


# ----------------------------------------------------------------------------
# Constructors: a clear error naming the argument, the value and the usable range.

# Each rejected call: (call, error, the function named, the argument named, what came as printed).
BAD_INITIAL_ALPHAS = {
  "<0": (-0.5, "-0.5"),
  "=0": (0.0, "0.0"),
  "=nan": (NAN, "nan"),
  "=inf": (INF, "inf"),
  "=1e39 (inf in float32)": (1e39, "1e+39"),
  "=2e38 (alpha overflows)": (2e38, "2e+38"),
  "=1e-38 (below ALPHA_MIN)": (1e-38, "1e-38"),
  "=1e-46 (0 in float32)": (1e-46, "1e-46"),
}
INIT = "init_entropy_state"
POP = "init_population"
INJECTED_SGD = optax.inject_hyperparams(optax.sgd)

CONSTRUCTOR_CASES = {
  **{
    f"initial_alpha{label}": (
      functools.partial(init_entropy_state, -1.0, initial_alpha=value),
      ValueError,
      INIT,
      "initial_alpha",
      printed,
    )
    for label, (value, printed) in BAD_INITIAL_ALPHAS.items()
  },
  "initial_alpha=str": (lambda: init_entropy_state(-1.0, initial_alpha="1"), TypeError, INIT, "initial_alpha", "'1'"),
  "initial_alpha=None": (
    lambda: init_entropy_state(-1.0, initial_alpha=None),
    TypeError,
    INIT,
    "initial_alpha",
    "None",
  ),
  "initial_alpha=bool": (
    lambda: init_entropy_state(-1.0, initial_alpha=True),
    TypeError,
    INIT,
    "initial_alpha",
    "True",
  ),
  "initial_alpha=[N]": (
    lambda: init_entropy_state(-1.0, initial_alpha=jnp.ones(2)),
    ValueError,
    INIT,
    "initial_alpha",
    "(2,)",
  ),
  "target=nan": (lambda: init_entropy_state(NAN), ValueError, INIT, "target", "nan"),
  "target=-inf": (lambda: init_entropy_state(-INF), ValueError, INIT, "target", "-inf"),
  "target=1e39 (inf in float32)": (lambda: init_entropy_state(1e39), ValueError, INIT, "target", "1e+39"),
  "target=None": (lambda: init_entropy_state(None), TypeError, INIT, "target", "None"),
  "target=[3]": (lambda: init_entropy_state(jnp.ones(3)), ValueError, INIT, "target", "(3,)"),
  "schedule(0)=nan": (
    lambda: init_entropy_state(lambda step: jnp.float32(NAN)),
    ValueError,
    f"{INIT} (the schedule's value at step 0)",
    "target",
    "nan",
  ),
  "schedule start=1e39": (
    lambda: init_entropy_state(ej.linear_schedule(1e39, 0.0, 10)),
    ValueError,
    "linear_schedule",
    "start",
    "1e+39",
  ),
  "optimizer='adam'": (lambda: init_entropy_state(-1.0, optimizer="adam"), TypeError, INIT, "optimizer", "str"),
  "injected lr<0": (
    lambda: init_entropy_state(-1.0, optimizer=INJECTED_SGD(learning_rate=-1e-3)),
    ValueError,
    INIT,
    "learning_rate",
    "-0.001",
  ),
  "injected lr=nan": (
    lambda: init_entropy_state(-1.0, optimizer=INJECTED_SGD(learning_rate=NAN)),
    ValueError,
    INIT,
    "learning_rate",
    "nan",
  ),
  "population lr<0": (
    lambda: init_population(-1.0, optimizer=INJECTED, learning_rate=jnp.array([1e-3, -1e-3])),
    ValueError,
    POP,
    "learning_rate",
    "-0.001 at index 1",
  ),
  "population lr=1e39": (
    lambda: init_population(-1.0, optimizer=INJECTED, learning_rate=np.array([1e-3, 1e39])),
    ValueError,
    POP,
    "learning_rate",
    "1e+39 at index 1",
  ),
  "population target=1e39 in [N]": (
    lambda: init_population(np.array([1.0, 2.0, 1e39])),
    ValueError,
    POP,
    "target",
    "1e+39 at index 2",
  ),
  "population alpha=0 in [N]": (
    lambda: init_population(-1.0, initial_alpha=np.array([1.0, 0.0])),
    ValueError,
    POP,
    "initial_alpha",
    "0.0 at index 1",
  ),
  "population lr, no inject": (
    lambda: init_population(-1.0, optimizer=optax.adam(1e-3), learning_rate=jnp.array([1e-3, 1e-2])),
    ValueError,
    POP,
    "optimizer",
    "['learning_rate']",
  ),
  "population sizes differ": (
    lambda: init_population(jnp.zeros(3), initial_alpha=jnp.ones(2)),
    ValueError,
    POP,
    "size",
    "'initial_alpha': 2",
  ),
  "population, no size": (lambda: init_population(-1.0), ValueError, POP, "size", "size=None"),
  "population [N, 1]": (lambda: init_population(jnp.zeros((3, 1))), ValueError, POP, "target", "(3, 1)"),
  "loss_form='exp'": (lambda: init_entropy_state(-1.0, loss_form="exp"), ValueError, INIT, "loss_form", "'exp'"),
  "min_alpha=0": (lambda: init_entropy_state(-1.0, min_alpha=0.0), ValueError, INIT, "min_alpha", "0.0"),
  "min_alpha=1e-39": (lambda: init_entropy_state(-1.0, min_alpha=1e-39), ValueError, INIT, "min_alpha", "1e-39"),
  "max_alpha=nan": (lambda: init_entropy_state(-1.0, max_alpha=NAN), ValueError, INIT, "max_alpha", "nan"),
  "max_alpha=1e39": (lambda: init_entropy_state(-1.0, max_alpha=1e39), ValueError, INIT, "max_alpha", "1e+39"),
  "min_alpha>max_alpha": (
    lambda: init_entropy_state(-1.0, min_alpha=2.0, max_alpha=1.0),
    ValueError,
    INIT,
    "max_alpha",
    "2.0 and 1.0",
  ),
  "initial_alpha outside bounds": (
    lambda: init_entropy_state(-1.0, initial_alpha=5.0, max_alpha=1.0),
    ValueError,
    INIT,
    "initial_alpha",
    "5.0",
  ),
  "fixed alpha=0": (lambda: fixed_alpha_state(0.0), ValueError, "fixed_alpha_state", "alpha", "0.0"),
  "fixed alpha=1e39": (lambda: fixed_alpha_state(1e39), ValueError, "fixed_alpha_state", "alpha", "1e+39"),
  "fixed target=inf": (lambda: fixed_alpha_state(0.2, INF), ValueError, "fixed_alpha_state", "target", "inf"),
}


@pytest.mark.parametrize("case", sorted(CONSTRUCTOR_CASES))
def test_constructor_rejects(case):
  fn, error, function, argument, got = CONSTRUCTOR_CASES[case]
  with pytest.raises(error) as e:
    fn()
  message = str(e.value)
  assert message.startswith(f"{function}: ") and argument in message and got in message.split("got", 1)[1], message


def test_constructor_checks_also_run_when_traced():
  # jax.eval_shape / jit trace the constructor: concrete bad arguments must
  # still be rejected, and good ones must build (abstract) states.
  with pytest.raises(ValueError, match=r"^init_entropy_state: `initial_alpha` .*got -1\.0"):
    jax.eval_shape(lambda: init_entropy_state(-1.0, initial_alpha=-1.0))
  with pytest.raises(ValueError, match=r"^init_population: `initial_alpha` .*got \[0\.5, 3\.0\]"):
    jax.eval_shape(lambda: init_population(-1.0, initial_alpha=[0.5, 3.0], max_alpha=2.0))
  abstract = jax.eval_shape(lambda: init_population(-1.0, size=3, min_alpha=0.1))
  assert abstract.log_alpha.shape == (3,) and abstract.log_alpha.dtype == jnp.float32
  built = jax.jit(lambda: init_entropy_state(-1.0, initial_alpha=0.5, max_alpha=2.0))()
  np.testing.assert_array_equal(built.log_alpha, np.log(np.float32(0.5)))


def test_bounds_are_checked_when_initial_alpha_is_traced():
  # Vmapped over initial_alpha, concrete bounds still meet the constructor's checks.
  build = lambda a: init_entropy_state(-1.0, initial_alpha=a, min_alpha=1.0, max_alpha=0.5)
  with pytest.raises(ValueError, match=r"^init_entropy_state: .*min_alpha < max_alpha.*got 1\.0 and 0\.5"):
    jax.vmap(build)(jnp.array([0.7, 0.8]))


def test_zero_injected_learning_rate_is_allowed_for_warmup():
  # Documented: lr == 0 is accepted (a warm-up schedule starts there).
  tx = optax.inject_hyperparams(optax.sgd)(learning_rate=optax.linear_schedule(0.0, 0.1, 10))
  state = init_entropy_state(-1.0, optimizer=tx)
  new, _ = jax.jit(continuous_update)(state, jnp.zeros(4))
  assert float(new.log_alpha) == 0.0 and int(new.step) == 1 and int(new.skipped) == 0


def test_the_edges_of_the_usable_range_are_accepted():
  for alpha in (ALPHA_MIN * 1.0001, ALPHA_MAX * 0.9999):
    s = init_entropy_state(-1.0, initial_alpha=alpha, min_alpha=ALPHA_MIN * 1.0001, max_alpha=ALPHA_MAX * 0.9999)
    assert np.isfinite(float(s.alpha)) and float(s.alpha) >= np.finfo(np.float32).tiny


# ----------------------------------------------------------------------------
# Populations.


def test_population_per_member_values():
  targets = jnp.array([-1.0, -2.0, -3.0])
  pop = init_population(
    targets, initial_alpha=jnp.array([1.0, 0.5, 0.2]), optimizer=INJECTED, learning_rate=jnp.array([1e-3, 1e-2, 1e-1])
  )
  np.testing.assert_array_equal(pop.target, targets)
  np.testing.assert_allclose(pop.alpha, [1.0, 0.5, 0.2], rtol=1e-6)
  np.testing.assert_allclose(pop.opt_state.hyperparams["learning_rate"], [1e-3, 1e-2, 1e-1])
  assert pop.step.shape == (3,)
  # The same as stacking members built one by one (learning rates aside).
  members = [
    init_entropy_state(float(t), initial_alpha=a, optimizer=INJECTED) for t, a in zip(targets, [1.0, 0.5, 0.2])
  ]
  stacked = stack(members)
  assert jax.tree.structure(pop) == jax.tree.structure(stacked)
  for got, want in zip(jax.tree.leaves(pop.replace(opt_state=stacked.opt_state)), jax.tree.leaves(stacked)):
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_population_scalar_broadcast():
  pop = init_population(-2.0, size=4, min_alpha=0.1)
  assert pop.log_alpha.shape == pop.target.shape == pop.log_alpha_min.shape == (4,)
  np.testing.assert_allclose(pop.log_alpha_min, np.log(np.float32(0.1)), rtol=1e-6)


def test_flax_serialization_round_trip():
  s = init_entropy_state(-1.0, initial_alpha=0.3)
  restored = flax.serialization.from_bytes(s, flax.serialization.to_bytes(s))
  assert isinstance(restored, EntropyState)
  for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------
# Fixed alpha.

PROBS = jax.nn.softmax(jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, 5)), jnp.float32))


def test_fixed_alpha_never_changes():
  s = fixed_alpha_state(0.2, -3.0)
  lp = jnp.array([-0.5, -1.5, 0.25, -1.0])
  update = jax.jit(continuous_update)
  log_alpha0 = np.asarray(s.log_alpha)
  for _ in range(3):
    s, m = update(s, lp)
  np.testing.assert_array_equal(s.log_alpha, log_alpha0)
  np.testing.assert_allclose(m["alpha"], 0.2, rtol=1e-6)
  np.testing.assert_allclose(m["loss"], -math.log(0.2) * (np.mean(np.asarray(lp)) - 3.0), rtol=1e-5)
  assert int(s.step) == 3 and int(s.skipped) == 0
  s = ej.apply_gradients(s, jnp.nan)
  assert int(s.skipped) == 1 and int(s.step) == 3


def test_fixed_alpha_states_stack_and_vmap_equals_loop():
  assert jax.tree.structure(fixed_alpha_state(0.1)) == jax.tree.structure(fixed_alpha_state(3.0))
  alphas = jnp.array([0.05, 0.2, 1.0])
  pop = jax.vmap(fixed_alpha_state)(alphas)
  out, m = assert_vmap_equals_loop(lambda s, p: discrete_update(s, p, jnp.log(p)), pop, PROBS)
  np.testing.assert_array_equal(out.log_alpha, pop.log_alpha)
  np.testing.assert_allclose(m["alpha"], alphas, rtol=1e-6)


# ----------------------------------------------------------------------------
# Properties over the whole float32 and float64 range.

ANY_FLOAT = st.one_of(
  st.floats(),  # every float64, NaN and infinities included
  st.floats(width=32),  # every float32
  st.sampled_from([0.0, ALPHA_MIN, ALPHA_MAX, 1e-38, 1e-39, 1e-45, 1e38, 2e38, 3.4e38, 1e39, 1e300, 5e-324]),
)
LR = 3e-4  # the default optimizer's
CU = jax.jit(continuous_update)


def finite_inputs(target):
  """log_probs whose batch entropy H keeps |H - target| >= 1, so the gradient never vanishes."""
  return jnp.zeros(4) if abs(target) >= 1.0 else jnp.full((4,), -2.0)


def assert_first_update_is_applied(state):
  """Not skipped, and log_alpha takes Adam's first step, clamped to its bounds.

  Adam's first step is `lr * g / (|g| + eps)`, with `g = H - target` (log
  form) or `alpha * (H - target)` (alpha form, saturated at the float32
  maximum and limited to 2**60). In the log form it is `lr` (3e-4), more than
  an ulp of any |log_alpha| <= 88, so log_alpha moves unless it sits at the
  bound it is pushed against. In the alpha form a tiny alpha makes the step
  vanish, as that form intends.
  """
  target = float(state.target)
  log_probs = finite_inputs(target)
  stat = float(-np.mean(np.asarray(log_probs, np.float64))) - target  # H - target
  new, metrics = CU(state, log_probs)
  assert int(new.skipped) == 0 and int(new.step) == 1, (state, metrics)
  old, lo, hi = float(state.log_alpha), float(state.log_alpha_min), float(state.log_alpha_max)
  g = stat if state.loss_form == "log" else math.exp(old) * stat
  g = max(min(g, float(np.finfo(np.float32).max), 2.0**60), -(2.0**60))
  step = LR * g / (abs(g) + 1e-8)
  expected = min(max(old - step, lo), hi)
  got = float(new.log_alpha)
  ulp = float(np.spacing(np.float32(max(abs(old), abs(expected)))))
  assert abs(got - expected) <= 2 * ulp + 1e-7 * abs(step), (old, got, expected)
  if abs(step) > ulp:
    assert got != old or got in (lo, hi)
  assert math.isfinite(float(new.alpha)) and float(new.alpha) > 0


def accepts(fn):
  """`fn()`'s state, or None if it refuses the arguments with a message naming the rule broken."""
  try:
    return fn()
  except (ValueError, TypeError) as e:
    assert re.search(
      r"usable range|representable in float32|must be >= 0|min_alpha < max_alpha|lie in \[min_alpha, max_alpha\]",
      str(e),
    ), e
    return None


@settings(max_examples=150, deadline=None, derandomize=True)
@example(target=-1.0, alpha=ALPHA_MIN * 1.0001, low=None, high=None, form="log", x64=False)
@example(target=3.4e38, alpha=ALPHA_MAX * 0.9999, low=None, high=None, form="alpha", x64=True)
@example(target=-5.0, alpha=ALPHA_MAX * 0.9999, low=None, high=None, form="alpha", x64=False)
@given(
  target=ANY_FLOAT,
  alpha=ANY_FLOAT,
  low=st.none() | ANY_FLOAT,
  high=st.none() | ANY_FLOAT,
  form=st.sampled_from(["log", "alpha"]),
  x64=st.booleans(),
)
def test_init_entropy_state_accepts_only_states_that_update(target, alpha, low, high, form, x64):
  with jax.enable_x64(x64):
    state = accepts(
      lambda: init_entropy_state(target, initial_alpha=alpha, min_alpha=low, max_alpha=high, loss_form=form)
    )
    if state is not None:
      assert_first_update_is_applied(state)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
  targets=st.lists(ANY_FLOAT, min_size=2, max_size=2),
  alphas=st.lists(ANY_FLOAT, min_size=2, max_size=2),
  lrs=st.lists(ANY_FLOAT, min_size=2, max_size=2),
)
def test_init_population_checks_every_member(targets, alphas, lrs):
  tx = optax.inject_hyperparams(ej.adam)(learning_rate=LR)
  pop = accepts(
    lambda: init_population(
      np.array(targets), initial_alpha=np.array(alphas), optimizer=tx, learning_rate=np.array(lrs)
    )
  )
  if pop is None:
    return
  assert all(lr >= 0 for lr in lrs)
  for i in range(2):
    one = member(pop, i)
    if lrs[i] == LR:  # the property's step size; other rates are checked by the optimizer tests
      assert_first_update_is_applied(one)
    else:
      new, _ = CU(one, finite_inputs(float(one.target)))
      assert int(new.skipped) == 0 and math.isfinite(float(new.log_alpha))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(alpha=ANY_FLOAT, target=ANY_FLOAT)
def test_fixed_alpha_state_accepts_only_usable_values(alpha, target):
  state = accepts(lambda: fixed_alpha_state(alpha, target))
  if state is not None:
    new, metrics = CU(state, finite_inputs(float(state.target)))
    assert int(new.skipped) == 0 and int(new.step) == 1
    assert float(new.log_alpha) == float(state.log_alpha) and math.isfinite(float(metrics["alpha"]))
