"""Tree comparisons shared by the tests."""

import chex
import jax
import numpy as np


def raw_bytes(x):
  """A leaf as (dtype, shape, bytes): equal only if bit-identical (NaNs included)."""
  x = np.asarray(x)
  return x.dtype, x.shape, x.tobytes()


def assert_bit_identical(a, b):
  """Same tree structure and static fields; every leaf equal byte for byte."""
  la, ta = jax.tree_util.tree_flatten_with_path(a)
  lb, tb = jax.tree_util.tree_flatten_with_path(b)
  assert ta == tb
  for (path, x), (_, y) in zip(la, lb):
    assert raw_bytes(x) == raw_bytes(y), (
        f"{jax.tree_util.keystr(path)}: {np.asarray(x)!r} != {np.asarray(y)!r}"
    )


def assert_trees_equal(a, b):
  """Same structure; integer leaves equal, float leaves within 2 ulp.

  XLA's CPU backend evaluates exp/log/cos with a vectorised kernel under
  vmap and a scalar one otherwise; they can round differently in the last
  place (seen: exp(-0.38841382) = 0.67813164 vs 0.6781317), so the float
  comparison is exact up to that, not up to a tolerance.
  """
  chex.assert_trees_all_equal_structs(a, b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and x.shape == y.shape, (x.dtype, y.dtype, x.shape, y.shape)
    if np.issubdtype(x.dtype, np.floating):
      np.testing.assert_array_max_ulp(x, y, maxulp=2)
    else:
      np.testing.assert_array_equal(x, y)
