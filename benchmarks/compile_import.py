"""First-call compile time of the updates and the import time, in fresh processes.

Each fresh process (`benchmarks/_fresh.py`) times `import jax, optax, flax,
chex`, what `import entropy_jax` adds on top, and the first call (trace,
compile, run) of `jit(continuous_update)`, `jit(discrete_update)` and
`jit(vmap(continuous_update))` over N = 1024 members, with a trivial jitted
call's first call beside each for scale. Medians over `--fresh-repeats`
processes. Then, as a user's remedy for compile time, the same first calls
from a warm persistent compilation cache: one process fills a new cache and
`--warm-cache-repeats` more load from it.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from typing import Any

from benchmarks import _cli, _script
from benchmarks._fresh import TARGETS

NAME = "compile"
REPEATS, MIN_TIME = None, None  # Timed in fresh processes, not by `_timing.interleaved`.
SHAPES = True


def add_arguments(p) -> None:
  _cli.add_scaled(p, "--fresh-repeats", full=5, quick=2, help="fresh processes timing compile and import")
  _cli.add_scaled(
    p,
    "--warm-cache-repeats",
    full=3,
    quick=1,
    type=_cli.nonnegative_int,
    help="fresh processes timing first calls from a warm persistent compilation cache (0: skip)",
  )
  p.add_argument(
    "--compile-targets",
    type=_cli.subset_of(TARGETS, "compile target(s)"),
    default=list(TARGETS),
    help="first calls to time: comma-separated subset of " + ",".join(TARGETS) + " (default all)",
  )
  p.add_argument(
    "--compile-n", type=_cli.positive_int, default=1024, help="members of the vmapped first call (default 1024)"
  )


def _fresh(args, *extra: str) -> dict[str, Any]:
  argv = ["--n", str(args.compile_n), "--batch", str(args.batch), "--action-dim", str(args.action_dim)]
  argv += ["--num-actions", str(args.num_actions), "--only", ",".join(args.compile_targets), *extra]
  return _script.fresh_process("_fresh", argv)


def _median_parts(samples: list[dict[str, Any]]) -> dict[str, Any]:
  results = {}
  for part in samples[0]:
    keys = [k for k, v in samples[0][part].items() if isinstance(v, (int, float))]
    results[part] = {k: statistics.median(s[part][k] for s in samples) for k in keys}
    results[part]["samples"] = [s[part] for s in samples]
  return results


def label(which: str, n: int) -> str:
  return f"vmap(continuous_update), N={n}" if which == "population" else f"{which}_update"


def run(args, notes: list[str]) -> dict[str, Any]:
  """`{"compile": {target: ...}, "import": {...}}`: the results of two goals' sections."""
  del notes
  results = _median_parts([_fresh(args) for _ in range(args.fresh_repeats)])
  imp = results.pop("import")
  warm = None
  if args.warm_cache_repeats:
    with tempfile.TemporaryDirectory(prefix="entropy_jax_bench_cache_") as cache:
      _fresh(args, "--cache", cache)
      warm = _median_parts([_fresh(args, "--cache", cache) for _ in range(args.warm_cache_repeats)])
  if "population" in results:
    results["population"]["n"] = args.compile_n
  for which, r in results.items():
    if warm:
      r["warm_cache_first_call_s"] = warm[which]["first_call_s"]
      r["warm_cache_samples"] = warm[which]["samples"]
    print(
      f"  first call of jit({label(which, args.compile_n)}): {r['first_call_s']:.3f} s (steady call"
      f" {_cli.fmt_time(r['steady_call_s'])}; a trivial jit's first call right after it"
      f" {r['trivial_first_call_s']:.3f} s"
      + (f"; with a warm persistent compilation cache {r['warm_cache_first_call_s']:.3f} s)" if warm else ")")
    )
  print(f"  import jax, optax, flax, chex: {imp['baseline_s']:.3f} s; import entropy_jax adds {imp['added_s']:.3f} s")
  return {"compile": results, "import": imp}


def markdown(results: dict[str, Any], args: dict[str, Any]) -> list[str]:
  del args
  rows = []
  for which, r in results["compile"].items():
    rows.append([f"first call of jit({label(which, r.get('n', 0))})", f"{r['first_call_s']:.3f}"])
    rows.append(["... a trivial jit's first call in the same process", f"{r['trivial_first_call_s']:.3f}"])
    if "warm_cache_first_call_s" in r:
      rows.append(
        ["... the same first call from a warm persistent compilation cache", f"{r['warm_cache_first_call_s']:.3f}"]
      )
  imp = results["import"]
  rows.append(["import jax, optax, flax, chex", f"{imp['baseline_s']:.3f}"])
  rows.append(["import entropy_jax on top of them", f"{imp['added_s']:.3f}"])
  return ["## Compile and import (fresh processes, medians)", "", *_cli.table(["measurement", "seconds"], rows)]


def main(argv: list[str] | None = None) -> int:
  return _script.standalone(sys.modules[__name__], argv)


if __name__ == "__main__":
  sys.exit(main())
