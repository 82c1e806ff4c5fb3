"""Tree helpers shared by the tests, built on chex's tree assertions."""

import chex
import jax
import jax.numpy as jnp
import numpy as np


def raw_bytes(x):
  """A leaf as (dtype, shape, bytes): equal only if bit-identical (NaNs and -0.0 included)."""
  x = np.asarray(x)
  return x.dtype, x.shape, x.tobytes()


def assert_bit_identical(a, b):
  """Same tree structure and static fields; every leaf equal byte for byte."""
  chex.assert_trees_all_equal_comparator(
    lambda x, y: raw_bytes(x) == raw_bytes(y),
    lambda x, y: f"{np.asarray(x)!r} != {np.asarray(y)!r} (bit for bit)",
    a,
    b,
  )
  assert jax.tree.structure(a) == jax.tree.structure(b)


def _within_2_ulp(x, y):
  x, y = np.asarray(x), np.asarray(y)
  if x.dtype != y.dtype or x.shape != y.shape:
    return False
  if not np.issubdtype(x.dtype, np.floating):
    return bool(np.array_equal(x, y))
  try:
    np.testing.assert_array_max_ulp(x, y, maxulp=2)
  except AssertionError:
    return False
  return True


def assert_trees_equal(a, b):
  """Same structure; integer leaves equal, float leaves within 2 ulp.

  XLA's CPU backend evaluates exp/log/cos with a vectorised kernel under
  vmap and a scalar one otherwise; they can round differently in the last
  place (seen: exp(-0.38841382) = 0.67813164 vs 0.6781317), so the float
  comparison is exact up to that, not up to a tolerance.
  """
  chex.assert_trees_all_equal_comparator(
    _within_2_ulp, lambda x, y: f"{np.asarray(x)!r} and {np.asarray(y)!r} differ by more than 2 ulp", a, b
  )


def member(tree, i):
  """The `i`-th member of a stacked population."""
  return jax.tree.map(lambda x: x[i], tree)


def stack(trees):
  """Stacks states (or any trees) into a population."""
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def assert_vmap_equals_loop(fn, population, *args):
  """`jit(vmap(fn))` on the population equals `jit(fn)` member by member (2 ulp)."""
  batched = jax.jit(jax.vmap(fn))(population, *args)
  one = jax.jit(fn)
  n = jax.tree.leaves(population)[0].shape[0]
  for i in range(n):
    assert_trees_equal(member(batched, i), one(member(population, i), *(member(a, i) for a in args)))
  return batched
