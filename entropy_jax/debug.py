"""Opt-in checks that `probs` is a probability distribution, with `checkify`.

`discrete_loss` and `discrete_update` trust `probs` and `log_probs`: they
check shapes and dtypes at trace time, and skip the update if a value is not
finite, but they do not check that each row is non-negative and sums to 1
(that would cost a reduction and a host round-trip on every step). A policy
bug that feeds logits, unnormalized or mismatched probabilities gives a
finite but meaningless entropy. The functions here report it, only where
asked for, through `jax.experimental.checkify`; the default path is left
as it is (no extra operation in its program).

Usage::

  err, (state, metrics) = jax.jit(checked_discrete_update)(state, probs, log_probs)
  err.throw()  # raises JaxRuntimeError naming the first failing row.

Tolerance: a row `b` passes when `|sum_a probs[b, a] - 1| <= atol`, and each
valid entry has `probs >= 0` and `|exp(log_probs) - probs| <= atol`. The
default `atol = max(1e-5, 4 * eps(dtype))` is 1e-5 for float32, 3.9e-3 for
float16 and 3.1e-2 for bfloat16: softmax outputs measured over A = 2..10,000
actions miss 1 by at most 3.6e-7 (float32), 8.7e-4 (float16) and 5.9e-3
(bfloat16), i.e. under one eps for the half types. Sums are taken in float32.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import checkify

from entropy_jax import _checks
from entropy_jax.state import EntropyState
from entropy_jax.update import Metrics, discrete_update


def default_atol(dtype) -> float:
  """`max(1e-5, 4 * eps(dtype))`: the default tolerance on a row's sum."""
  return max(1e-5, 4.0 * float(jnp.finfo(dtype).eps))


@_checks.public
def check_probs(
  probs: jax.Array,
  log_probs: jax.Array | None = None,
  *,
  mask: jax.Array | None = None,
  atol: float | None = None,
) -> None:
  """Adds `checkify` checks that each row of `probs` is a distribution.

  Call it inside a function transformed by `checkify.checkify` (as
  `checked_discrete_update` does); outside one, a failing check under `jit`
  cannot be reported.

  Args:
    probs: `[B, A]` action probabilities.
    log_probs: optional `[B, A]` logarithms, checked against `probs`.
    mask: optional `[B, A]` bool of valid actions; only valid entries are
      checked and summed.
    atol: tolerance on each row's sum (and on `exp(log_probs)`); default
      `default_atol(probs.dtype)`.
  """
  lp_in = probs if log_probs is None else log_probs
  probs, lp, mask = _checks.discrete_inputs(probs, lp_in, mask)
  tol = default_atol(probs.dtype) if atol is None else float(atol)
  _checks.positive("atol", tol)
  valid = jnp.ones(probs.shape, bool) if mask is None else mask
  p = probs.astype(jnp.float32)

  finite = jnp.isfinite(p) | ~valid
  checkify.check(
    jnp.all(finite),
    "check_probs: probs must be finite; row {row} has a non-finite entry.",
    row=_first_false_row(finite),
  )
  nonneg = (p >= 0) | ~valid
  checkify.check(
    jnp.all(nonneg),
    "check_probs: probs must be >= 0; row {row} has min {value}.",
    row=_first_false_row(nonneg),
    value=jnp.min(jnp.where(valid, p, jnp.inf), axis=-1)[_first_false_row(nonneg)],
  )
  sums = jnp.sum(jnp.where(valid, p, 0.0), axis=-1)
  sums_ok = jnp.abs(sums - 1.0) <= tol
  row = jnp.argmin(sums_ok)
  checkify.check(
    jnp.all(sums_ok),
    f"check_probs: each row of probs must sum to 1 (atol {tol:g}); row {{row}} sums to {{total}}.",
    row=row,
    total=sums[row],
  )
  if log_probs is not None:
    close = (jnp.abs(jnp.exp(lp.astype(jnp.float32)) - p) <= tol) | ~valid
    checkify.check(
      jnp.all(close),
      f"check_probs: exp(log_probs) must equal probs (atol {tol:g}); row {{row}} differs.",
      row=_first_false_row(close),
    )


@_checks.public
def checked_discrete_update(
  state: EntropyState, probs: jax.Array, log_probs: jax.Array, *, atol: float | None = None, **options: Any
) -> tuple[checkify.Error, tuple[EntropyState, Metrics]]:
  """`discrete_update` preceded by `check_probs`, under `checkify`.

  Args:
    state: the current state.
    probs: `[B, A]` action probabilities of the current policy.
    log_probs: `[B, A]` their logarithms.
    atol: the tolerance of `check_probs`.
    **options: `discrete_update`'s keyword arguments (`mask`, `weights`,
      `masked_target_ratio`); the check honours `mask`.

  Returns:
    `(err, (new_state, metrics))`. `err.throw()` raises if a check failed;
    the update itself is computed as by `discrete_update` either way.
  """

  def run(state, probs, log_probs, options):
    check_probs(probs, log_probs, mask=options.get("mask"), atol=atol)
    return discrete_update(state, probs, log_probs, **options)

  return checkify.checkify(run)(state, probs, log_probs, options)


def _first_false_row(ok: jax.Array) -> jax.Array:
  """The index of the first row of `[B, A]` bools that has a False."""
  return jnp.argmin(jnp.all(ok, axis=-1))
