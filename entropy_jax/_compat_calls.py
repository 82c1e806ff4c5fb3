"""The compat classes' compiled calls: one jitted call per update, packed state.

Shared by all modules: one trace per input shape, state structure and
optimizer (modules with the same settings share one optimizer object, see
`optimizers.make`, and so share compiled code).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from entropy_jax import _packing
from entropy_jax.losses import continuous_loss, discrete_loss
from entropy_jax.targets import DISCRETE_TARGET_RATIO, masked_discrete_target
from entropy_jax.update import apply_gradients


class Compiled(NamedTuple):
  """The jitted functions of one loss: the update, and its gradient alone."""

  update: Callable[..., Any]  # (layout, packed, *inputs) -> (loss, new_packed, new_alpha)
  gradient: Callable[..., Any]  # (layout, packed, *inputs) -> grad; for error messages only


def compiled(loss_fn: Callable[..., jax.Array]) -> Compiled:
  """One jitted call of the loss, its gradient and the stepped state.

  The state goes in and out packed into one flat buffer per dtype (`layout`
  is static, see `entropy_jax._packing`): each array crossing the jit
  boundary costs about as much as the arithmetic of the whole update, and
  this call is the whole cost of a compat update. Whether `apply_gradients`
  skipped the step is read from the new state's `skipped` counter, inside
  the packed buffers: no extra output.
  """

  @functools.partial(jax.jit, static_argnums=0)
  def update(layout, packed, *inputs):
    state = _packing.unpack(layout, packed)
    loss, grad = jax.value_and_grad(loss_fn)(state.log_alpha, state.target, *inputs)
    new_state = apply_gradients(state, grad)
    return loss, _packing.pack(layout, new_state), new_state.alpha

  @functools.partial(jax.jit, static_argnums=0)
  def gradient(layout, packed, *inputs):
    state = _packing.unpack(layout, packed)
    return jax.grad(loss_fn)(state.log_alpha, state.target, *inputs)

  return Compiled(update, gradient)


pack = jax.jit(_packing.pack, static_argnums=0)
unpack = jax.jit(_packing.unpack, static_argnums=0)


continuous_update = compiled(lambda log_alpha, target, log_probs: continuous_loss(log_alpha, log_probs, target))
discrete_update = compiled(
  lambda log_alpha, target, probs, log_probs, mask: discrete_loss(log_alpha, probs, log_probs, target, mask=mask)
)
# The default discrete target under a mask: 0.6 * log(valid actions), per state.
discrete_update_masked_target = compiled(
  lambda log_alpha, _, probs, log_probs, mask: discrete_loss(
    log_alpha,
    probs,
    log_probs,
    masked_discrete_target(mask, DISCRETE_TARGET_RATIO),
    mask=mask,
  )
)


def non_finite_message(where: str, grad: jax.Array, inputs: dict[str, Any], lr: float, step: int, alpha: float) -> str:
  """Why a compat update was skipped: which inputs hold how many NaN/Inf values."""
  if np.isfinite(np.asarray(grad)):  # A finite gradient whose step overflowed a statistic.
    return (
      f"{where}: the gradient {float(grad)} with lr {lr} would make the"
      " optimizer's state non-finite. No loss is returned and the module's"
      " state is unchanged."
    )
  counts = []
  for name, x in inputs.items():
    if x is None:
      continue
    x = np.asarray(x)
    bad = ~np.isfinite(x)
    if name == "log_probs" and "probs" in inputs:  # p = 0 with log p = -inf is fine.
      bad &= ~((np.asarray(inputs["probs"]) == 0) & (x == -np.inf))
    counts.append(f"`{name}` has {int(bad.sum())} NaN/Inf of {x.size} values")
  return (
    f"{where}: the gradient with respect to log_alpha is {float(grad)} (expected"
    " a finite number); " + "; ".join(counts) + ". No loss is returned and the"
    f" module's state is unchanged (step {step}, alpha {alpha:.6g})."
  )
