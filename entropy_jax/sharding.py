"""Populations sharded across devices and hosts, with JAX's own SPMD tools.

A member's update reads only its own row of the `[N, ...]` leaves, so the member axis is
split over a 1-D mesh and each device updates its block with no communication.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from entropy_jax import _checks

MEMBER_AXIS = "members"

PyTree = Any


@_checks.public
def population_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = MEMBER_AXIS) -> Mesh:
  """A 1-D `Mesh` over `devices`.

  Args:
    devices: the devices to spread the population over, in order (default: all, every host's).
    axis_name: the name of the mesh axis the member axis is split over.

  Returns:
    `Mesh(devices, (axis_name,))`.
  """
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise _checks.error("`devices` is empty; expected at least one device.")
  return Mesh(np.asarray(devices), (axis_name,))


@_checks.public
def member_sharding(mesh: Mesh, axis_name: str = MEMBER_AXIS) -> NamedSharding:
  """`NamedSharding(mesh, P(axis_name))`: the leading axis split, the rest whole.

  One sharding serves every leaf: `[N]` states, `[N, B]` and `[N, B, A]` batches.
  """
  if axis_name not in mesh.axis_names:
    raise _checks.error(f"axis {axis_name!r} is not in the mesh; its axes are {mesh.axis_names}.")
  return NamedSharding(mesh, PartitionSpec(axis_name))


@_checks.public
def population_size(tree: PyTree) -> int:
  """The leading size `N` shared by every leaf of `tree`; raises `ValueError` if they differ."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    raise _checks.error("the population has no array leaves.")
  if any(np.ndim(x) == 0 for x in leaves):
    shapes = sorted({np.shape(x) for x in leaves if not np.ndim(x)})
    raise _checks.error(
      f"every leaf needs a leading member axis [N, ...]; got leaves of shape {shapes}."
      " Build populations with `init_population` or `jax.tree.map(jnp.stack, ...)`."
    )
  sizes = {int(np.shape(x)[0]) for x in leaves}
  if len(sizes) != 1:
    raise _checks.error(f"leaves disagree on the population size N; got leading sizes {sorted(sizes)}.")
  return sizes.pop()


def _check_divisible(n: int, mesh: Mesh, axis_name: str) -> None:
  shards = mesh.shape[axis_name]
  if n % shards:
    raise _checks.error(
      f"a population of N={n} members cannot be split evenly over the {shards} devices of mesh axis"
      f" {axis_name!r}; pad it to a multiple of {shards} (e.g. N={-(-n // shards) * shards})."
    )


@_checks.public
def shard_population(tree: PyTree, mesh: Mesh, axis_name: str = MEMBER_AXIS) -> PyTree:
  """Places every leaf of `tree` on `mesh`, split along its leading axis (resharding live arrays too).

  Args:
    tree: a population or per-member batches; every leaf `[N, ...]`.
    mesh: the device mesh.
    axis_name: the mesh axis to split `N` over; `N` must divide evenly.

  Returns:
    `tree` with every leaf a `jax.Array` sharded as `member_sharding(mesh, axis_name)`.
  """
  sharding = member_sharding(mesh, axis_name)
  _check_divisible(population_size(tree), mesh, axis_name)
  return jax.device_put(tree, sharding)


class PopulationUpdate:
  """A compiled population update, called like the per-member function on `[N, ...]` arguments.

  Each call checks that every argument carries one member axis that divides the mesh;
  `.lower(state, *args, **kwargs)` gives the `jax.stages.Lowered` program.
  """

  def __init__(self, compiled: Any, mesh: Mesh, axis_name: str, name: str):
    self._compiled, self._mesh, self._axis_name, self._name = compiled, mesh, axis_name, name

  def __call__(self, state: PyTree, *args: Any, **kwargs: Any) -> Any:
    with _checks.entry(self._name):
      _check_divisible(population_size((state, args, kwargs)), self._mesh, self._axis_name)
    return self._compiled(state, args, kwargs)

  def lower(self, state: PyTree, *args: Any, **kwargs: Any) -> Any:
    """The `jax.stages.Lowered` program for these arguments."""
    return self._compiled.lower(state, args, kwargs)


def _batched(update_fn: Callable[..., Any]) -> Callable[..., Any]:
  return jax.vmap(lambda state, args, kwargs: update_fn(state, *args, **kwargs))


@_checks.public
def sharded_update(update_fn: Callable[..., Any], mesh: Mesh, axis_name: str = MEMBER_AXIS) -> PopulationUpdate:
  """`jax.jit(jax.vmap(update_fn))` with every input and output member-sharded.

  Args:
    update_fn: a per-member function such as `continuous_update`, `discrete_update` or
      `apply_gradients`; its array arguments, positional or keyword, all carry the member
      axis. Bind non-array options first (`functools.partial`).
    mesh: the device mesh.
    axis_name: the mesh axis the members are split over.

  Returns:
    A `PopulationUpdate` taking `update_fn`'s arguments over `[N, ...]` arrays.
  """
  sharding = member_sharding(mesh, axis_name)
  compiled = jax.jit(_batched(update_fn), in_shardings=sharding, out_shardings=sharding)
  return PopulationUpdate(compiled, mesh, axis_name, "sharded_update")


@_checks.public
def shard_mapped_update(update_fn: Callable[..., Any], mesh: Mesh, axis_name: str = MEMBER_AXIS) -> PopulationUpdate:
  """`jax.vmap(update_fn)` on each device's `[N / D, ...]` block, by `jax.shard_map`.

  Args:
    update_fn: as for `sharded_update`.
    mesh: the device mesh.
    axis_name: the mesh axis the members are split over.

  Returns:
    A `PopulationUpdate`, as for `sharded_update`.
  """
  spec = member_sharding(mesh, axis_name).spec
  mapped = jax.shard_map(_batched(update_fn), mesh=mesh, in_specs=spec, out_specs=spec)
  return PopulationUpdate(jax.jit(mapped), mesh, axis_name, "shard_mapped_update")


@_checks.public
def from_process_local(local_tree: PyTree, mesh: Mesh, axis_name: str = MEMBER_AXIS) -> PyTree:
  """The global population from each process's own rows, after `jax.distributed.initialize`.

  Wraps `jax.make_array_from_process_local_data`. For a 1-D mesh over `jax.devices()`,
  process `i` of `P` passes rows `i * N / P` to `(i + 1) * N / P`.

  Args:
    local_tree: this process's `[N / P, ...]` rows, on host or device.
    mesh: the global mesh.
    axis_name: the mesh axis the members are split over.

  Returns:
    Global `[N, ...]` arrays sharded as `member_sharding(mesh, axis_name)`.
  """
  sharding = member_sharding(mesh, axis_name)
  population_size(local_tree)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_tree)


def gather_population(tree: PyTree) -> PyTree:
  """Every leaf of a sharded population, whole, as NumPy on every process.

  One process: a copy to host. Several: `multihost_utils.process_allgather`, the only
  communication of a population run.
  """
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  return multihost_utils.process_allgather(tree, tiled=True)
