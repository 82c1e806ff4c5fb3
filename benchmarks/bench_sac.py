"""SAC throughput and the cost of the fused entropy update.

Measures, on whatever device JAX uses:
  * environment steps per second of the jitted SAC training loop (one env
    step + one update per step, `lax.scan` over a chunk) for one agent and
    for a vmapped population;
  * the share of one update's time taken by the entropy (alpha) update: the
    jitted update with `tune_alpha=True` and with `tune_alpha=False`, timed
    side by side (interleaved repeats, medians), each as a scan of updates.

Run `python benchmarks/bench_sac.py --help`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from examples.sac_continuous import SAC, Config, default_population


def block(tree):
  return jax.tree.map(lambda x: x.block_until_ready(), tree)


def median_time(fns: dict, args: dict, repeats: int) -> dict:
  """Median seconds per call of each jitted `fns[name](*args[name])`, interleaved."""
  for name, fn in fns.items():  # compile + warm up
    block(fn(*args[name]))
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      t = time.perf_counter()
      block(fn(*args[name]))
      times[name].append(time.perf_counter() - t)
  return {name: float(np.median(v)) for name, v in times.items()}


def main(argv=None):
  parser = argparse.ArgumentParser(
      description="Environment steps/s of the jitted SAC loop (one agent and a vmapped"
      " population) and the share of an update's time spent on the fused entropy update."
  )
  parser.add_argument("--members", type=int, default=8, help="population size (default 8)")
  parser.add_argument("--chunk", type=int, default=200,
                      help="train steps per timed scan (default 200)")
  parser.add_argument("--updates", type=int, default=200,
                      help="updates per timed scan in the entropy-share test (default 200)")
  parser.add_argument("--repeats", type=int, default=7, help="timed repeats (default 7)")
  parser.add_argument("--json", default=None, help="also write the results to this file")
  args = parser.parse_args(argv)

  sac = SAC(Config())
  n = args.members
  targets, lrs = default_population(sac, n)
  pop = sac.init_population(jax.random.key(0), targets, lrs)
  pop = block(jax.jit(jax.vmap(sac.warmup))(pop))  # a filled buffer, as in training
  one = jax.tree.map(lambda x: x[:1], pop)

  chunk = jax.jit(jax.vmap(lambda a: sac.train_chunk(a, args.chunk)))
  t = median_time({"one": chunk, "pop": chunk}, {"one": (one,), "pop": (pop,)}, args.repeats)
  sps_one = args.chunk / t["one"]
  sps_pop = n * args.chunk / t["pop"]

  # Updates only, on fixed sampled batches: with and without the entropy part.
  keys = jax.random.split(jax.random.key(1), (n, args.updates))
  batches = jax.vmap(jax.vmap(lambda b, k: sac.buffer.sample(b, k).experience, (None, 0)))(
      pop.buffer, keys
  )

  def updates(tune_alpha):
    def run(agent, batch, ks):
      def body(a, xs):
        b, k = xs
        a, m = sac.update(a, b, k, tune_alpha)
        return a, m["alpha"]
      return jax.lax.scan(body, agent, (batch, ks))
    return jax.jit(jax.vmap(run))

  upd = {"with_alpha": updates(True), "without_alpha": updates(False)}
  same = (pop, batches, keys)
  tu = median_time(upd, {"with_alpha": same, "without_alpha": same}, args.repeats)
  per_with = tu["with_alpha"] / args.updates
  per_without = tu["without_alpha"] / args.updates
  share = (per_with - per_without) / per_with

  results = {
      "device": str(jax.devices()[0]), "jax": jax.__version__, "members": n,
      "hidden": list(sac.cfg.hidden), "batch_size": sac.cfg.batch_size,
      "env_steps_per_s_one_agent": sps_one,
      "env_steps_per_s_population": sps_pop,
      "population_speedup_vs_one": sps_pop / sps_one,
      "update_ms_with_alpha": 1e3 * per_with,
      "update_ms_without_alpha": 1e3 * per_without,
      "entropy_update_share": share,
  }
  print(f"device {results['device']}, jax {jax.__version__}; SAC hidden {sac.cfg.hidden},"
        f" batch {sac.cfg.batch_size}; medians of {args.repeats} interleaved repeats")
  print(f"  env steps/s, one agent        : {sps_one:8.0f}")
  print(f"  env steps/s, population of {n:<3}: {sps_pop:8.0f}  ({sps_pop / sps_one:.1f}x one agent)")
  print(f"  update of {n} members, with alpha   : {1e3 * per_with:.3f} ms")
  print(f"  update of {n} members, without alpha: {1e3 * per_without:.3f} ms")
  print(f"  share of the update spent on the entropy update: {100 * share:.1f}%")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)
  return results


if __name__ == "__main__":
  main()
