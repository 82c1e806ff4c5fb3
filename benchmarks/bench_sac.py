"""SAC throughput and the cost of the fused entropy update.

Measures, on whatever device JAX uses:
  * environment steps per second of the jitted SAC training loop (one env
    step + one update per step, `lax.scan` over a chunk) for one agent and
    for a vmapped population;
  * the share of each training step's time taken by the entropy (alpha)
    update: the jitted step (env step, buffer sample, fused update) with
    `tune_alpha=True` and with `tune_alpha=False`, timed side by side
    (interleaved repeats, medians of wall and of process CPU time), each as a
    scan of steps; and `continuous_update` alone on the same shapes.

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
import numpy as np

from entropy_jax.update import continuous_update
from examples.sac_continuous import SAC, Config, default_population


def block(tree):
  return jax.tree.map(lambda x: x.block_until_ready(), tree)


def median_time(fns: dict, args: dict, repeats: int, clock=time.perf_counter) -> dict:
  """Median seconds per call of each jitted `fns[name](*args[name])`, interleaved.

  `clock=time.process_time` measures the process's CPU time instead of wall
  time: on a CPU shared with other jobs it is the steadier of the two.
  """
  for name, fn in fns.items():  # compile + warm up
    block(fn(*args[name]))
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      t = clock()
      block(fn(*args[name]))
      times[name].append(clock() - t)
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
                      help="steps per timed scan in the entropy-share test (default 200)")
  parser.add_argument("--repeats", type=int, default=21, help="timed repeats (default 21)")
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

  # The training step (env step + buffer sample + update) with and without the
  # entropy part, and the entropy update alone on the same [N, B] log-probs.
  def steps(tune_alpha):
    def run(agent):
      return jax.lax.scan(lambda a, _: sac.train_step(a, tune_alpha), agent, None,
                          length=args.updates)
    return jax.jit(jax.vmap(run))

  log_probs = -jax.random.uniform(jax.random.key(1), (n, args.updates, sac.cfg.batch_size))

  def alpha_only(entropy, lp):
    def body(e, x):
      e, m = continuous_update(e, x)
      return e, m["alpha"]
    return jax.lax.scan(body, entropy, lp)

  fns = {"with_alpha": steps(True), "without_alpha": steps(False),
         "alpha_only": jax.jit(jax.vmap(alpha_only))}
  fargs = {"with_alpha": (pop,), "without_alpha": (pop,), "alpha_only": (pop.entropy, log_probs)}
  tu = median_time(fns, fargs, args.repeats)
  cpu = median_time(fns, fargs, args.repeats, clock=time.process_time)
  per = {k: v / args.updates for k, v in tu.items()}
  per_cpu = {k: v / args.updates for k, v in cpu.items()}
  per_with, per_without = per["with_alpha"], per["without_alpha"]
  share = (per_with - per_without) / per_with
  share_cpu = (per_cpu["with_alpha"] - per_cpu["without_alpha"]) / per_cpu["with_alpha"]
  share_alone = per["alpha_only"] / per_with

  results = {
      "device": str(jax.devices()[0]), "jax": jax.__version__, "members": n,
      "hidden": list(sac.cfg.hidden), "batch_size": sac.cfg.batch_size,
      "env_steps_per_s_one_agent": sps_one,
      "env_steps_per_s_population": sps_pop,
      "population_speedup_vs_one": sps_pop / sps_one,
      "update_ms_with_alpha": 1e3 * per_with,
      "update_ms_without_alpha": 1e3 * per_without,
      "entropy_update_share": share,
      "update_cpu_ms_with_alpha": 1e3 * per_cpu["with_alpha"],
      "update_cpu_ms_without_alpha": 1e3 * per_cpu["without_alpha"],
      "entropy_update_share_cpu_time": share_cpu,
      "entropy_update_alone_ms": 1e3 * per["alpha_only"],
      "entropy_update_alone_share": share_alone,
  }
  print(f"device {results['device']}, jax {jax.__version__}; SAC hidden {sac.cfg.hidden},"
        f" batch {sac.cfg.batch_size}; medians of {args.repeats} interleaved repeats")
  print(f"  env steps/s, one agent        : {sps_one:8.0f}")
  print(f"  env steps/s, population of {n:<3}: {sps_pop:8.0f}  ({sps_pop / sps_one:.1f}x one agent)")
  print(f"  train step of {n} members, with alpha   : {1e3 * per_with:.3f} ms")
  print(f"  train step of {n} members, without alpha: {1e3 * per_without:.3f} ms")
  print(f"  entropy update of {n} members alone      : {1e3 * per['alpha_only']:.4f} ms"
        f" ({100 * share_alone:.2f}% of a train step)")
  print(f"  share of the train step spent on the entropy update: {100 * share:.1f}% (wall),"
        f" {100 * share_cpu:.1f}% (process CPU time:"
        f" {results['update_cpu_ms_with_alpha']:.3f} vs {results['update_cpu_ms_without_alpha']:.3f} ms)")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(results, f, indent=1)
  return results


if __name__ == "__main__":
  main()
