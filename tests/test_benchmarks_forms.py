"""The measured population updates (`benchmarks/_forms.py`) compute what they claim.

The minimal population Adam is timed beside the library's update as the least
the same work can cost; these tests hold that it is the same work: the same
trajectory as `apply_gradients` with the default optimizer, bit for bit, and
a skip of a member whose inputs are not finite.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np

import entropy_jax as ej
from benchmarks import _forms


def _batches(n, b, steps, seed=0):
  rng = np.random.default_rng(seed)
  # Entropies -6 - offset: on both sides of the target -6, member by member.
  offsets = np.linspace(-1.0, 1.0, n)[:, None]
  for _ in range(steps):
    yield jnp.asarray(rng.standard_normal((n, b)) + 6.0 + offsets, jnp.float32)


def test_grad_then_apply_is_continuous_update():
  pop = ej.init_population(-6.0, size=4)
  library = jax.jit(jax.vmap(_forms.grad_then_apply))
  fused = jax.jit(jax.vmap(ej.continuous_update))
  for x in _batches(4, 16, 5):
    a, (b, _) = library(pop, x), fused(pop, x)
    chex.assert_trees_all_close(a, b, rtol=1e-6)
    pop = a


def test_minimal_update_follows_the_default_optimizers_trajectory_to_the_bit():
  n = 16
  pop = ej.init_population(-6.0, size=n)
  mini = _forms.minimal_init(n)
  library = jax.jit(jax.vmap(_forms.grad_then_apply))
  minimal = jax.jit(_forms.minimal_update)
  for x in _batches(n, 32, 300):
    pop, mini = library(pop, x), minimal(mini, x, pop.target)
  # The same arithmetic, to the bit.
  np.testing.assert_array_equal(mini.log_alpha, pop.log_alpha)
  np.testing.assert_array_equal(mini.mu, pop.opt_state[0].mu)
  np.testing.assert_array_equal(mini.nu, pop.opt_state[0].nu)
  np.testing.assert_array_equal(mini.count, pop.opt_state[0].count)
  assert np.ptp(np.asarray(pop.log_alpha)) > 1e-2  # The members moved apart: a test that can fail.


def test_minimal_update_skips_a_non_finite_member_bit_for_bit():
  mini = _forms.minimal_init(3, log_alpha=0.5)
  x = jnp.full((3, 8), -5.0).at[1, 2].set(jnp.nan)
  new = jax.jit(_forms.minimal_update)(mini, x, jnp.full((3,), -6.0))
  for field, before, after in zip(new._fields, mini, new):
    np.testing.assert_array_equal(np.asarray(after)[1], np.asarray(before)[1], err_msg=field)
  assert np.all(np.asarray(new.count)[[0, 2]] == 1) and np.all(np.asarray(new.log_alpha)[[0, 2]] != 0.5)
