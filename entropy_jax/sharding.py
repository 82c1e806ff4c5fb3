"""Populations sharded across devices and hosts, with JAX's own SPMD tools.

A population (`init_population`, or `jax.tree.map(jnp.stack, ...)`) is an
`EntropyState` whose every leaf has a leading member axis `[N, ...]`. Each
member's update reads only its own row, so the member axis can be split
across devices with a `NamedSharding(mesh, PartitionSpec("members"))` and
the vmapped update runs on each device's block without any communication::

    mesh = population_mesh()                       # all devices, 1-D
    pop = shard_population(init_population(t, size=n), mesh)
    log_probs = shard_population(log_probs, mesh)  # [N, B]
    update = sharded_update(continuous_update, mesh)
    pop, metrics = update(pop, log_probs)          # jit, sharded in and out

`shard_mapped_update` is the same under `jax.shard_map`, which states the
per-device program explicitly. `communication_ops` reads a compiled HLO and
lists its cross-device operations (none for these updates). Across hosts,
after `jax.distributed.initialize`, `from_process_local` assembles the
global population from each process's rows and `gather_population` brings
it back to every host; the mesh and the updates are unchanged.

Static fields (`tx`, `loss_form`) are not leaves: they ride along unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from entropy_jax import _checks

MEMBER_AXIS = "members"

PyTree = Any

# HLO opcodes that move data between devices (their -start/-done async forms
# share the prefix).
COLLECTIVE_OPS = (
  "all-reduce",
  "all-gather",
  "all-to-all",
  "reduce-scatter",
  "collective-permute",
  "collective-broadcast",
  "ragged-all-to-all",
  "send",
  "recv",
)
_COLLECTIVE_RE = re.compile(
  r"=\s*[^=]*?\b(" + "|".join(re.escape(op) for op in COLLECTIVE_OPS) + r")(?:-start|-done)?\("
)

_shard_map: Callable[..., Any]
if hasattr(jax, "shard_map"):
  _shard_map = jax.shard_map
else:  # jax < 0.7
  from jax.experimental.shard_map import shard_map as _shard_map  # pragma: no cover


@_checks.public
def population_mesh(devices: Sequence[jax.Device] | None = None, axis_name: str = MEMBER_AXIS) -> Mesh:
  """A 1-D `Mesh` over `devices` (default: all devices, every host's).

  Args:
    devices: the devices to spread the population over, in order.
    axis_name: the name of the mesh axis the member axis is sharded on.

  Returns:
    `Mesh(devices, (axis_name,))`.
  """
  devices = jax.devices() if devices is None else list(devices)
  if not devices:
    raise ValueError(f"{_checks.caller()}: `devices` is empty; expected at least one device.")
  return Mesh(np.asarray(devices), (axis_name,))


@_checks.public
def member_sharding(mesh: Mesh, axis_name: str = MEMBER_AXIS) -> NamedSharding:
  """`NamedSharding(mesh, P(axis_name))`: leading axis split, the rest whole.

  One sharding serves every leaf: `[N]` scalars-per-member, `[N, B]` batches
  and `[N, B, A]` probabilities alike are split along `N` only.
  """
  if axis_name not in mesh.axis_names:
    raise ValueError(f"{_checks.caller()}: axis {axis_name!r} is not in the mesh; its axes are {mesh.axis_names}.")
  return NamedSharding(mesh, PartitionSpec(axis_name))


@_checks.public
def population_size(tree: PyTree) -> int:
  """The common leading size `N` of every leaf of `tree`, or raises."""
  leaves = jax.tree.leaves(tree)
  if not leaves:
    raise ValueError(f"{_checks.caller()}: the population has no array leaves.")
  if any(np.ndim(x) == 0 for x in leaves):
    shapes = sorted({np.shape(x) for x in leaves if not np.ndim(x)})
    raise ValueError(
      f"{_checks.caller()}: every leaf needs a leading member axis [N, ...]; got leaves of"
      f" shape {shapes}. Build populations with `init_population` or"
      " `jax.tree.map(jnp.stack, ...)`."
    )
  sizes = {int(np.shape(x)[0]) for x in leaves}
  if len(sizes) != 1:
    raise ValueError(
      f"{_checks.caller()}: leaves disagree on the population size N; got leading sizes {sorted(sizes)}."
    )
  return sizes.pop()


def _check_divisible(n: int, mesh: Mesh, axis_name: str) -> None:
  shards = mesh.shape[axis_name]
  if n % shards:
    raise ValueError(
      f"{_checks.caller()}: a population of N={n} members cannot be split evenly over the"
      f" {shards} devices of mesh axis {axis_name!r}; pad it to a multiple of"
      f" {shards} (e.g. N={-(-n // shards) * shards})."
    )


@_checks.public
def shard_population(tree: PyTree, mesh: Mesh, axis_name: str = MEMBER_AXIS) -> PyTree:
  """Places every leaf of `tree` on `mesh`, split along its leading axis.

  Works for a population `EntropyState` and for per-member batches alike, and
  reshards arrays that already live on another mesh (e.g. 8 devices to 4).

  Args:
    tree: a pytree whose leaves all have the same leading size `N`.
    mesh: the device mesh.
    axis_name: the mesh axis to split `N` over; `N` must divide evenly.

  Returns:
    `tree` with every leaf a `jax.Array` sharded as `member_sharding(mesh)`.
  """
  sharding = member_sharding(mesh, axis_name)
  _check_divisible(population_size(tree), mesh, axis_name)
  return jax.device_put(tree, sharding)


class PopulationUpdate:
  """A compiled population update: call it like the per-member function.

  `update(state, *args, **kwargs)` checks that every argument carries the
  same member axis, divisible by the mesh, then runs the compiled program;
  `update.lower(...)` (same arguments) gives its `jax.stages.Lowered`.
  """

  def __init__(self, compiled: Any, mesh: Mesh, axis_name: str, name: str):
    self._compiled = compiled
    self._mesh = mesh
    self._axis_name = axis_name
    self._name = name  # The function that built it, named in errors.

  def __call__(self, state: PyTree, *args: Any, **kwargs: Any) -> Any:
    with _checks.entry(self._name):
      n = population_size((state, args, kwargs))
      _check_divisible(n, self._mesh, self._axis_name)
    return self._compiled(state, args, kwargs)

  def lower(self, state: PyTree, *args: Any, **kwargs: Any) -> Any:
    """The `jax.stages.Lowered` program for these arguments."""
    return self._compiled.lower(state, args, kwargs)


@_checks.public
def sharded_update(update_fn: Callable[..., Any], mesh: Mesh, axis_name: str = MEMBER_AXIS) -> PopulationUpdate:
  """`jax.jit(jax.vmap(update_fn))` with every input and output member-sharded.

  Each device runs the update on its block of members; the compiled program
  has no cross-device communication (see `communication_ops`).

  Args:
    update_fn: a per-member function such as `continuous_update`,
      `discrete_update` or `apply_gradients`. Its array arguments, positional
      or keyword, must all carry the leading member axis; bind non-array
      options first, e.g. `functools.partial(discrete_update,
      masked_target_ratio=0.6)`.
    mesh: the device mesh.
    axis_name: the mesh axis the members are split over.

  Returns:
    The compiled update, a `PopulationUpdate`. Call it with `update_fn`'s
    arguments over `[N, ...]` arrays; its `.lower(...)` (same arguments)
    gives the lowered program.
  """
  sharding = member_sharding(mesh, axis_name)
  batched = jax.vmap(lambda state, args, kwargs: update_fn(state, *args, **kwargs))
  compiled = jax.jit(batched, in_shardings=sharding, out_shardings=sharding)
  return PopulationUpdate(compiled, mesh, axis_name, "sharded_update")


@_checks.public
def shard_mapped_update(update_fn: Callable[..., Any], mesh: Mesh, axis_name: str = MEMBER_AXIS) -> PopulationUpdate:
  """`update_fn` vmapped over each device's block of members, by `jax.shard_map`.

  The per-device program is written out: every device sees `[N / D, ...]`
  arrays and runs `jax.vmap(update_fn)` on them; `in_specs` and `out_specs`
  split the member axis and nothing else.

  Args:
    update_fn, mesh, axis_name: as for `sharded_update`.

  Returns:
    The compiled update, a `PopulationUpdate`, as for `sharded_update`.
  """
  spec = PartitionSpec(axis_name)
  member_sharding(mesh, axis_name)  # validates the axis name
  batched = jax.vmap(lambda state, args, kwargs: update_fn(state, *args, **kwargs))
  mapped = _shard_map(batched, mesh=mesh, in_specs=spec, out_specs=spec)
  return PopulationUpdate(jax.jit(mapped), mesh, axis_name, "shard_mapped_update")


def communication_ops(hlo_text: str) -> list[str]:
  """The cross-device operations in an HLO module's text, in order.

  Args:
    hlo_text: e.g. `jax.jit(f).lower(x).compile().as_text()`.

  Returns:
    The opcodes found (`"all-reduce"`, `"all-gather"`, `"collective-permute"`,
    ... see `COLLECTIVE_OPS`), empty when the program never communicates.
  """
  return [m.group(1) for m in _COLLECTIVE_RE.finditer(hlo_text)]


@_checks.public
def from_process_local(local_tree: PyTree, mesh: Mesh, axis_name: str = MEMBER_AXIS) -> PyTree:
  """The global population from each process's own rows (multi-host).

  After `jax.distributed.initialize`, every process passes the members that
  belong to its devices of `mesh` (for a 1-D mesh over `jax.devices()`:
  process `i` of `P` holds rows `i * N / P` to `(i + 1) * N / P`), and gets
  back global `[N, ...]` arrays it can feed to `sharded_update`. Wraps
  `jax.make_array_from_process_local_data`.

  Args:
    local_tree: this process's `[N / P, ...]` rows, on host or device.
    mesh: the global mesh.
    axis_name: the mesh axis the members are split over.

  Returns:
    `local_tree` as global arrays sharded as `member_sharding(mesh)`.
  """
  sharding = member_sharding(mesh, axis_name)
  population_size(local_tree)
  return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_tree)


def gather_population(tree: PyTree) -> PyTree:
  """Every leaf of a sharded population, whole, as NumPy on every process.

  Single-process: a copy to host. Multi-process: an all-gather across hosts
  (`jax.experimental.multihost_utils.process_allgather`), the only
  communication in a population run, and only when results are read.
  """
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  from jax.experimental import multihost_utils

  return multihost_utils.process_allgather(tree, tiled=True)
