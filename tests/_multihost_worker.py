"""One process of the two-process population run driven by test_sharding_multihost.py.

    python tests/_multihost_worker.py COORDINATOR_ADDRESS NUM_PROCESSES PROCESS_ID OUT_PREFIX

Each process owns `N / NUM_PROCESSES` members on its own CPU devices (set
their number with XLA_FLAGS=--xla_force_host_platform_device_count=D). The
processes join with `jax.distributed.initialize`, assemble the global
population from their own rows, run `STEPS` sharded updates under jit and
under shard_map, gather the results on every host, and process `i` writes what it
gathered, with the compiled programs' HLO text, to OUT_PREFIX.{i}.npz.
`inputs()` and `run()` are shared with the test, which computes the
single-process reference from the same inputs.
"""

from __future__ import annotations

import sys

import numpy as np

N = 32  # members; divisible by the global device count
B = 16  # log_probs per member
STEPS = 3


def inputs():
  """The full population and its per-member batch, identical in every process."""
  import jax.numpy as jnp
  import optax

  from entropy_jax.state import init_population

  rng = np.random.default_rng(20261125)
  population = init_population(
    jnp.asarray(rng.uniform(-4.0, 0.0, N), jnp.float32),
    initial_alpha=jnp.asarray(rng.uniform(0.05, 2.0, N), jnp.float32),
    optimizer=optax.inject_hyperparams(optax.adam)(learning_rate=3e-4),
    learning_rate=jnp.asarray(rng.uniform(1e-4, 1e-1, N), jnp.float32),
  )
  log_probs = jnp.asarray(rng.normal(-1.0, 2.0, (N, B)), jnp.float32)
  weights = jnp.asarray(rng.uniform(0.0, 2.0, (N, B)), jnp.float32)
  return population, log_probs, weights


def run(update, population, log_probs, weights):
  """`STEPS` weighted continuous updates; returns the last (state, metrics)."""
  state, metrics = population, None
  for _ in range(STEPS):
    state, metrics = update(state, log_probs, weights=weights)
  return state, metrics


def main(argv):
  address, num_processes, process_id, out = argv
  num_processes, process_id = int(num_processes), int(process_id)

  import jax

  # CPU collectives across processes (the default from jax 0.5; explicit for
  # older versions, which defaulted to none).
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(
    coordinator_address=address,
    num_processes=num_processes,
    process_id=process_id,
    initialization_timeout=60,
  )
  from entropy_jax import sharding
  from entropy_jax.update import continuous_update

  assert jax.process_count() == num_processes, jax.process_count()
  mesh = sharding.population_mesh()  # every process's devices
  population, log_probs, weights = inputs()
  rows = slice(process_id * N // num_processes, (process_id + 1) * N // num_processes)
  local = jax.tree.map(lambda x: x[rows], (population, log_probs, weights))
  global_population, global_log_probs, global_weights = sharding.from_process_local(local, mesh)

  results = {}
  for name, make in (("jit", sharding.sharded_update), ("shard_map", sharding.shard_mapped_update)):
    update = make(continuous_update, mesh)
    state, metrics = run(update, global_population, global_log_probs, global_weights)
    hlo = update.lower(global_population, global_log_probs, weights=global_weights).compile().as_text()
    results[f"{name}/hlo"] = np.asarray(hlo)  # read by the test with benchmarks.hlo_report
    local_rows = {int(s.index[0].start or 0) for s in state.log_alpha.addressable_shards}
    results[f"{name}/local_row_starts"] = np.asarray(sorted(local_rows))
    gathered = sharding.gather_population((state, metrics))
    for path, leaf in jax.tree_util.tree_leaves_with_path(gathered):
      results[f"{name}/{jax.tree_util.keystr(path)}"] = np.asarray(leaf)

  np.savez(
    f"{out}.{process_id}.npz",
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    device_count=jax.device_count(),
    **results,
  )
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(sys.argv[1:])
