"""A temperature per branch or one for the whole action? A measured study on MultiDiscrete control.

MultiDiscrete SAC (`sac_multidiscrete.py`) on gymnax Reacher-misc and Swimmer-misc, each action dimension
discretized into bins (11 and 11, or, ragged, 21 and 3), under several temperature designs built by
`entropy_jax.init_structured_state`: a temperature per branch with target `ratio * log(n_k)` (ratios 0.3,
0.6 and 0.9), and one temperature shared by the whole action with the summed target `0.6 * sum_k log(n_k)`.
Every design gets the same seeds (seed `i` starts from the same networks and environments under each design)
and the same budget. Per design and task it reports the final return (mean and spread over seeds), the area
under the learning curve, the greedy policy's return, and each branch's final alpha and entropy; it writes
one `.npz` history per design, `results.json` (the tasks of a run replace their entries in an existing one)
and a plot per task. `--hybrid-seeds` adds the hybrid Pendulum agent (`sac_hybrid.py`) with a temperature
per part and with one shared.

Run `python examples/structured_study.py --help`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import entropy_jax as ej
from examples import reporting, sac_hybrid
from examples.sac_multidiscrete import SAC, Config, evaluate, train

EVAL_EPISODES = 10


class Design(NamedTuple):
  """A temperature design: one per branch (`shared=False`) or one for the whole action, and the target ratio."""

  shared: bool
  ratio: float
  color: str

  def label(self) -> str:
    what = "one shared alpha, summed target" if self.shared else "alpha per branch, target"
    return f"{what} {self.ratio:g} log n" + (" each" if not self.shared else "")


DESIGNS = {
  "branch_0.6": Design(False, 0.6, "tab:green"),
  "shared_0.6": Design(True, 0.6, "tab:red"),
  "branch_0.3": Design(False, 0.3, "tab:blue"),
  "branch_0.9": Design(False, 0.9, "tab:orange"),
}


class Task(NamedTuple):
  name: str  # names the task's files; the environment is `cfg.env_name`
  cfg: Config
  steps: int  # environment steps per member
  chunk: int  # environment steps per jitted scan
  seeds: int  # members per design


TASKS = {
  "reacher": Task("Reacher-misc", Config(env_name="Reacher-misc"), 80_000, 2_000, 5),
  "swimmer": Task("Swimmer-misc", Config(env_name="Swimmer-misc"), 50_000, 2_000, 5),
  # Ragged branches: a fine first dimension beside a coarse second one (-1, 0, 1).
  "reacher_ragged": Task("Reacher-misc-21x3", Config(env_name="Reacher-misc", bins=(21, 3)), 80_000, 2_000, 5),
  "swimmer_ragged": Task("Swimmer-misc-21x3", Config(env_name="Swimmer-misc", bins=(21, 3)), 50_000, 2_000, 5),
}


def run_designs(task: Task, names: Sequence[str], *, seed: int = 0, progress: bool = True) -> dict[str, tuple]:
  """Trains `task.seeds` members per design; designs whose states stack (per branch or shared) train together.

  Returns:
    Per design, `(history, finals)`: `history` as from the agent's `train` (`[chunks + 1, seeds]` arrays,
    `alpha` and `entropy` `[chunks + 1, seeds, K]`), `finals` the greedy evaluation `[seeds]`, the wall time
    of the design's group and its number of members.
  """
  key_init, key_eval = jax.random.split(jax.random.key(seed))
  init_keys, eval_keys = jax.random.split(key_init, task.seeds), jax.random.split(key_eval, task.seeds)
  out = {}
  for shared in (False, True):
    group = [n for n in names if DESIGNS[n].shared == shared]
    if not group:
      continue
    sac = SAC(task.cfg._replace(shared=shared))
    # entropy_jax: each design's structured state, repeated per seed and stacked into one population.
    states = [sac.init_entropy(ratio=DESIGNS[n].ratio) for n in group]
    entropy = jax.tree.map(lambda *x: jnp.stack([s for s in x for _ in range(task.seeds)]), *states)
    keys = jnp.concatenate([init_keys] * len(group))
    with reporting.Timer() as t:
      population, history = train(
        sac,
        jax.vmap(sac.init)(keys, entropy),
        task.steps,
        chunk=task.chunk,
        progress=progress,
        desc=f"{task.name} {'+'.join(group)}",
      )
      evaluate_all = jax.jit(jax.vmap(lambda a, k, sac=sac: evaluate(sac, a, k, EVAL_EPISODES)))
      greedy = np.asarray(evaluate_all(population, jnp.concatenate([eval_keys] * len(group)))).mean(axis=1)
    for i, name in enumerate(group):
      cols = slice(i * task.seeds, (i + 1) * task.seeds)
      finals = {"greedy": greedy[cols], "seconds": t.seconds, "members": len(group) * task.seeds}
      out[name] = ({k: v[:, cols] for k, v in history.items()}, finals)
  return {n: out[n] for n in names}


def summarize(history: dict, finals: dict) -> dict:
  """Per-design figures over seeds from one run's history (see the module doc)."""
  figures, auc = reporting.return_summary(history, finals["greedy"])
  ret = history["return"]
  out = figures | {
    "greedy_std": float(np.std(finals["greedy"])),
    "final_alpha_per_branch_median": np.median(history["alpha"][-1], axis=0).tolist(),
    "final_entropy_per_branch_mean": np.mean(history["entropy"][-1], axis=0).tolist(),
    "final_return_per_seed": ret[-1].tolist(),
    "auc_per_seed": auc.tolist(),
    "seeds": int(ret.shape[1]),
    "seconds": float(finals["seconds"]),
  }
  if "target" in history:
    out["summed_target"] = float(history["target"][-1, 0])
  return out


