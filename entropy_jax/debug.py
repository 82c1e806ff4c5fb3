"""Opt-in checks that `probs` is a probability distribution, with `checkify`.

`discrete_loss` and `discrete_update` check shapes and dtypes and skip an update with a non-finite value, but do not
check that each row is non-negative and sums to 1 (a reduction and a host round-trip on every step). A policy bug that
feeds logits or mismatched probabilities gives a finite but meaningless entropy; the functions here report it where
asked for, through `jax.experimental.checkify`, and leave the default path as it is::

  err, (state, metrics) = jax.jit(checked_discrete_update)(state, probs, log_probs)
  err.throw()  # raises JaxRuntimeError naming the first failing row.

A row passes when `|sum_a probs[b, a] - 1| <= atol` and each valid entry has `probs >= 0` and
`|exp(log_probs) - probs| <= atol`. The default `atol = max(1e-5, 4 * eps(dtype))` (1e-5 for float32, 3.9e-3 for
float16, 3.1e-2 for bfloat16) holds softmax outputs over A = 2..10,000 actions, which miss 1 by at most 3.6e-7,
8.7e-4 and 5.9e-3. Sums are taken in float32.
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

  Call it inside a function transformed by `checkify.checkify` (as `checked_discrete_update` does); outside one, a
  failing check under `jit` cannot be reported.

  Args:
    probs: `[B, A]` action probabilities.
    log_probs: optional `[B, A]` logarithms, checked against `probs`.
    mask: optional `[B, A]` bool of valid actions; only valid entries are checked and summed.
    atol: tolerance on each row's sum (and on `exp(log_probs)`); default `default_atol(probs.dtype)`.
  """
  probs, lp, mask = _checks.discrete_inputs(probs, probs if log_probs is None else log_probs, mask)
  tol = default_atol(probs.dtype) if atol is None else float(atol)
  _checks.positive("atol", tol)
  valid = jnp.ones(probs.shape, bool) if mask is None else mask
  p = probs.astype(jnp.float32)

  def check(row_ok, message, **values):  # reports the first failing row
    row = jnp.argmin(row_ok)
    checkify.check(jnp.all(row_ok), str(_checks.error(message)), row=row, **{k: v[row] for k, v in values.items()})

  entries = lambda ok: jnp.all(ok | ~valid, axis=-1)
  check(entries(jnp.isfinite(p)), "`probs` must be finite; row {row} has a non-finite entry.")
  low = jnp.min(jnp.where(valid, p, jnp.inf), axis=-1)
  check(entries(p >= 0), "`probs` must be >= 0; row {row} has min {low}.", low=low)
  sums = jnp.sum(jnp.where(valid, p, 0.0), axis=-1)
  message = f"each row of `probs` must sum to 1 (atol {tol:g}); row {{row}} sums to {{total}}."
  check(jnp.abs(sums - 1.0) <= tol, message, total=sums)
  if log_probs is not None:
    close = jnp.abs(jnp.exp(lp.astype(jnp.float32)) - p) <= tol
    check(entries(close), f"exp(`log_probs`) must equal `probs` (atol {tol:g}); row {{row}} differs.")


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
    `(err, (new_state, metrics))`. `err.throw()` raises if a check failed; the update is `discrete_update`'s either way.
  """

  def run(state, probs, log_probs, options):
    check_probs(probs, log_probs, mask=options.get("mask"), atol=atol)
    return discrete_update(state, probs, log_probs, **options)

  return checkify.checkify(run)(state, probs, log_probs, options)
