"""Population scaling: one update of N members x 256 log_probs, against the floor.

For each N, side by side (medians of interleaved repeats, `_timing.py`):

* the floor: `jnp.sum` over the same `[N, B]` float32 array, what reading the
  log_probs once costs;
* `vmap(apply_gradients(grad(continuous_loss)))` with the default optimizer
  (`entropy_jax.adam`), and with `optax.adam` beside it;
* the minimal population Adam over `[N]` (`_forms.minimal_update`), the least
  an update with a finite guard does;
* the fused `vmap(continuous_update)`;
* the default and the minimal form again as a training loop runs them: the
  state threaded from call to call and donated to the jitted update, so that
  no output buffer is allocated and fields that do not change are not copied;
* Python loops over Velora modules and over compat modules, measured up to
  `--loop-max-n` members and extrapolated linearly beyond.

Every time is divided by the floor's (`x floor`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from benchmarks import _cli, _machine, _script
from benchmarks._forms import GRAD_THEN_APPLY, MINIMAL

NAME = "population"
REPEATS, MIN_TIME = 15, 0.02
SHAPES = True
SIZES = (1, 16, 256, 1024, 16384, 131072, 1048576)
FLOOR = "floor: jnp.sum"
DEFAULT = f"{GRAD_THEN_APPLY}, entropy_jax.adam (default)"
OPTAX = f"{GRAD_THEN_APPLY}, optax.adam"
FUSED = "vmap(continuous_update)"
DEFAULT_DONATED = f"{GRAD_THEN_APPLY}, default, state donated"
MINIMAL_DONATED = f"{MINIMAL}, state donated"
LOOP_VELORA = "loop over Velora modules"
LOOP_COMPAT = "loop over compat modules"
SHORT = {
  DEFAULT: "default",
  OPTAX: "optax.adam",
  MINIMAL: "minimal",
  FUSED: "fused",
  DEFAULT_DONATED: "default donated",
  MINIMAL_DONATED: "minimal donated",
  LOOP_VELORA: "velora-loop",
  LOOP_COMPAT: "compat-loop",
}


def add_arguments(p) -> None:
  _cli.add_scaled(
    p,
    "--max-n",
    full=131072,
    quick=16384,
    help="largest population; the sizes 1, 16, 256, 1024, 16384, 131072 up to it, and --max-n itself when larger",
  )
  p.add_argument(
    "--sizes",
    type=_cli.size_list,
    default=None,
    help="comma-separated population sizes instead of the default list (capped by --max-n)",
  )
  _cli.add_scaled(
    p,
    "--loop-max-n",
    full=1024,
    quick=256,
    help="largest population looped over module by module; larger N are extrapolated linearly from it",
  )
  p.add_argument(
    "--memory-budget-gb",
    type=_cli.positive_float,
    default=None,
    help="memory the population section may use (default half of what the device has free)",
  )


def finish(args) -> None:
  """The sizes to run: `--sizes` capped by `--max-n`, or the default list up to it."""
  if args.sizes is None:
    args.sizes = [n for n in SIZES[:-1] if n <= args.max_n]
    if args.max_n > SIZES[-2]:
      args.sizes.append(args.max_n)
  else:
    dropped = [n for n in args.sizes if n > args.max_n]
    if dropped:
      print(f"note: sizes {dropped} exceed --max-n {args.max_n} and are left out.")
    args.sizes = [n for n in args.sizes if n <= args.max_n]


def population_bytes(n: int, batch: int) -> int:
  """Peak bytes a population of `n` needs on the device: the [n, batch]
  float32 log_probs twice over (a host copy is made first; on an accelerator,
  room for a temporary), and about 64 [n]-sized 4-byte arrays (the states of
  every method, in and out)."""
  return 2 * n * batch * 4 + 64 * n * 4


def _loop(kind: str, velora, compat, action_dim: int, rows) -> Callable[[], Any]:
  """One update of each of `len(rows)` modules, one after the other."""
  import jax.numpy as jnp

  if kind == LOOP_VELORA:
    module_cls, torch = velora[0], velora[2]
    mods = [module_cls(action_dim) for _ in rows]
    batches = list(torch.from_numpy(rows))

    def loop():
      for mod, lp in zip(mods, batches):
        mod.gradient_step(mod.compute_loss(lp))

    return loop
  mods = [compat[0](action_dim) for _ in rows]
  batches = [jnp.asarray(r) for r in rows]

  def loop_compat():
    for mod, lp in zip(mods, batches):
      mod.gradient_step(mod.compute_loss(lp))
    return [mod.alpha for mod in mods]

  return loop_compat


def run(args, notes: list[str]) -> dict[str, Any]:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  import entropy_jax as ej
  from benchmarks import _forms
  from benchmarks._timing import interleaved, threaded

  velora, compat = _machine.load_libraries(notes)
  target = ej.continuous_target(args.action_dim)
  floor_fn = jax.jit(jnp.sum)
  vmapped = jax.jit(jax.vmap(_forms.grad_then_apply))
  donated = jax.jit(jax.vmap(_forms.grad_then_apply), donate_argnums=0)
  fused = jax.jit(jax.vmap(ej.continuous_update))
  minimal = jax.jit(_forms.minimal_update)
  minimal_donated = jax.jit(_forms.minimal_update, donate_argnums=0)
  free = _machine.free_device_bytes()
  budget = int(args.memory_budget_gb * 1e9) if args.memory_budget_gb else (free // 2 if free else None)
  per_member: dict[tuple[str, int], dict[str, Any]] = {}
  results: dict[str, Any] = {"budget_bytes": budget, "sizes": {}, "skipped": {}}

  for n in args.sizes:
    need = population_bytes(n, args.batch)
    if budget is not None and need > budget:
      msg = (
        f"N={n}: needs about {need / 1e9:.2f} GB (the [{n}, {args.batch}] float32 log_probs and a copy, plus"
        f" the states) but the budget is {budget / 1e9:.2f} GB (half the free memory, or --memory-budget-gb);"
        " skipped, the other sizes still run."
      )
      print("  " + msg, flush=True)
      results["skipped"][str(n)] = msg
      continue
    host = np.random.default_rng(n).standard_normal((n, args.batch), dtype=np.float32) - args.action_dim
    x = jax.device_put(host)
    targets = jnp.full((n,), target, jnp.float32)
    # Built by one compiled call rather than a dozen eager operations.
    pop = jax.jit(lambda n=n: ej.init_population(target, size=n))()
    pop_optax = jax.jit(lambda n=n: ej.init_population(target, size=n, optimizer=optax.adam(3e-4)))()
    mini = _forms.minimal_init(n)
    jax.block_until_ready((x, pop, pop_optax, mini))
    fns: dict[str, Callable[[], Any]] = {
      FLOOR: lambda x=x: floor_fn(x),
      DEFAULT: lambda pop=pop, x=x: vmapped(pop, x),
      OPTAX: lambda pop=pop_optax, x=x: vmapped(pop, x),
      MINIMAL: lambda mini=mini, x=x, t=targets: minimal(mini, x, t),
      FUSED: lambda pop=pop, x=x: fused(pop, x),
      DEFAULT_DONATED: threaded(donated, jax.tree.map(jnp.copy, pop), x),
      MINIMAL_DONATED: threaded(minimal_donated, jax.tree.map(jnp.copy, mini), x, targets),
    }
    m = min(n, args.loop_max_n)
    loops = [name for name, lib in ((LOOP_VELORA, velora), (LOOP_COMPAT, compat)) if lib is not None]
    for loop in loops:
      if (loop, m) not in per_member:  # else measured at an earlier N, extrapolated from there
        fns[loop] = _loop(loop, velora, compat, args.action_dim, host[:m])
    timings = interleaved(fns, repeats=args.repeats, min_time=args.min_time)
    for loop in loops:
      if loop in timings:
        per_member[(loop, m)] = {
          "seconds_per_member": timings[loop].median / m,
          "measured_at_n": m,
          "timing": timings[loop].as_dict(),
        }

    floor_t = timings[FLOOR].median
    nbytes = n * args.batch * 4
    row: dict[str, Any] = {}
    for name, t in timings.items():
      if name not in loops:
        row[name] = {"seconds": t.median, "measured": True, "timing": t.as_dict()}
    for loop in loops:
      pm = per_member[(loop, m)]
      row[loop] = {
        "seconds": pm["seconds_per_member"] * n,
        "measured": m == n,
        "measured_members": m,
        "extrapolated_from_n": None if m == n else pm["measured_at_n"],
        "timing": pm["timing"],
      }
    for name, r in row.items():
      r["gb_per_s"] = nbytes / r["seconds"] / 1e9
      r["x_floor"] = r["seconds"] / floor_t
      if LOOP_VELORA in row and name != LOOP_VELORA:
        r["x_faster_than_velora_loop"] = row[LOOP_VELORA]["seconds"] / r["seconds"]
    results["sizes"][str(n)] = row
    print(
      f"  N={n:>8d}  floor {_cli.fmt_time(floor_t):>9s} ({nbytes / floor_t / 1e9:6.2f} GB/s); x floor:"
      + "".join(
        f" {SHORT[name]} {r['x_floor']:.2f}{'' if r['measured'] else '*'} |" for name, r in row.items() if name != FLOOR
      ).rstrip("|"),
      flush=True,
    )
  return {NAME: results}


def markdown(results: dict[str, Any], args: dict[str, Any]) -> list[str]:
  results = results[NAME]
  lines = [
    f"## Population scaling: one update of N members x {args['batch']} log_probs",
    "",
    "Time for the whole population; GB/s counts the float32 log_probs read once; * marks a loop"
    " extrapolated linearly from the per-member cost measured at the largest looped N"
    f" ({args['loop_max_n']}).",
    "",
  ]
  rows = [
    [
      f"{int(n):,}",
      name,
      _cli.fmt_time(r["seconds"]) + ("" if r["measured"] else "*"),
      _cli.fmt_time(r["seconds"] / int(n)),
      f"{r['gb_per_s']:.3g}",
      f"{r['x_floor']:.2f}",
    ]
    for n, row in results["sizes"].items()
    for name, r in row.items()
  ]
  lines += _cli.table(["N", "method", "time", "per member", "GB/s", "x floor"], rows)
  lines += [f"- skipped: {msg}" for msg in results["skipped"].values()]
  return lines


def plot(results: dict[str, Any], machine: dict[str, Any], batch: int, path) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  sizes = results["sizes"]
  methods = list(dict.fromkeys(name for row in sizes.values() for name in row))
  fig, ax = plt.subplots(figsize=(8.0, 5.5), dpi=120)
  for name in methods:
    pts = [(int(n), r[name]["seconds"], r[name]["measured"]) for n, r in sizes.items() if name in r]
    if name == FLOOR:
      ax.plot(
        [p[0] for p in pts],
        [p[1] for p in pts],
        color="black",
        lw=3,
        alpha=0.6,
        label="floor: jnp.sum over the same [N, B] array",
      )
      continue
    measured = [p for p in pts if p[2]]
    (line,) = ax.plot([p[0] for p in measured], [p[1] for p in measured], marker="o", label=name)
    ext = measured[-1:] + [p for p in pts if not p[2]]
    if len(ext) > 1:
      ax.plot(
        [p[0] for p in ext],
        [p[1] for p in ext],
        ls="--",
        marker="o",
        mfc="none",
        color=line.get_color(),
        label=name + " (extrapolated)",
      )
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel(f"population size N (members x {batch} log_probs)")
  ax.set_ylabel("seconds per update of the whole population")
  where = machine["cpu"] if machine["backend"] == "cpu" else machine["devices"][0]
  ax.set_title(f"entropy_jax population update, {machine['backend']}: {where} ({machine['date_utc'][:10]})", fontsize=9)
  ax.grid(True, which="both", alpha=0.3)
  ax.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def main(argv: list[str] | None = None) -> int:
  return _script.standalone(sys.modules[__name__], argv)


if __name__ == "__main__":
  sys.exit(main())
