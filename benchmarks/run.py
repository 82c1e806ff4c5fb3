#!/usr/bin/env python3
"""Benchmarks of entropy_jax side by side with Velora 0.2.0, in one command.

  python benchmarks/run.py                  # the full suite (make bench)
  python benchmarks/run.py --quick          # a short smoke run
  python benchmarks/run.py --max-n 1048576  # larger populations (a GPU)

Measures, on jax's default backend (recorded in the results):
  1. one update at batch 256, continuous and discrete: Velora's PyTorch
     module vs the compat class vs the jitted fused update vs the per-update
     cost inside `lax.scan`;
  2. population scaling, N members x 256 log_probs: the vmapped update (in the
     exact form of issue 2, and the fused `continuous_update`), Python loops
     over Velora modules and over compat modules, and a bare `jnp.sum` over
     the same [N, 256] array as the memory-bound floor;
  3. the first-call compile time, and what `import entropy_jax` adds to
     `import jax, optax, flax, chex` (both in fresh processes).
Timings are medians over repeats, with the methods of each comparison
interleaved (see `_timing.py`). Writes `results.json`, `results.md` and
`population.png` into `--out`, and prints each goal with PASS or FAIL.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Optional

from _forms import GRAD_THEN_APPLY, grad_then_apply

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results"
# Population sizes: the list, then 2**20 for runs given a larger --max-n.
SIZES = (1, 16, 256, 1024, 16384, 131072, 1048576)
SECTIONS = ("single", "population", "fresh")
COMPILE_TARGETS = ("continuous", "discrete", "population")
FLOOR = "floor: jnp.sum"
VMAP_GRAD = GRAD_THEN_APPLY
VMAP_FUSED = "vmap(continuous_update)"
LOOP_COMPAT = "loop over compat modules"
LOOP_VELORA = "loop over Velora modules"
VELORA_CPU = "Velora 0.2.0 (PyTorch CPU)"
VELORA_CUDA = "Velora 0.2.0 (PyTorch CUDA)"
DONATED = "jax.jit(fused update, donate_argnums=0)"
LEAVES = "jax.jit(fused update), state as a list of leaves"
TRIVIAL = "a trivial jitted call (x + 1)"
SHORT = {VMAP_GRAD: "vmap-grad", VMAP_FUSED: "vmap-fused", LOOP_COMPAT: "compat-loop", LOOP_VELORA: "velora-loop"}
VELORA_INSTALL = (
    "pip install torch==2.13.0 && pip install --no-deps velora==0.2.0 &&"
    " pip install gymnasium 'safetensors>=0.5.3,<0.6' sqlmodel"
    " (what `make .venv/.installed` does)"
)


# ----------------------------------------------------------------------------
# Command line.


class _Parser(argparse.ArgumentParser):
  def error(self, message: str):
    self.print_usage(sys.stderr)
    self.exit(2, f"{self.prog}: error: {message}\nRun `{self.prog} --help` for the options.\n")


def _positive_int(text: str) -> int:
  try:
    value = int(text.replace("_", ""))
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
  return value


def _positive_float(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}") from None
  if not (value > 0 and math.isfinite(value)):
    raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}")
  return value


def _size_list(text: str) -> list[int]:
  return sorted({_positive_int(t) for t in text.split(",") if t.strip()})


def _section_list(text: str) -> list[str]:
  names = [t.strip() for t in text.split(",") if t.strip()]
  unknown = [n for n in names if n not in SECTIONS]
  if unknown or not names:
    raise argparse.ArgumentTypeError(
        f"unknown section(s) {unknown or [text]}; expected a comma-separated subset of {','.join(SECTIONS)}"
    )
  return [s for s in SECTIONS if s in names]


def _target_list(text: str) -> list[str]:
  names = [t.strip() for t in text.split(",") if t.strip()]
  unknown = [n for n in names if n not in COMPILE_TARGETS]
  if unknown or not names:
    raise argparse.ArgumentTypeError(
        f"unknown compile target(s) {unknown or [text]}; expected a comma-separated subset of {','.join(COMPILE_TARGETS)}"
    )
  return [t for t in COMPILE_TARGETS if t in names]


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
  p = _Parser(
      prog="benchmarks/run.py",
      description=__doc__.split("\n\n")[0] + " Results go to --out (default benchmarks/results/).",
  )
  p.add_argument("--quick", action="store_true",
                 help="short run: N up to 16384, 3 repeats, shorter samples, fewer fresh processes")
  p.add_argument("--max-n", type=_positive_int, default=None,
                 help="largest population size; the issue's sizes up to it, plus 1048576 if it is that large"
                 " (default 131072, or 16384 with --quick)")
  p.add_argument("--sizes", type=_size_list, default=None,
                 help="comma-separated population sizes instead of the default list (capped by --max-n)")
  p.add_argument("--repeats", type=_positive_int, default=None,
                 help="timed samples per method; the median is reported (default 9, or 3 with --quick)")
  p.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="output directory (default benchmarks/results)")
  p.add_argument("--sections", type=_section_list, default=list(SECTIONS),
                 help="comma-separated subset of " + ",".join(SECTIONS) + " (default all)")
  p.add_argument("--batch", type=_positive_int, default=256, help="log_probs per update, per member (default 256)")
  p.add_argument("--action-dim", type=_positive_int, default=6,
                 help="continuous action dimension, target -action_dim (default 6)")
  p.add_argument("--num-actions", type=_positive_int, default=6, help="discrete actions A (default 6)")
  p.add_argument("--loop-max-n", type=_positive_int, default=None,
                 help="largest population looped over module by module; larger N are extrapolated"
                 " linearly from it (default 1024, or 256 with --quick)")
  p.add_argument("--scan-k", type=_positive_int, default=None,
                 help="updates per lax.scan call (default 1000, or 100 with --quick)")
  p.add_argument("--fresh-repeats", type=_positive_int, default=None,
                 help="fresh processes measuring compile and import times (default 5, or 2 with --quick)")
  p.add_argument("--compile-targets", type=_target_list, default=list(COMPILE_TARGETS),
                 help="first calls to time: comma-separated subset of " + ",".join(COMPILE_TARGETS) + " (default all)")
  p.add_argument("--warm-cache-repeats", type=int, default=None,
                 help="fresh processes timing first calls from a warm persistent compilation cache"
                 " (0: skip; default 3, or 1 with --quick)")
  p.add_argument("--min-time", type=_positive_float, default=None,
                 help="seconds each timed sample lasts at least (default 0.02, or 0.005 with --quick)")
  p.add_argument("--memory-budget-gb", type=_positive_float, default=None,
                 help="memory the population section may use (default half of what the device has free)")
  p.add_argument("--no-plot", action="store_true", help="skip the PNG")
  args = p.parse_args(argv)

  q = args.quick
  args.max_n = args.max_n or (16384 if q else 131072)
  args.repeats = args.repeats or (3 if q else 9)
  args.loop_max_n = args.loop_max_n or (256 if q else 1024)
  args.scan_k = args.scan_k or (100 if q else 1000)
  args.fresh_repeats = args.fresh_repeats or (2 if q else 5)
  args.min_time = args.min_time or (0.005 if q else 0.02)
  if args.warm_cache_repeats is None:
    args.warm_cache_repeats = 1 if q else 3
  elif args.warm_cache_repeats < 0:
    p.error(f"argument --warm-cache-repeats: expected an integer >= 0; got {args.warm_cache_repeats}")
  if args.sizes is None:
    args.sizes = [n for n in SIZES if n <= args.max_n]
    if args.max_n > max(SIZES):
      args.sizes.append(args.max_n)
  else:
    dropped = [n for n in args.sizes if n > args.max_n]
    if dropped:
      print(f"note: sizes {dropped} exceed --max-n {args.max_n} and are left out.")
    args.sizes = [n for n in args.sizes if n <= args.max_n]
  return args


# ----------------------------------------------------------------------------
# Environment: versions, machine, the optional libraries, memory.


def _version(dist: str) -> Optional[str]:
  try:
    return importlib.metadata.version(dist)
  except importlib.metadata.PackageNotFoundError:
    return None


def _cpu_model() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def _loadavg() -> Optional[list[float]]:
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def machine_info(argv: list[str]) -> dict[str, Any]:
  import jax

  try:
    threads = len(os.sched_getaffinity(0))
  except AttributeError:
    threads = os.cpu_count()
  devices = jax.devices()
  return {
      "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": " ".join(["benchmarks/run.py"] + argv),
      "platform": platform.platform(),
      "python": platform.python_version(),
      "cpu": _cpu_model(),
      "cpu_count": os.cpu_count(),
      "cpus_usable": threads,
      "memory_total_gb": round(_meminfo("MemTotal") / 1e9, 1) if _meminfo("MemTotal") else None,
      "loadavg_start": _loadavg(),
      "backend": jax.default_backend(),
      "devices": [f"{d.platform}:{d.id} {getattr(d, 'device_kind', '')}".strip() for d in devices],
      "versions": {
          name: _version(name)
          for name in ("entropy_jax", "jax", "jaxlib", "optax", "flax", "chex", "numpy", "torch", "velora")
      },
  }


def _meminfo(field: str) -> Optional[int]:
  try:
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def free_device_bytes() -> Optional[int]:
  """Bytes free on jax's default device: from the allocator, or the OS for a CPU."""
  import jax

  dev = jax.devices()[0]
  try:
    stats = dev.memory_stats()
  except Exception:  # Not every backend reports memory.
    stats = None
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
  avail = _meminfo("MemAvailable")
  if avail is None and hasattr(os, "sysconf"):
    try:
      avail = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    except (ValueError, OSError):
      avail = None
  return avail


