"""Default target entropies.

Continuous actions: `-action_dim` (Haarnoja et al. 2018, section 5). Discrete actions: `ratio * log(A)`, a fraction
of the entropy of the uniform policy over `A` actions. The default ratio, 0.6 (`DISCRETE_TARGET_RATIO`), is measured
(docs page "Choosing a discrete target"): it learned on CartPole-v1 and Breakout-MinAtar with alpha bounded, where
the paper's 0.98 (Christodoulou 2019, `PAPER_DISCRETE_TARGET_RATIO`) and CleanRL's 0.89 let alpha grow without limit.

Velora 0.2.0 computes the discrete target as `0.98 * log(1 / A)`, which is negative: the entropy of a categorical
policy never is, so alpha falls at every step. `velora_discrete_target` reproduces it for parity tests only.
"""

from __future__ import annotations

import math

import chex
import jax
import jax.numpy as jnp

from entropy_jax import _checks

DISCRETE_TARGET_RATIO = 0.6  # The default: measured, see the module doc.
PAPER_DISCRETE_TARGET_RATIO = 0.98  # Christodoulou 2019's, and Velora's (with the sign flipped).


@_checks.public
def continuous_target(action_dim: int) -> float:
  """`-action_dim`: the SAC heuristic target for a `action_dim`-D action box."""
  return -float(_checks.positive_int("action_dim", action_dim))


@_checks.public
def discrete_target(action_dim: int, ratio: chex.Numeric = DISCRETE_TARGET_RATIO) -> float:
  """`ratio * log(action_dim)`: a fraction of the uniform policy's entropy (default 0.6, measured).

  Christodoulou 2019 (arXiv:1910.07207) uses `0.98 * log(A)`: `discrete_target(A, PAPER_DISCRETE_TARGET_RATIO)`.
  """
  a = _checks.positive_int("action_dim", action_dim)
  _checks.float32_value("ratio", ratio)
  return float(ratio) * math.log(a)


@_checks.public
def velora_discrete_target(action_dim: int) -> float:
  """Velora 0.2.0's discrete target, `0.98 * log(1 / A)` (negative; see module doc)."""
  a = _checks.positive_int("action_dim", action_dim)
  # Computed as Velora does, in float32: 0.98 * log(float32(1 / A)).
  return float(PAPER_DISCRETE_TARGET_RATIO * jnp.log(jnp.float32(1.0 / a)))


@_checks.public
def masked_discrete_target(mask: chex.Array, ratio: chex.Numeric = DISCRETE_TARGET_RATIO) -> jax.Array:
  """Per-state target `ratio * log(n_valid_b)` from a `[B, A]` action mask.

  A state with a single valid action has target 0 (its entropy is always 0).

  Args:
    mask: `[B, A]` bool, True where the action is valid.
    ratio: fraction of the maximum entropy over the valid actions.

  Returns:
    `[B]` float32 targets.
  """
  mask = jnp.asarray(mask)
  if mask.dtype != jnp.bool_ or mask.ndim != 2:
    raise _checks.error(f"`mask` must be a bool array of shape [B, A]; got {mask.dtype}{list(mask.shape)}.")
  n_valid = jnp.sum(mask, axis=-1, dtype=jnp.float32)
  return ratio * jnp.log(jnp.maximum(n_valid, 1.0))
