"""Property-based tests (hypothesis) of the functional core (issue 6).

Over batch shapes, input dtypes (float32, bfloat16, float16), targets,
initial alphas, optimizers, learning rates, loss forms and bounds:

- alpha stays finite and positive, and within the bounds, after every update;
- jit, eager and vmap agree;
- an update with a non-finite value anywhere in its input is skipped, leaving
  the state bit-identical except `skipped + 1`;
- bounds hold for any gradient, however large.

Optimizers are `optax.inject_hyperparams` instances built once, so the
learning rate is a state leaf and every example reuses compiled programs;
batch sizes come from a short list for the same reason.
"""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
from hypothesis import example, given, settings, strategies as st

from entropy_jax.state import init_entropy_state
from entropy_jax.update import apply_gradients, continuous_update, discrete_update
from _trees import assert_bit_identical

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
# log_alpha by ~1000 (alpha would underflow to 0 or overflow to inf).
UNBOUNDED_SGD = {"target": 0.0, "initial_alpha": 1.0, "min_alpha": None, "max_alpha": None,
                 "optimizer": "sgd", "learning_rate": 1e-3, "loss_form": "log"}


CU = jax.jit(continuous_update)
DU = jax.jit(discrete_update)
AG = jax.jit(apply_gradients)
VCU = jax.jit(jax.vmap(continuous_update))


@st.composite
def configs(draw):
  alpha = math.exp(draw(st.floats(-7.0, 4.6)))
  bounded = draw(st.booleans())
  lo = alpha * math.exp(-draw(st.floats(0.1, 5.0))) if bounded else None
  hi = alpha * math.exp(draw(st.floats(0.1, 5.0))) if bounded else None
  return {
      "target": draw(st.floats(-20.0, 20.0)),
      "initial_alpha": alpha,
      "min_alpha": lo,
      "max_alpha": hi,
      "optimizer": draw(st.sampled_from(sorted(OPTIMIZERS))),
      "learning_rate": math.exp(draw(st.floats(math.log(1e-4), math.log(0.3)))),
      "loss_form": draw(st.sampled_from(["log", "alpha"])),
  }


def make_state(cfg):
  state = init_entropy_state(
      cfg["target"], initial_alpha=cfg["initial_alpha"], optimizer=OPTIMIZERS[cfg["optimizer"]],
      min_alpha=cfg["min_alpha"], max_alpha=cfg["max_alpha"], loss_form=cfg["loss_form"],
  )
  opt_state = optax.tree_utils.tree_set(state.opt_state, learning_rate=jnp.float32(cfg["learning_rate"]))
  return state.replace(opt_state=opt_state)


def continuous_inputs(seed, batch, dtype, scale):
  rng = np.random.default_rng(seed)
  return jnp.asarray(scale * rng.standard_normal(batch) - scale, DTYPES[dtype])


def discrete_inputs(seed, batch, actions, dtype, scale):
  rng = np.random.default_rng(seed)
  logits = jnp.asarray(scale * rng.standard_normal((batch, actions)), jnp.float32)
  return (jax.nn.softmax(logits).astype(DTYPES[dtype]),
          jax.nn.log_softmax(logits).astype(DTYPES[dtype]))


def assert_sane(state):
  """alpha finite and positive; log_alpha within the state's bounds."""
  alpha = float(state.alpha)
  assert math.isfinite(alpha) and alpha > 0.0, alpha
  assert float(state.log_alpha_min) <= float(state.log_alpha) <= float(state.log_alpha_max)


def assert_close(a, b):
  """Integer leaves equal; float leaves within 2 ulp."""
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    if np.issubdtype(x.dtype, np.floating):
      np.testing.assert_array_max_ulp(x, y, maxulp=2)
    else:
      np.testing.assert_array_equal(x, y)


EPS = float(np.finfo(np.float32).eps)
ULPS = 8  # relative error allowed in each step's increment (derivation below)


def assert_same_step(old, a, b, metrics_a, metrics_b):
  """`a` and `b`, two results of one update of `old`, agree to rounding.

  vmap runs XLA's vectorised CPU exp/log kernels, a single member the scalar
  ones; they differ by up to 2 ulp (see tests/test_features.py); and jit may
  fuse `sum / B` into `sum * (1 / B)`, which eager does not (1 ulp). Each new
  leaf is `old + increment`, and an increment is at most a few roundings away
  from one exp: the alpha-form gradient `exp(log_alpha) * stat` (3 ulp),
  Adam's `nu` increment `(1 - b2) * g**2` (twice the relative error of `g`,
  plus two roundings: 8 ulp). So |a - b| <= 8 eps (|old| + |a - old|); a
  subtraction that cancels makes that an absolute bound, not a relative one.
  """
  for x0, x, y in zip(jax.tree.leaves(old), jax.tree.leaves(a), jax.tree.leaves(b)):
    x0, x, y = np.asarray(x0), np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape
    if np.issubdtype(x.dtype, np.floating):
      finite = np.isfinite(x0)  # the bounds (+-inf) are copied as they are
      np.testing.assert_array_equal(x[~finite], y[~finite])
      x0, x, y = x0[finite], x[finite], y[finite]
      bound = ULPS * EPS * (np.abs(x0) + np.abs(x - x0)) + np.finfo(np.float32).tiny
      assert np.all(np.abs(x - y) <= bound), (x0, x, y)
    else:
      np.testing.assert_array_equal(x, y)
  for key in ("entropy", "target", "skipped"):
    assert_close(metrics_a[key], metrics_b[key])
  np.testing.assert_allclose(metrics_a["loss"], metrics_b["loss"], rtol=ULPS * EPS, atol=0)
  # alpha = exp(log_alpha): an absolute error d in log_alpha is a relative d in alpha.
  d = ULPS * EPS * (abs(float(old.log_alpha)) + abs(float(a.log_alpha) - float(old.log_alpha)))
  np.testing.assert_allclose(metrics_a["alpha"], metrics_b["alpha"], rtol=d + 3 * EPS, atol=0)


