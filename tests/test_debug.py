"""Tests of entropy_jax.debug: the opt-in checkify check that `probs` is a distribution.

It reports bad rows (unnormalised, negative, non-finite, logits passed as
probabilities, log_probs of another row) with the row named; it is off by
default and adds nothing to `discrete_update`'s program; with the check on,
the update equals the unchecked one bit for bit.
"""

import functools

import jax
import jax.numpy as jnp
import optax
import pytest
from _trees import assert_bit_identical
from jax.experimental import checkify

from entropy_jax import continuous_update, discrete_update, init_entropy_state
from entropy_jax.debug import check_probs, checked_discrete_update, default_atol

CU = jax.jit(continuous_update)
DU = jax.jit(discrete_update)
CDU = jax.jit(checked_discrete_update, static_argnames="atol")


def policy(key, batch=8, actions=4):
  logits = 2.0 * jax.random.normal(key, (batch, actions))
  return jax.nn.softmax(logits), jax.nn.log_softmax(logits)


@functools.cache
def warm_state():
  """A state with a history, so the optimizer moments are not zero."""
  state = init_entropy_state(-2.0, initial_alpha=0.5, optimizer=optax.adam(1e-2))
  for i in range(3):
    state, _ = CU(state, jax.random.normal(jax.random.key(i), (8,)))
  return state


def test_checked_update_accepts_a_distribution_and_matches_the_fast_path():
  p, lp = policy(jax.random.key(6), 16, 5)
  state = warm_state()
  err, (new, metrics) = CDU(state, p, lp)
  assert err.get() is None
  fast, fast_metrics = DU(state, p, lp)
  assert_bit_identical(new, fast)
  assert_bit_identical(metrics, fast_metrics)


BAD_PROBS = {  # what the report names: the argument, the row, and the offending value where there is one
  "unnormalised": (lambda p, lp: (p.at[2].multiply(1.01), lp), r"`probs`.*row 2 sums to 1\.0"),
  "negative": (
    lambda p, lp: (p.at[3, 0].add(-p[3, 0] - 0.1).at[3, 1].add(p[3, 0] + 0.1), lp),
    r"`probs` must be >= 0; row 3 has min -0\.1",
  ),
  "nan": (lambda p, lp: (p.at[1, 1].set(jnp.nan), lp), r"`probs` must be finite; row 1"),
  "logits passed as probs": (lambda p, lp: (2.0 * lp, lp), r"`probs` must be >= 0; row 0"),
  "log_probs of another row": (lambda p, lp: (p, lp.at[4].set(lp[0])), r"`log_probs`.*`probs`.*row 4"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROBS))
def test_checked_update_reports_bad_probs(case):
  p, lp = policy(jax.random.key(7), 8, 4)
  make, message = BAD_PROBS[case]
  bad_p, bad_lp = make(p, lp)
  err, _ = CDU(warm_state(), bad_p, bad_lp)
  with pytest.raises(Exception, match=f"checked_discrete_update: .*{message}"):
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
  with pytest.raises(ValueError, match=r"^checked_discrete_update: `atol` .*got -1\.0"):
    CDU(warm_state(), p, lp, atol=-1.0)


def test_probs_check_adds_nothing_to_the_default_program():
  p, lp = policy(jax.random.key(9))
  state = warm_state()
  fast = jax.make_jaxpr(discrete_update)(state, p, lp)
  checked = jax.make_jaxpr(checked_discrete_update)(state, p, lp)
  assert len(checked.eqns) > len(fast.eqns)
  # check_probs composes with any function the user checkifies.
  err, _ = checkify.checkify(lambda q: check_probs(q))(-p)
  assert "`probs` must be >= 0" in err.get()