def paired(summaries: dict, reference: str) -> dict:
  """Per design, its final return and AUC minus the reference design's, seed by seed (the same seeds).

  Returns `{design: {"final_return_diff_mean", "final_return_diff_std", "auc_diff_mean", "auc_diff_std",
  "seeds_above"}}` for every design but the reference (empty if the reference did not run).
  """
  if reference not in summaries:
    return {}
  out = {}
  for name, s in summaries.items():
    if name == reference:
      continue
    final = np.subtract(s["final_return_per_seed"], summaries[reference]["final_return_per_seed"])
    auc = np.subtract(s["auc_per_seed"], summaries[reference]["auc_per_seed"])
    out[name] = {
      "final_return_diff_mean": float(np.mean(final)),
      "final_return_diff_std": float(np.std(final)),
      "auc_diff_mean": float(np.mean(auc)),
      "auc_diff_std": float(np.std(auc)),
      "seeds_above": int(np.sum(final > 0)),
    }
  return out


TABLE_HEADER = ["task", "design", "final return", "minus the first, paired", "AUC", "greedy"]
TABLE_HEADER += ["final alpha per branch", "entropy per branch"]


def table_rows(results: dict) -> list[list]:
  """One row per (task, design) for `reporting.print_table`."""
  rows = []
  for task, designs in results.items():
    diffs = paired(designs, next(iter(designs)))  # the first design: the library's default
    for name, s in designs.items():
      d = diffs.get(name)
      rows.append(
        [
          task,
          name,
          f"{s['final_return_mean']:.1f} +- {s['final_return_std']:.1f}",
          "" if d is None else f"{d['final_return_diff_mean']:+.1f} +- {d['final_return_diff_std']:.1f}",
          f"{s['auc_mean']:.1f}",
          f"{s['greedy_mean']:.1f} +- {s['greedy_std']:.1f}",
          " ".join(f"{a:.3g}" for a in s["final_alpha_per_branch_median"]),
          " ".join(f"{h:.2f}" for h in s["final_entropy_per_branch_mean"]),
        ]
      )
  return rows


def _curves(axes, h: dict, color: str, label: str) -> None:
  """The median return over seeds (their range shaded), and each branch's median alpha and entropy."""
  steps = h["steps"][:, 0]
  with warnings.catch_warnings():  # rows where every member is NaN (no episode yet)
    warnings.simplefilter("ignore", RuntimeWarning)
    lo, mid, hi = np.nanmin(h["return"], 1), np.nanmedian(h["return"], 1), np.nanmax(h["return"], 1)
  axes[0].plot(steps, mid, color=color, lw=1.5, label=label)
  axes[0].fill_between(steps, lo, hi, color=color, alpha=0.15, lw=0)
  for k, ls in zip(range(h["alpha"].shape[-1]), ("-", "--", ":", "-.")):
    axes[1].plot(steps, np.median(h["alpha"][:, :, k], 1), color=color, ls=ls, lw=1.5)
    axes[2].plot(steps[1:], np.median(h["entropy"][1:, :, k], 1), color=color, ls=ls, lw=1.5)


