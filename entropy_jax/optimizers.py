"""The default optimizer of log_alpha, and PyTorch's optimizers in optax.

`adam` is the optimizer every state gets unless told otherwise, in both APIs (`init_entropy_state`,
`init_population` and the Velora-compatible classes' `optim="Adam"`), so equal settings give equal trajectories. It
is `optax.adam` with PyTorch's exact bias correction, computed without a float `pow`. `adamw` and `rmsprop` are
PyTorch's `AdamW` and `RMSprop` with PyTorch's defaults, for `entropy_jax.compat.NAMED_OPTIMIZERS`.
"""

from __future__ import annotations

import math
import numbers
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

DEFAULT_LEARNING_RATE = 3e-4  # Velora's, SB3's and the SAC paper's.


class ScaleByAdamState(NamedTuple):
  """State of `scale_by_adam`, as `optax.ScaleByAdamState`."""

  #: `[]` int32, the number of updates (optax's name; it shadows `tuple.count`).
  count: jax.Array  # type: ignore[assignment]
  #: The first moment, shaped like the params.
  mu: optax.Updates
  #: The second moment, shaped like the params.
  nu: optax.Updates


def scale_by_adam(
  b1: chex.Numeric = 0.9, b2: chex.Numeric = 0.999, eps: chex.Numeric = 1e-8
) -> optax.GradientTransformation:
  """`optax.scale_by_adam` with an exact, pow-free bias correction (PyTorch's).

  Kingma & Ba 2015, "Adam: A Method for Stochastic Optimization", Algorithm 1: `m_hat / (sqrt(v_hat) + eps)` with
  `m_hat = m / (1 - b1**t)`, `v_hat = v / (1 - b2**t)`. The corrections are `-expm1(t * log(b))`, with `log(b)` in
  float64 for a Python `b`: accurate to float32 rounding, where optax's `1 - b**t` from a float32 `b` is 1.3e-5
  relative off for small `t`; and `expm1` is vectorized on XLA's CPU backend, where a float `pow` is not.

  The moments move as `m + (1 - b1) * (g - m)` (PyTorch's `lerp_`), one product that XLA contracts into a fused
  multiply-add wherever the update is compiled: a single state, a vmapped population, a `lax.scan` and the compat
  classes step to the same bits.

  Args:
    b1: decay of the first moment.
    b2: decay of the second moment.
    eps: added to the denominator, outside the square root (as PyTorch).

  Returns:
    An optax `GradientTransformation`.
  """
  log_b1, log_b2 = _log(b1), _log(b2)

  def init_fn(params):
    return ScaleByAdamState(
      count=jnp.zeros([], jnp.int32),
      mu=optax.tree.zeros_like(params),
      nu=optax.tree.zeros_like(params),
    )

  def update_fn(updates, state, params=None):
    del params
    mu = jax.tree.map(lambda g, m: m + (1 - b1) * (g - m), updates, state.mu)
    nu = jax.tree.map(lambda g, v: v + (1 - b2) * (g * g - v), updates, state.nu)
    count = state.count + 1
    t = count.astype(jnp.float32)
    correction1 = -jnp.expm1(t * log_b1)  # 1 - b1**t
    correction2 = -jnp.expm1(t * log_b2)  # 1 - b2**t
    updates = jax.tree.map(lambda m, v: (m / correction1) / (jnp.sqrt(v / correction2) + eps), mu, nu)
    return updates, ScaleByAdamState(count=count, mu=mu, nu=nu)

  return optax.GradientTransformation(init_fn, update_fn)


def _log(b: chex.Numeric) -> chex.Numeric:
  """`log(b)`: in float64 for a Python number (rounded once where used)."""
  return math.log(b) if isinstance(b, numbers.Real) else jnp.log(b)


def adam(
  learning_rate: optax.ScalarOrSchedule = DEFAULT_LEARNING_RATE,
  b1: chex.Numeric = 0.9,
  b2: chex.Numeric = 0.999,
  eps: chex.Numeric = 1e-8,
) -> optax.GradientTransformation:
  """Adam with an exact bias correction: the default optimizer of `log_alpha`.

  Kingma & Ba 2015 (arXiv:1412.6980) with PyTorch's defaults and arithmetic (`torch.optim.Adam`): `scale_by_adam`,
  then `optax.scale_by_learning_rate`. `optax.inject_hyperparams(adam)(learning_rate=...)` gives each population
  member its own learning rate.

  Args:
    learning_rate: a float or an optax schedule.
    b1: decay of the first moment.
    b2: decay of the second moment.
    eps: added to the denominator, outside the square root.

  Returns:
    An optax `GradientTransformation`.
  """
  return optax.chain(scale_by_adam(b1=b1, b2=b2, eps=eps), optax.scale_by_learning_rate(learning_rate))


def adamw(learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  """`torch.optim.AdamW` with its defaults: as `adam`, weight_decay 0.01 (optax's default is 1e-4).

  PyTorch's `p <- p * (1 - lr * wd) - lr * adam(p)` is `p - lr * (adam(p) + wd * p)`, the order of `optax.adamw`.
  PyTorch rounds the factor `1 - lr * wd` to float32; with a constant lr the decay used here is the one that rounded
  factor implies, so the two trajectories do not drift apart (6e-6 relative in 300 steps otherwise).
  """
  decay = 0.01
  if isinstance(learning_rate, numbers.Real):
    lr = float(learning_rate)
    factor = float(np.float32(1.0 - lr * decay))
    decay = (1.0 - factor) / lr
  return optax.chain(
    scale_by_adam(),
    optax.add_decayed_weights(decay),
    optax.scale_by_learning_rate(learning_rate),
  )


def rmsprop(learning_rate: optax.ScalarOrSchedule) -> optax.GradientTransformation:
  """`torch.optim.RMSprop` with its defaults: `v <- 0.99 v + 0.01 g^2` from 0, `p <- p - lr * g / (sqrt(v) + 1e-8)`.

  optax's defaults differ: decay 0.9, eps inside the square root.
  """
  return optax.rmsprop(learning_rate, decay=0.99, eps=1e-8, initial_scale=0.0, eps_in_sqrt=False)