@SETTINGS
@example(cfg=dict(UNBOUNDED_SGD, initial_alpha=50.0, learning_rate=0.3, loss_form="alpha"),
         batch=6, dtype="float32", scale=30.0, seed=0)  # a step of ~-2e4 in log_alpha
@given(cfg=configs(), batch=st.sampled_from(BATCHES), dtype=st.sampled_from(sorted(DTYPES)),
       scale=st.floats(0.01, 30.0), seed=st.integers(0, 2**16))
def test_continuous_alpha_stays_finite_positive_and_bounded(cfg, batch, dtype, scale, seed):
  state = make_state(cfg)
  for i in range(6):
    state, metrics = CU(state, continuous_inputs(seed + i, batch, dtype, scale))
    assert_sane(state)
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["entropy"])
  assert int(state.step) + int(state.skipped) == 6


@SETTINGS
@given(cfg=configs(), batch=st.sampled_from(BATCHES), actions=st.sampled_from(ACTIONS),
       dtype=st.sampled_from(sorted(DTYPES)), scale=st.floats(0.01, 30.0), seed=st.integers(0, 2**16))
def test_discrete_alpha_stays_finite_positive_and_bounded(cfg, batch, actions, dtype, scale, seed):
  state = make_state(cfg)
  for i in range(6):
    probs, log_probs = discrete_inputs(seed + i, batch, actions, dtype, scale)
    state, metrics = DU(state, probs, log_probs)
    assert_sane(state)
    # The exact entropy of a categorical policy lies in [0, log A].
    assert -1e-2 <= float(metrics["entropy"]) <= math.log(actions) * (1 + 1e-2)


@settings(SETTINGS, max_examples=int(os.environ.get("AGREE_EXAMPLES", 6)))
@given(cfgs=st.lists(configs(), min_size=3, max_size=3), batch=st.sampled_from(BATCHES),
       dtype=st.sampled_from(sorted(DTYPES)), seed=st.integers(0, 2**16))
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
    member = jax.tree.map(lambda x: x[i], batched)
    assert_same_step(state, jitted, eager, jitted_metrics, eager_metrics)
    assert_same_step(state, member, jitted, jax.tree.map(lambda x: x[i], batched_metrics), jitted_metrics)


@SETTINGS
@given(cfg=configs(), batch=st.sampled_from(BATCHES), actions=st.sampled_from(ACTIONS),
       dtype=st.sampled_from(sorted(DTYPES)), bad=st.sampled_from([math.nan, math.inf, -math.inf]),
       where=st.sampled_from(["continuous", "probs", "log_probs"]), position=st.integers(0, 10**6),
       seed=st.integers(0, 2**16))
def test_non_finite_input_skips_the_update_bit_for_bit(cfg, batch, actions, dtype, bad, where, position, seed):
  state = make_state(cfg)
  state, _ = CU(state, continuous_inputs(seed, batch, "float32", 1.0))  # non-trivial moments
  if where == "continuous":
    lp = continuous_inputs(seed + 1, batch, dtype, 2.0)
    new, metrics = CU(state, lp.at[position % batch].set(bad))
  else:
    probs, log_probs = discrete_inputs(seed + 1, batch, actions, dtype, 2.0)
    b, a = position % batch, (position // batch) % actions
    if where == "probs":
      probs = probs.at[b, a].set(bad)
    else:
      # -inf with probs > 0 (not the 0 * log 0 case): make the entry positive.
      probs = probs.at[b, a].set(jnp.maximum(probs[b, a], 0.1))
      log_probs = log_probs.at[b, a].set(bad)
    new, metrics = DU(state, probs, log_probs)
  assert int(new.skipped) == int(state.skipped) + 1
  assert_bit_identical(new.replace(skipped=state.skipped), state)


@settings(SETTINGS, max_examples=25)  # cheap: one program per optimizer and loss form
@example(cfg=UNBOUNDED_SGD, grads=[1e6])
@example(cfg=dict(UNBOUNDED_SGD, loss_form="alpha"), grads=[-1e6, 3e38])
@given(cfg=configs(), grads=st.lists(
    st.one_of(
        # sign * 10**e, e uniform in [-3, 38]: every magnitude float32 holds.
        st.tuples(st.sampled_from([-1.0, 1.0]), st.floats(-3.0, 38.0)).map(lambda se: se[0] * 10.0**se[1]),
        st.sampled_from([0.0, math.nan, math.inf, -math.inf])),
    min_size=1, max_size=8))
def test_bounds_hold_for_any_gradient(cfg, grads):
  state = make_state(cfg)
  for g in grads:
    new = AG(state, jnp.float32(g))
    assert_sane(new)
    if not math.isfinite(g):
      assert int(new.skipped) == int(state.skipped) + 1
    state = new