def _figure(draw, part: str, title: str, path: str) -> str:
  """Three panels (return, alpha per `part`, entropy per `part`) drawn by `draw(axes)`, titled, saved to `path`."""
  plt = reporting._pyplot()
  with plt.rc_context(reporting.FONTS):
    fig, axes = plt.subplots(1, 3, figsize=(reporting.PANELS_WIDTH, reporting.PANEL_HEIGHT + 1.0), dpi=reporting.DPI)
    draw(axes)
    axes[0].set_title("mean return, last 10 episodes")
    axes[1].set_title(f"alpha per {part} (log scale)")
    axes[1].set_yscale("log")
    axes[2].set_title(f"entropy per {part} (nats)")
    for ax in axes:
      reporting._steps_axis(ax)
      ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
  return reporting._save(fig, path)


def plot_task(task: Task, histories: dict, path: str) -> str:
  """Return, each branch's alpha and each branch's entropy (branch 0 solid, branch 1 dashed; targets dotted).

  Lines are the median over seeds, the shaded band their range; figure and fonts as `reporting.plot_groups`.
  """
  nvec = SAC(task.cfg).nvec

  def draw(axes):
    for name, h in histories.items():
      d = DESIGNS[name]
      _curves(axes, h, d.color, d.label())
      for n in [] if d.shared else sorted(set(nvec.tolist())):
        axes[2].axhline(d.ratio * np.log(n), color=d.color, ls=":", lw=1.2)

  bins = " and ".join(map(str, nvec))
  title = f"MultiDiscrete SAC on {task.name}, {bins} bins: branch 0 solid, branch 1 dashed; targets dotted"
  return _figure(draw, "branch", title, path)


def run_task(
  task: Task, names: Sequence[str], *, out: str, seed: int = 0, progress: bool = True, resume: bool = False
) -> tuple:
  """Every design on one task; saves each history as `<out>/<task>_<design>.npz`. Returns `(histories, summaries)`.

  With `resume`, the histories already in `out` are read instead of rerun, if every design has one.
  """
  paths = {name: os.path.join(out, f"{task.name}_{name}.npz") for name in names}
  if resume and all(os.path.exists(p) for p in paths.values()):
    runs = {name: reporting.load_run(path) for name, path in paths.items()}
  else:
    runs = run_designs(task, names, seed=seed, progress=progress)
    os.makedirs(out, exist_ok=True)
    for name, (history, finals) in runs.items():
      reporting.save_run(paths[name], history, finals)
  histories = {name: history for name, (history, _) in runs.items()}
  return histories, {name: summarize(history, finals) for name, (history, finals) in runs.items()}


HYBRID_COLORS = {"per_part": "tab:green", "shared": "tab:red"}
HYBRID_LABELS = {"per_part": "alpha per part (targets -1 and 0.6 log 2)", "shared": "one shared alpha, summed target"}


def run_hybrid(
  seeds: int, steps: int, out: str, *, seed: int = 0, progress: bool = True, resume: bool = False
) -> tuple[dict, dict]:
  """The hybrid Pendulum agent (`sac_hybrid.py`) with a temperature per part and with one shared, same seeds.

  Saves `<out>/Pendulum-v1_hybrid_<design>.npz` (with `resume`, reads it if there) and returns
  `(histories, summaries)` keyed by design.
  """
  key_init, key_eval = jax.random.split(jax.random.key(seed))
  histories, summaries = {}, {}
  for name, shared in (("per_part", False), ("shared", True)):
    path = os.path.join(out, f"Pendulum-v1_hybrid_{name}.npz")
    if resume and os.path.exists(path):
      history, finals = reporting.load_run(path)
      histories[name] = history
      summaries[name] = summarize(history, finals) | {"high_gear_greedy": finals["high_gear_greedy"].tolist()}
      continue
    sac = sac_hybrid.SAC(sac_hybrid.Config(shared=shared))
    entropy = jax.tree.map(lambda x: jnp.stack([x] * seeds), sac.init_entropy())  # entropy_jax: per member
    with reporting.Timer() as t:
      population = jax.vmap(sac.init)(jax.random.split(key_init, seeds), entropy)
      population, history = sac_hybrid.train(sac, population, steps, progress=progress, desc=f"hybrid {name}")
      policy, high = jax.jit(jax.vmap(lambda a, k, sac=sac: sac_hybrid.evaluate(sac, a, k)))(
        population, jax.random.split(key_eval, seeds)
      )
    finals = {"greedy": np.asarray(policy).mean(axis=1), "high_gear_greedy": np.asarray(high), "seconds": t.seconds}
    reporting.save_run(path, history, finals)
    histories[name] = history
    summaries[name] = summarize(history, finals) | {"high_gear_greedy": np.asarray(high).tolist()}
  return histories, summaries