def population_bytes(n: int, batch: int) -> int:
  """Peak bytes a population of `n` needs on the device: the [n, batch]
  float32 log_probs twice over (a host copy is made first; on an accelerator,
  room for a temporary), and about 32 [n]-sized 4-byte arrays (state in and
  out, metrics)."""
  return 2 * n * batch * 4 + 32 * n * 4


def load_velora():
  """(EntropyModule, EntropyModuleDiscrete, torch) from Velora 0.2.0, or the reason it failed."""
  try:
    import torch
    from velora.models.nf.modules import EntropyModule, EntropyModuleDiscrete
  except Exception as e:  # ImportError, or an error in Velora's own imports.
    return None, f"{type(e).__name__}: {e}"
  return (EntropyModule, EntropyModuleDiscrete, torch), None


def load_compat():
  """(EntropyModule, EntropyModuleDiscrete) from `entropy_jax.compat`, or the reason it failed."""
  try:
    from entropy_jax.compat import EntropyModule, EntropyModuleDiscrete
  except Exception as e:
    return None, f"{type(e).__name__}: {e}"
  return (EntropyModule, EntropyModuleDiscrete), None


# ----------------------------------------------------------------------------
# 1. One update.


def _threaded(fn: Callable, state: Any, *args: Any) -> Callable[[], Any]:
  """A zero-argument step that calls `state, _ = fn(state, *args)` and returns
  the new state, threading it from call to call as a training loop does."""
  box = [state]

  def step():
    box[0], _ = fn(box[0], *args)
    return box[0]

  return step


