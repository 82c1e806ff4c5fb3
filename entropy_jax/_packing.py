"""A pytree of small arrays packed into one flat buffer per dtype, exactly.

A jitted call pays for each array that crosses its boundary (about 1 to 2 us
apiece on a CPU): an `EntropyState` has nine scalar leaves, so a call that
takes and returns one spends more time on them than on its arithmetic. The
compat modules keep their state packed instead, as one flat array per dtype
(float32 and int32 for an `EntropyState`): `pack` and `unpack` run inside
their compiled call and are only concatenations, slices and reshapes (no
arithmetic, no bitcasts, which XLA's CPU backend emulates slowly), so
unpacking a packed state gives back the same bits.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where each leaf of a pytree sits in its packed buffers (hashable: a
  static argument of a jitted function)."""

  treedef: Any
  shapes: tuple[tuple[int, ...], ...]
  dtypes: tuple[str, ...]

  @property
  def groups(self) -> tuple[str, ...]:
    """The dtypes of the buffers, in order of first appearance."""
    return tuple(dict.fromkeys(self.dtypes))

  @property
  def buffer_sizes(self) -> tuple[int, ...]:
    """Elements in each buffer."""
    return tuple(sum(math.prod(s) for s, d in zip(self.shapes, self.dtypes) if d == g) for g in self.groups)


def locate(layout: Layout, leaf: int) -> tuple[int, int]:
  """`(buffer, start)`: where leaf number `leaf` (in `jax.tree.leaves`
  order) begins in the packed buffers."""
  dtype = layout.dtypes[leaf]
  start = sum(math.prod(s) for s, d in zip(layout.shapes[:leaf], layout.dtypes[:leaf]) if d == dtype)
  return layout.groups.index(dtype), start


def layout_of(tree: Any) -> Layout:
  """The `Layout` of `tree`'s structure, leaf shapes and dtypes."""
  leaves, treedef = jax.tree.flatten(tree)
  return Layout(
    treedef=treedef,
    shapes=tuple(tuple(np.shape(x)) for x in leaves),
    dtypes=tuple(np.dtype(jnp.result_type(x)).name for x in leaves),
  )


def pack(layout: Layout, tree: Any) -> tuple[jax.Array, ...]:
  """`tree`'s leaves as one flat array per dtype of `layout.groups`, each
  holding the leaves of that dtype in leaf order."""
  got = layout_of(tree)
  if got != layout:
    raise ValueError(
      f"pack: expected leaves {list(zip(layout.shapes, layout.dtypes))} in"
      f" {layout.treedef}; got {list(zip(got.shapes, got.dtypes))} in {got.treedef}."
    )
  leaves = [jnp.ravel(jnp.asarray(x)) for x in jax.tree.leaves(tree)]
  return tuple(jnp.concatenate([x for x, d in zip(leaves, layout.dtypes) if d == g]) for g in layout.groups)


def unpack(layout: Layout, buffers: tuple[jax.Array, ...]) -> Any:
  """The pytree that `pack(layout, tree)` made `buffers` from, bit for bit."""
  want = [(n,) for n in layout.buffer_sizes]
  got = [tuple(np.shape(b)) for b in buffers]
  got_dtypes = [np.dtype(jnp.result_type(b)).name for b in buffers]
  if got != want or got_dtypes != list(layout.groups):
    raise ValueError(
      f"unpack: expected buffers of shapes {want} and dtypes"
      f" {list(layout.groups)}; got shapes {got} and dtypes {got_dtypes}."
    )
  starts = dict.fromkeys(layout.groups, 0)
  leaves = []
  for shape, dtype in zip(layout.shapes, layout.dtypes):
    i, n = layout.groups.index(dtype), math.prod(shape)
    leaves.append(buffers[i][starts[dtype] : starts[dtype] + n].reshape(shape))
    starts[dtype] += n
  return jax.tree.unflatten(layout.treedef, leaves)


def check_layout(layout: Layout, tree: Any, where: str) -> None:
  """Raises `ValueError` unless `tree` has `layout`'s structure, shapes and dtypes."""
  if jax.tree.structure(tree) != layout.treedef:
    raise ValueError(
      f"{where}: the new state's structure (optimizer, schedule, loss form)"
      f" differs from this one's; expected {layout.treedef}, got"
      f" {jax.tree.structure(tree)}."
    )
  got = layout_of(tree)
  if got != layout:
    raise ValueError(
      f"{where}: the new state's leaf shapes and dtypes"
      f" {list(zip(got.shapes, got.dtypes))} differ from this one's"
      f" {list(zip(layout.shapes, layout.dtypes))}."
    )