def plot_hybrid(histories: dict, path: str) -> str:
  """Return, each part's alpha and each part's entropy (torque solid, gear dashed; targets dotted)."""

  def draw(axes):
    for name, h in histories.items():
      _curves(axes, h, HYBRID_COLORS[name], HYBRID_LABELS[name])
    for target in (ej.continuous_target(1), ej.discrete_target(len(sac_hybrid.GEARS))):  # the per-part targets
      axes[2].axhline(target, color="tab:green", ls=":", lw=1.2)

  title = "Hybrid SAC on Pendulum-v1 (torque + gear): torque solid, gear dashed; per-part targets dotted"
  return _figure(draw, "part", title, path)


def main(argv=None):
  parser = argparse.ArgumentParser(
    description="MultiDiscrete SAC with a temperature per branch (several target ratios) or one shared"
    " temperature, the same budget and seeds for each, on Reacher-misc and Swimmer-misc; writes per-design"
    " histories, results.json and a plot per task."
  )
  parser.add_argument(
    "--tasks", nargs="*", default=["reacher", "swimmer"], choices=TASKS, help="tasks (default: reacher swimmer)"
  )
  parser.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=DESIGNS, help="designs (default: all)")
  parser.add_argument("--seeds", type=int, default=None, help="members per design (default 5)")
  parser.add_argument(
    "--steps", type=int, default=None, help="env steps per member (default: 80000 Reacher-misc, 50000 Swimmer-misc)"
  )
  parser.add_argument("--bins", type=int, default=None, help="bins per action dimension (default 11)")
  parser.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
  parser.add_argument("--out", default="structured_study", help="output folder (default structured_study/)")
  parser.add_argument(
    "--resume", action="store_true", help="reuse the histories already in --out instead of rerunning them"
  )
  parser.add_argument("--hybrid-seeds", type=int, default=4, help="members per hybrid design (default 4; 0 skips)")
  parser.add_argument("--hybrid-steps", type=int, default=15_000, help="env steps per hybrid member (default 15000)")
  args = parser.parse_args(argv)

  results, tasks = {}, {}
  for name in args.tasks:
    task = TASKS[name]
    task = task._replace(
      steps=task.steps if args.steps is None else args.steps,
      seeds=task.seeds if args.seeds is None else args.seeds,
      cfg=task.cfg if args.bins is None else task.cfg._replace(bins=args.bins),
    )
    histories, results[task.name] = run_task(task, args.designs, out=args.out, seed=args.seed, resume=args.resume)
    h = next(iter(histories.values()))  # what ran (or was resumed): steps and seeds from the history
    tasks[task.name] = {"steps": int(h["steps"][-1, 0]), "seeds": h["return"].shape[1], "bins": task.cfg.bins}
    print(f"Wrote {plot_task(task, histories, os.path.join(args.out, f'{task.name}.png'))}")
  if args.hybrid_seeds:
    os.makedirs(args.out, exist_ok=True)
    histories, results["Pendulum-v1 hybrid"] = run_hybrid(
      args.hybrid_seeds, args.hybrid_steps, args.out, seed=args.seed, resume=args.resume
    )
    print(f"Wrote {plot_hybrid(histories, os.path.join(args.out, 'Pendulum-v1_hybrid.png'))}")
    h = histories["per_part"]
    tasks["Pendulum-v1 hybrid"] = {"steps": int(h["steps"][-1, 0]), "seeds": h["return"].shape[1]}
  reporting.print_table(TABLE_HEADER, table_rows(results))
  meta = {
    "date": datetime.date.today().isoformat(),
    "machine": platform.machine(),
    "cpus": os.cpu_count(),
    "jax": jax.__version__,
    "seed": args.seed,
    "designs": {n: DESIGNS[n].label() for n in args.designs},
    "tasks": tasks,
    "config": Config()._asdict(),
  }
  path = os.path.join(args.out, "results.json")
  if os.path.exists(path):  # the tasks run now replace their entries; the others stay
    with open(path) as f:
      before = json.load(f)
    results = before["results"] | results
    meta["tasks"] = before["meta"]["tasks"] | meta["tasks"]
  with open(path, "w") as f:
    json.dump({"meta": meta, "results": results}, f, indent=1)
  print(f"Wrote {os.path.join(args.out, 'results.json')}")
  return results


if __name__ == "__main__":
  main()