def bench_single(args, velora, compat) -> dict[str, Any]:
  import jax
  import jax.numpy as jnp
  import numpy as np

  import entropy_jax as ej
  from _timing import interleaved

  rng = np.random.default_rng(0)
  out: dict[str, Any] = {}
  for kind in ("continuous", "discrete"):
    if kind == "continuous":
      lp = (rng.standard_normal(args.batch) - args.action_dim).astype(np.float32)
      inputs = (lp,)
      target = ej.continuous_target(args.action_dim)
      update = ej.continuous_update
      scan_xs = (rng.standard_normal((args.scan_k, args.batch)).astype(np.float32) - args.action_dim,)
      dim = args.action_dim
    else:
      logits = rng.standard_normal((args.batch, args.num_actions))
      log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
      inputs = (np.exp(log_probs).astype(np.float32), log_probs.astype(np.float32))
      target = ej.discrete_target(args.num_actions)
      update = ej.discrete_update
      klogits = rng.standard_normal((args.scan_k, args.batch, args.num_actions))
      klp = klogits - np.log(np.exp(klogits).sum(-1, keepdims=True))
      scan_xs = (np.exp(klp).astype(np.float32), klp.astype(np.float32))
      dim = args.num_actions
    jin = tuple(jnp.asarray(a) for a in inputs)
    fns: dict[str, Callable[[], Any]] = {}

    if velora is not None:
      v_mod = velora[0 if kind == "continuous" else 1](dim)
      tin = tuple(velora[2].from_numpy(a) for a in inputs)

      def velora_step(m=v_mod, tin=tin):
        m.gradient_step(m.compute_loss(*tin))

      fns[VELORA_CPU] = velora_step
      torch = velora[2]
      if torch.cuda.is_available():  # What a Velora user on a GPU machine would run.
        cuda = torch.device("cuda")
        g_mod = velora[0 if kind == "continuous" else 1](dim, device=cuda)
        gin = tuple(t.to(cuda) for t in tin)

        def velora_cuda_step(m=g_mod, gin=gin, sync=torch.cuda.synchronize):
          m.gradient_step(m.compute_loss(*gin))
          return sync

        fns[VELORA_CUDA] = velora_cuda_step

    if compat is not None:
      c_mod = compat[0 if kind == "continuous" else 1](dim)

      def compat_step(m=c_mod, jin=jin):
        m.gradient_step(m.compute_loss(*jin))
        return m.alpha  # What a SAC step reads after the update.

      fns["compat class"] = compat_step

    fns["jax.jit(fused update)"] = _threaded(jax.jit(update), ej.init_entropy_state(target), *jin)
    # The same with the state donated, as a training step is usually jitted
    # (flax's TrainState idiom): its buffers are reused for the new state.
    fns[DONATED] = _threaded(jax.jit(update, donate_argnums=0), ej.init_entropy_state(target), *jin)

    # Where the jitted update's time goes: the same update with the state
    # crossing the jit boundary as a flat list of leaves, and the cost of
    # calling a trivial jitted function (the dispatch floor).
    state = ej.init_entropy_state(target)
    treedef = jax.tree.structure(state)

    def on_leaves(leaves, *xs, update=update, treedef=treedef):
      new_state, metrics = update(jax.tree.unflatten(treedef, leaves), *xs)
      return jax.tree.leaves(new_state), metrics

    fns[LEAVES] = _threaded(jax.jit(on_leaves), jax.tree.leaves(state), *jin)
    trivial = jax.jit(lambda v: v + 1.0)
    fns[TRIVIAL] = lambda trivial=trivial, v=jin[0]: trivial(v)

    def scan_fn(state, xs, update=update):
      def body(s, x):
        s, metrics = update(s, *x)
        return s, metrics["alpha"]
      return jax.lax.scan(body, state, xs)

    jxs = tuple(jnp.asarray(a) for a in scan_xs)
    scan_step = _threaded(jax.jit(scan_fn), ej.init_entropy_state(target), jxs)
    fns[f"lax.scan over {args.scan_k} updates"] = scan_step

    timings = interleaved(fns, repeats=args.repeats, min_time=args.min_time)
    rows = {}
    for name, t in timings.items():
      per_update = t.median / (args.scan_k if name.startswith("lax.scan") else 1)
      rows[name] = {"seconds_per_update": per_update, "timing": t.as_dict()}
    for name, row in rows.items():
      if VELORA_CPU in rows:
        row["speedup_vs_velora"] = rows[VELORA_CPU]["seconds_per_update"] / row["seconds_per_update"]
      if VELORA_CUDA in rows:
        row["speedup_vs_velora_cuda"] = rows[VELORA_CUDA]["seconds_per_update"] / row["seconds_per_update"]
      print(f"  {kind:10s} {name:48s} {row['seconds_per_update'] * 1e6:10.2f} us"
            + (f"   {row['speedup_vs_velora']:8.1f}x vs Velora" if "speedup_vs_velora" in row else "")
            + (f"   {row['speedup_vs_velora_cuda']:8.1f}x vs Velora on CUDA" if "speedup_vs_velora_cuda" in row else ""))
    out[kind] = rows
  return out


