"""The population updates the benchmarks measure, each defined once.

* `grad_then_apply(state, log_probs)`: one member's
  `apply_gradients(state, grad(continuous_loss))`, the grad-then-apply form
  that the population goals measure under `jax.vmap`.
* `minimal_update(state, log_probs, target)`: a hand-written population Adam
  over `[N]` arrays, the least an update with a finite guard can do: the row
  mean, Adam's moments, the bias correction as `expm1`, one finiteness check
  and a select. It keeps no bounds, counters or schedule, and its state is
  four `[N]` arrays where an `EntropyState` has nine. It computes what the
  library's default optimizer computes, to the bit
  (`tests/test_benchmarks_forms.py` checks that), so the two are timed on
  equal work.

Importing this module imports nothing heavy: `benchmarks.compile_import`
measures what `import entropy_jax` costs.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

GRAD_THEN_APPLY = "vmap(apply_gradients(grad(continuous_loss)))"
MINIMAL = "minimal population Adam over [N]"


def grad_then_apply(state, log_probs):
  """One member's update: the gradient of `continuous_loss`, then one step."""
  import jax

  import entropy_jax as ej

  grad = jax.grad(ej.continuous_loss)(state.log_alpha, log_probs, state.target)
  return ej.apply_gradients(state, grad)


class MinimalState(NamedTuple):
  """The state of `minimal_update`: `[N]` arrays."""

  log_alpha: Any  # [N] float32
  mu: Any  # [N] float32, Adam's first moment.
  nu: Any  # [N] float32, Adam's second moment.
  count: Any  # [N] int32, Adam's step count.


def minimal_init(n: int, log_alpha: float = 0.0) -> MinimalState:
  import jax.numpy as jnp

  zeros = jnp.zeros((n,), jnp.float32)
  return MinimalState(jnp.full((n,), log_alpha, jnp.float32), zeros, zeros, jnp.zeros((n,), jnp.int32))


def minimal_update(
  state: MinimalState,
  log_probs,
  target,
  learning_rate: float = 3e-4,
  b1: float = 0.9,
  b2: float = 0.999,
  eps: float = 1e-8,
) -> MinimalState:
  """One Adam step of `[N]` log temperatures on `[N, B]` log_probs.

  Kingma & Ba 2015 with the bias corrections `1 - b**t` as `-expm1(t log b)`;
  an update whose gradient or new `log_alpha` is not finite is skipped by a
  select, member by member.

  Args:
    state: `[N]` arrays.
    log_probs: `[N, B]` log-probabilities.
    target: `[N]` or scalar target entropy.

  Returns:
    The new `MinimalState`.
  """
  import jax.numpy as jnp

  grad = -(jnp.mean(log_probs, axis=-1) + target)  # d continuous_loss / d log_alpha
  mu = state.mu + (1 - b1) * (grad - state.mu)
  nu = state.nu + (1 - b2) * (grad * grad - state.nu)
  count = state.count + 1
  t = count.astype(jnp.float32)
  step = (mu / -jnp.expm1(t * math.log(b1))) / (jnp.sqrt(nu / -jnp.expm1(t * math.log(b2))) + eps)
  log_alpha = state.log_alpha + -learning_rate * step
  ok = jnp.isfinite(grad) & jnp.isfinite(log_alpha)
  return MinimalState(*(jnp.where(ok, new, old) for new, old in zip((log_alpha, mu, nu, count), state)))