# ----------------------------------------------------------------------------
# 2. Population scaling.


def bench_population(args, velora, compat) -> dict[str, Any]:
  import jax
  import jax.numpy as jnp
  import numpy as np

  import entropy_jax as ej
  from _timing import interleaved

  target = ej.continuous_target(args.action_dim)
  floor_fn = jax.jit(jnp.sum)
  vmap_grad = jax.jit(jax.vmap(grad_then_apply))
  vmap_fused = jax.jit(jax.vmap(ej.continuous_update))
  free = free_device_bytes()
  budget = int(args.memory_budget_gb * 1e9) if args.memory_budget_gb else (free // 2 if free else None)
  per_member: dict[tuple[str, int], dict[str, Any]] = {}  # (loop, members) -> timing of that loop
  results: dict[str, Any] = {"budget_bytes": budget, "sizes": {}, "skipped": {}}

  for n in args.sizes:
    need = population_bytes(n, args.batch)
    if budget is not None and need > budget:
      msg = (f"N={n}: needs about {need / 1e9:.2f} GB (the [{n}, {args.batch}] float32 log_probs and a"
             f" copy, plus the state) but the budget is {budget / 1e9:.2f} GB"
             f" (half the {free / 1e9 if free else float('nan'):.2f} GB free on {jax.devices()[0].platform},"
             " or --memory-budget-gb); skipped, the other sizes still run.")
      print("  " + msg, flush=True)
      results["skipped"][str(n)] = msg
      continue
    # Generated on the host and copied over: no compilation per N for the data.
    host = np.random.default_rng(n).standard_normal((n, args.batch), dtype=np.float32)
    host -= args.action_dim
    x = jax.device_put(host)
    # One compiled call rather than a dozen eager operations, each compiled per N.
    pop = jax.jit(lambda: ej.init_population(target, size=n))()
    jax.block_until_ready((x, pop))
    fns: dict[str, Callable[[], Any]] = {
        FLOOR: lambda x=x: floor_fn(x),
        VMAP_GRAD: lambda pop=pop, x=x: vmap_grad(pop, x),
        VMAP_FUSED: lambda pop=pop, x=x: vmap_fused(pop, x),
    }
    m = min(n, args.loop_max_n)
    loops = []
    if velora is not None:
      loops.append(LOOP_VELORA)
    if compat is not None:
      loops.append(LOOP_COMPAT)
    host_rows = host[:m]
    for loop in loops:
      if (loop, m) in per_member:
        continue  # Measured at an earlier N; extrapolated from there.
      if loop == LOOP_VELORA:
        module_cls, torch = velora[0], velora[2]
        mods = [module_cls(args.action_dim) for _ in range(m)]
        rows = list(torch.from_numpy(host_rows))

        def loop_fn(mods=mods, rows=rows):
          for mod, row in zip(mods, rows):
            mod.gradient_step(mod.compute_loss(row))
      else:
        mods = [compat[0](args.action_dim) for _ in range(m)]
        rows = [jnp.asarray(r) for r in host_rows]

        def loop_fn(mods=mods, rows=rows):
          for mod, row in zip(mods, rows):
            mod.gradient_step(mod.compute_loss(row))
          return [mod.alpha for mod in mods]

      fns[loop] = loop_fn
    timings = interleaved(fns, repeats=args.repeats, min_time=args.min_time)
    for loop in loops:
      if loop in timings:
        per_member[(loop, m)] = {"seconds_per_member": timings[loop].median / m, "timing": timings[loop].as_dict(), "measured_at_n": n}

    floor_t = timings[FLOOR].median
    nbytes = n * args.batch * 4
    row: dict[str, Any] = {}
    for name in (FLOOR, VMAP_GRAD, VMAP_FUSED):
      t = timings[name].median
      row[name] = {"seconds": t, "gb_per_s": nbytes / t / 1e9, "x_floor": t / floor_t,
                   "measured": True, "timing": timings[name].as_dict()}
    for loop in loops:
      pm = per_member[(loop, m)]
      t = pm["seconds_per_member"] * n
      row[loop] = {"seconds": t, "gb_per_s": nbytes / t / 1e9, "x_floor": t / floor_t,
                   "measured": m == n, "measured_members": m,
                   "extrapolated_from_n": None if m == n else pm["measured_at_n"],
                   "timing": pm["timing"]}
      row[loop]["x_slower_than_vmap"] = t / row[VMAP_FUSED]["seconds"]
    results["sizes"][str(n)] = row
    print(f"  N={n:>8d}  floor {_fmt_time(floor_t):>9s} ({nbytes / floor_t / 1e9:6.2f} GB/s);"
          f" vmap-grad {_fmt_time(row[VMAP_GRAD]['seconds'] / n)} per member" + "".join(
        f" | {SHORT[name]} {r['x_floor']:.2f}x{'' if r['measured'] else '*'}" for name, r in row.items() if name != FLOOR))
    del x, host, pop, fns, timings
  return results


# ----------------------------------------------------------------------------
# 3. Compile and import times, in fresh processes.


def _fresh(args, *extra: str) -> dict[str, Any]:
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
  cmd = [sys.executable, str(HERE / "_fresh.py"), str(min(1024, args.max_n)), str(args.batch),
         str(args.action_dim), str(args.num_actions), "--only", ",".join(args.compile_targets), *extra]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
  if proc.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed (rc={proc.returncode}):\n{proc.stderr[-2000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def _median_parts(samples: list[dict[str, Any]]) -> dict[str, Any]:
  results = {}
  for part in samples[0]:
    keys = [k for k, v in samples[0][part].items() if isinstance(v, (int, float))]
    results[part] = {k: statistics.median(s[part][k] for s in samples) for k in keys}
    results[part]["samples"] = [s[part] for s in samples]
  return results


def bench_fresh(args) -> tuple[dict[str, Any], dict[str, Any]]:
  """(compile, import) results: medians over `--fresh-repeats` fresh processes.

  Then, as a user's remedy for compile time, the same first calls with jax's
  persistent compilation cache: one process fills a new cache, and
  `--warm-cache-repeats` more time first calls that load from it.
  """
  results = _median_parts([_fresh(args) for _ in range(args.fresh_repeats)])
  imp = results.pop("import")
  warm = None
  if args.warm_cache_repeats:
    with tempfile.TemporaryDirectory(prefix="entropy_jax_bench_cache_") as cache:
      _fresh(args, "--cache", cache)
      warm = _median_parts([_fresh(args, "--cache", cache) for _ in range(args.warm_cache_repeats)])
  n = min(1024, args.max_n)
  if "population" in results:
    results["population"]["n"] = n
  for which, r in results.items():
    if warm:
      r["warm_cache_first_call_s"] = warm[which]["first_call_s"]
      r["warm_cache_samples"] = warm[which]["samples"]
    label = f"vmap(continuous_update), N={n}" if which == "population" else f"{which}_update"
    print(f"  first call of jit({label}): {r['first_call_s']:.3f} s (steady call {r['steady_call_s'] * 1e6:.0f} us;"
          f" a trivial jit's first call right after it {r['trivial_first_call_s']:.3f} s"
          + (f"; with a warm persistent compilation cache {r['warm_cache_first_call_s']:.3f} s)" if warm else ")"))
  print(f"  import jax, optax, flax, chex: {imp['baseline_s']:.3f} s; import entropy_jax adds {imp['added_s']:.3f} s")
  return results, imp


# ----------------------------------------------------------------------------
# Goals.


def goals(results: dict[str, Any]) -> list[dict[str, Any]]:
  """Each goal of issues 2, 3 and 5 with its measured value and PASS / FAIL / n/a."""
  out = []

  def add(goal, value, ok, shown):
    out.append({"goal": goal, "measured": value, "shown": shown,
                "status": "n/a" if ok is None else ("PASS" if ok else "FAIL")})

  single = results.get("single", {})
  for kind in ("continuous", "discrete"):
    rows = single.get(kind, {})
    for name, need in (("compat class", 8.0), ("jax.jit(fused update)", 10.0), (DONATED, 10.0)):
      s = rows.get(name, {}).get("speedup_vs_velora")
      add(f"{name}, {kind}: >= {need:g}x faster per update than Velora", s,
          None if s is None else s >= need, "not measured" if s is None else f"{s:.1f}x")
  pop = results.get("population", {}).get("sizes", {})
  for name in (VMAP_GRAD, VMAP_FUSED):
    r = pop.get("16384", {}).get(name)
    v = None if r is None else r["x_floor"]
    add(f"N=16384 {name}: <= 1.5x the floor", v, None if v is None else v <= 1.5,
        "not measured" if v is None else f"{v:.2f}x")
  for name in (VMAP_GRAD, VMAP_FUSED):
    r = pop.get("1024", {})
    v = None
    if name in r and LOOP_VELORA in r:
      v = r[LOOP_VELORA]["seconds"] / r[name]["seconds"]
    add(f"N=1024 {name}: >= 500x faster than looping Velora modules", v, None if v is None else v >= 500,
        "not measured" if v is None else f"{v:.0f}x")
  comp = results.get("compile", {})
  for which in ("continuous", "discrete", "population"):
    v = comp.get(which, {}).get("first_call_s")
    label = {"continuous": "jit(continuous_update)", "discrete": "jit(discrete_update)",
             "population": f"jit(vmap(continuous_update)), N={comp.get('population', {}).get('n')}"}[which]
    add(f"first call (trace + compile + run) of {label}: < 0.5 s", v, None if v is None else v < 0.5,
        "not measured" if v is None else f"{v:.3f} s")
  v = results.get("import", {}).get("added_s")
  add("import entropy_jax adds < 0.2 s to import jax, optax, flax, chex", v, None if v is None else v < 0.2,
      "not measured" if v is None else f"{v:.3f} s")
  return out


# ----------------------------------------------------------------------------
# Report: markdown and plot.


def _fmt_time(seconds: float) -> str:
  if seconds < 1e-6:
    return f"{seconds * 1e9:.2f} ns"
  if seconds < 1e-3:
    return f"{seconds * 1e6:.1f} us"
  if seconds < 1:
    return f"{seconds * 1e3:.2f} ms"
  return f"{seconds:.2f} s"


def markdown(results: dict[str, Any]) -> str:
  m = results["machine"]
  v = m["versions"]
  lines = [
      "# entropy_jax benchmarks",
      "",
      f"Produced by `{m['command']}` on {m['date_utc']}: {m['cpu']} ({m['cpus_usable']} usable CPUs,"
      f" {m['memory_total_gb']} GB), backend `{m['backend']}` ({', '.join(m['devices'])}), load average"
      f" {m['loadavg_start']} at the start and {m.get('loadavg_end')} at the end. Python {m['python']}, jax {v['jax']},"
      f" jaxlib {v['jaxlib']}, optax {v['optax']}, flax {v['flax']}, chex {v['chex']}, torch {v['torch']},"
      f" velora {v['velora']}.",
      "",
      f"Medians of {results['args']['repeats']} interleaved repeats. Ratios are the figures to quote; absolute"
      " times depend on the machine and its load.",
  ]
  notes = results.get("notes", [])
  if notes:
    lines += [""] + [f"- {n}" for n in notes]
  single = results.get("single")
  if single:
    a = results["args"]
    lines += ["", f"## One update, batch {a['batch']} (continuous action_dim {a['action_dim']}, discrete A {a['num_actions']})", ""]
    # One ratio column per Velora row measured: the CPU one, and CUDA when torch saw a GPU.
    ratios = {"speedup_vs_velora": ""}
    if VELORA_CUDA in single["continuous"]:
      ratios = {"speedup_vs_velora": " (CPU)", "speedup_vs_velora_cuda": " (CUDA)"}
    head = ["method"] + [c for kind in ("continuous", "discrete")
                         for c in [kind] + [f"x faster than Velora{v}" for v in ratios.values()]]
    lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]

    def sp(r, key):
      return f"{r[key]:.1f}x" if key in r else "-"

    keys = tuple(ratios)
    for name in single["continuous"]:
      cells = []
      for r in (single["continuous"][name], single["discrete"].get(name, {})):
        cells += [_fmt_time(r["seconds_per_update"]) if r else "-"] + [sp(r, k) for k in keys]
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
  pop = results.get("population")
  if pop and pop["sizes"]:
    lines += ["", f"## Population scaling: one update of N members x {results['args']['batch']} log_probs", "",
              "Time for the whole population; GB/s counts the float32 log_probs read once; * marks a loop"
              " extrapolated linearly from the per-member cost measured at the largest looped N"
              f" ({results['args']['loop_max_n']}).", "",
              "| N | method | time | per member | GB/s | x floor |", "|---:|---|---:|---:|---:|---:|"]
    for n, row in pop["sizes"].items():
      for name, r in row.items():
        star = "" if r["measured"] else "*"
        lines.append(f"| {int(n):,} | {name} | {_fmt_time(r['seconds'])}{star} | {_fmt_time(r['seconds'] / int(n))}"
                     f" | {r['gb_per_s']:.3g} | {r['x_floor']:.2f} |")
  if pop and pop["skipped"]:
    lines += [""] + [f"- skipped: {msg}" for msg in pop["skipped"].values()]
  comp, imp = results.get("compile"), results.get("import")
  if comp or imp:
    lines += ["", "## Compile and import (fresh processes, medians)", "", "| measurement | seconds |", "|---|---:|"]
    for which, r in (comp or {}).items():
      label = f"vmap(continuous_update), N={r['n']}" if which == "population" else f"{which}_update"
      lines.append(f"| first call of jit({label}) | {r['first_call_s']:.3f} |")
      lines.append(f"| ... a trivial jit's first call in the same process | {r['trivial_first_call_s']:.3f} |")
      if "warm_cache_first_call_s" in r:
        lines.append(f"| ... the same first call with a warm persistent compilation cache | {r['warm_cache_first_call_s']:.3f} |")
    if imp:
      lines.append(f"| import jax, optax, flax, chex | {imp['baseline_s']:.3f} |")
      lines.append(f"| import entropy_jax on top of them | {imp['added_s']:.3f} |")
  lines += ["", "## Goals", "", "| goal | measured | result |", "|---|---:|---|"]
  for g in results["goals"]:
    lines.append(f"| {g['goal']} | {g['shown']} | {g['status']} |")
  return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: pathlib.Path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  sizes = results["population"]["sizes"]
  methods = list(dict.fromkeys(name for row in sizes.values() for name in row))
  fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=120)
  for name in methods:
    pts = [(int(n), r[name]["seconds"], r[name]["measured"]) for n, r in sizes.items() if name in r]
    if name == FLOOR:
      ax.plot([p[0] for p in pts], [p[1] for p in pts], color="black", lw=3, alpha=0.6,
              label="floor: jnp.sum over the same [N, B] array")
      continue
    line, = ax.plot([p[0] for p in pts if p[2]], [p[1] for p in pts if p[2]], marker="o", label=name)
    ext = [p for p in pts if not p[2]]
    if ext:
      last = [p for p in pts if p[2]][-1:]
      ax.plot([p[0] for p in last + ext], [p[1] for p in last + ext], ls="--", marker="o", mfc="none",
              color=line.get_color(), label=name + " (extrapolated)")
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel(f"population size N (members x {results['args']['batch']} log_probs)")
  ax.set_ylabel("seconds per update of the whole population")
  m = results["machine"]
  where = m["cpu"] if m["backend"] == "cpu" else m["devices"][0]
  ax.set_title(f"entropy_jax population update, {m['backend']}: {where}", fontsize=9)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


# ----------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> int:
  args = parse_args(argv)
  sys.path.insert(0, str(HERE))
  start = time.perf_counter()
  import jax

  results: dict[str, Any] = {
      "machine": machine_info(sys.argv[1:] if argv is None else list(argv)),
      "args": {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()},
      "notes": [],
  }
  print(f"entropy_jax benchmarks on {jax.default_backend()} ({results['machine']['cpu']}); sections"
        f" {','.join(args.sections)}; sizes {args.sizes}")
  velora, compat = None, None
  if {"single", "population"} & set(args.sections):
    velora, why = load_velora()
    if velora is None:
      note = (f"Velora 0.2.0 could not be imported ({why}): its columns are left out and the rest still runs."
              f" To include them: {VELORA_INSTALL}.")
      print("note: " + note)
      results["notes"].append(note)
    else:
      results["machine"]["torch_threads"] = velora[2].get_num_threads()
    compat, why = load_compat()
    if compat is None:
      note = f"entropy_jax.compat could not be imported ({why}): the compat columns are left out."
      print("note: " + note)
      results["notes"].append(note)

  steps = {
      "single": ("1. one update", lambda: results.__setitem__("single", bench_single(args, velora, compat))),
      "population": ("2. population scaling (x the floor; * = extrapolated)",
                     lambda: results.__setitem__("population", bench_population(args, velora, compat))),
      "fresh": ("3. first-call compile time and import time (fresh processes)",
                lambda: results.update(zip(("compile", "import"), bench_fresh(args)))),
  }
  results["section_wall_s"] = {}
  for section in args.sections:
    title, run = steps[section]
    print(title, flush=True)
    t0 = time.perf_counter()
    run()
    results["section_wall_s"][section] = round(time.perf_counter() - t0, 1)
  results["machine"]["loadavg_end"] = _loadavg()
  results["wall_s"] = time.perf_counter() - start
  results["goals"] = goals(results)

  args.out.mkdir(parents=True, exist_ok=True)
  (args.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
  (args.out / "results.md").write_text(markdown(results))
  written = ["results.json", "results.md"]
  if not args.no_plot and results.get("population", {}).get("sizes"):
    plot(results, args.out / "population.png")
    written.append("population.png")
  print("Goals:")
  for g in results["goals"]:
    print(f"  [{g['status']:>4s}] {g['goal']}: {g['shown']}")
  print(f"Wrote {', '.join(written)} to {args.out} in {results['wall_s']:.0f} s.")
  return 0


if __name__ == "__main__":
  sys.exit(main())
