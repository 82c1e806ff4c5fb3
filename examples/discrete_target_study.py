"""Which discrete target entropy works without tuning? A measured study.

Discrete SAC (`sac_discrete.py`) populations, one per target rule
(`target_rules.py`), the seeds of a rule vmapped, every rule with the same
agent, budget and seeds, on gymnax CartPole-v1 and MinAtar Breakout (and
optionally Asterix). Per rule and task it reports the final return (mean and
spread over seeds), the area under the learning curve, the greedy policy's
return, whether alpha stayed bounded, and where the entropy ended relative to
its target; it writes one `.npz` history per run, `results.json` and a plot
per task.

Run `python examples/discrete_target_study.py --help`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import entropy_jax as ej
from examples import reporting, target_rules
from examples.sac_discrete import SAC, Config, evaluate, train

# MinAtar: the agent sees the flattened 10x10xC grid (a convolution runs about
# 10x slower on XLA:CPU), steps 4 environments per update, as CleanRL's
# sac_atari updates every 4 steps, and stores the 0/1 grids as uint8.
MINATAR_CONFIG = Config(
  env_name="Breakout-MinAtar",
  hidden=(128, 128),
  num_envs=4,
  batch_size=64,
  actor_lr=3e-4,
  critic_lr=3e-4,
  tau=0.01,
  buffer_size=100_000,
  learning_starts=5_000,
  obs_dtype="uint8",
)
STUDY_INITIAL_ALPHA = 0.1
STUDY_ALPHA_LR = ej.optimizers.DEFAULT_LEARNING_RATE  # 3e-4, entropy_jax's default Adam rate
# Alpha counts as unbounded if it rose in at least this share of the updates of
# the last quarter of the run, or ended above ALPHA_RUNAWAY (an entropy bonus
# worth more than any per-step reward of these tasks).
RISING_SHARE = 0.9
ALPHA_RUNAWAY = 10.0
EVAL_EPISODES = 10
COLORS = {
  "paper": "tab:red",
  "cleanrl": "tab:orange",
  "mid_0.7": "yellowgreen",
  "mid": "tab:olive",
  "mid_0.5": "darkolivegreen",
  "low": "tab:blue",
  "low_bounded": "tab:cyan",
  "linear": "tab:green",
  "staircase": "tab:purple",
  "tes": "tab:brown",
  "velora": "tab:pink",
}


class Task(NamedTuple):
  name: str
  cfg: Config
  steps: int  # environment steps per member
  chunk: int  # environment steps per progress tick
  seeds: int  # members per rule


TASKS = {
  "cartpole": Task("CartPole-v1", Config(), 50_000, 1_000, 5),
  "breakout": Task("Breakout-MinAtar", MINATAR_CONFIG, 150_000, 5_000, 3),
  "asterix": Task("Asterix-MinAtar", MINATAR_CONFIG._replace(env_name="Asterix-MinAtar"), 150_000, 5_000, 3),
}
DEFAULT_RULES = tuple(target_rules.RULES)  # all of them, Velora's for the parity ablation


def run_rules(
  task: Task, rules: Sequence[target_rules.Rule], *, seed: int = 0, progress: bool = True
) -> list[tuple[dict, dict]]:
  """Trains `task.seeds` members per rule, all rules in one vmapped population.

  The rules' entropy states must stack (the same kind of target: fixed
  ratios stack with each other). Seed `i` of every rule gets the same PRNG
  key, so it starts from the same networks and environment states under each
  rule, whether the rules run together or one at a time.

  Returns:
    Per rule, `(history, finals)`: `history` as from the agent's `train`
    (`[chunks + 1, seeds]` arrays, plus `tes_drops` `[1, seeds]` for
    TES-SAC), `finals` the greedy evaluation `[seeds]`, the wall time and
    the number of updates.
  """
  sac = SAC(task.cfg)
  updates = (task.steps - task.cfg.learning_starts) // task.cfg.num_envs
  states = [
    target_rules.build(
      rule,
      sac.num_actions,
      task.seeds,
      updates,
      initial_alpha=STUDY_INITIAL_ALPHA,
      alpha_lr=STUDY_ALPHA_LR,
      optimizer=sac.alpha_tx,
    )
    for rule in rules
  ]
  entropy, tes = jax.tree.map(lambda *x: jnp.concatenate(x), *states)
  key_init, key_eval = jax.random.split(jax.random.key(seed))
  keys = jnp.concatenate([jax.random.split(key_init, task.seeds)] * len(rules))
  eval_keys = jnp.concatenate([jax.random.split(key_eval, task.seeds)] * len(rules))
  with reporting.Timer() as t:
    population, history = train(
      sac,
      jax.vmap(sac.init)(keys, entropy, tes),
      task.steps,
      chunk=task.chunk,
      progress=progress,
      desc=f"{task.name} {'+'.join(r.name for r in rules)}",
    )
    greedy = jax.jit(jax.vmap(lambda a, k: evaluate(sac, a, k, EVAL_EPISODES)))(population, eval_keys)
  if population.tes is not None:
    history["tes_drops"] = np.asarray(population.tes.drops)[None]
  greedy = np.asarray(greedy).mean(axis=1)
  out = []
  for i in range(len(rules)):
    cols = slice(i * task.seeds, (i + 1) * task.seeds)
    out.append(
      ({k: v[:, cols] for k, v in history.items()}, {"greedy": greedy[cols], "seconds": t.seconds, "updates": updates})
    )
  return out


def summarize(history: dict, finals: dict) -> dict:
  """Per-rule figures over seeds from one run's history (see the module doc)."""
  figures, _ = reporting.return_summary(history, finals["greedy"])
  rows = len(history["steps"])
  quarter = max(rows // 4, 1)
  rises = history["alpha_rises"][-quarter:].sum(axis=0)
  moves = rises + history["alpha_falls"][-quarter:].sum(axis=0)
  updates_last = finals["updates"] * quarter / (rows - 1)
  rising_share = rises / updates_last
  alpha = history["alpha"][-1]
  bounded = (rising_share < RISING_SHARE) & (alpha <= ALPHA_RUNAWAY)
  gap = history["entropy"][-1] - history["target"][-1]
  out = figures | {
    "final_alpha_median": float(np.median(alpha)),
    "peak_alpha_max": float(np.max(history["alpha_peak"])),
    "alpha_rising_share_last_quarter": float(np.mean(rising_share)),
    "alpha_moved_share_last_quarter": float(np.mean(moves / updates_last)),
    "bounded_seeds": int(np.sum(bounded)),
    "seeds": int(history["return"].shape[1]),
    "final_entropy_mean": float(np.mean(history["entropy"][-1])),
    "final_target_mean": float(np.mean(history["target"][-1])),
    "entropy_minus_target_mean": float(np.mean(gap)),
    "alpha_rises": int(history["alpha_rises"].sum()),
    "alpha_falls": int(history["alpha_falls"].sum()),
    "seconds": float(finals["seconds"]),
  }
  if "tes_drops" in history:
    out["tes_drops_mean"] = float(np.mean(history["tes_drops"]))
  return out


def table_rows(results: dict) -> list[list]:
  """One row per (task, rule) for `reporting.print_table`."""
  rows = []
  for task, rules in results.items():
    for name, s in rules.items():
      rows.append(
        [
          task,
          name,
          f"{s['final_return_mean']:.1f} +- {s['final_return_std']:.1f}",
          f"{s['auc_mean']:.1f}",
          f"{s['greedy_mean']:.1f}",
          f"{s['bounded_seeds']}/{s['seeds']}",
          f"{s['final_alpha_median']:.3g}",
          f"{s['final_entropy_mean']:.3f} / {s['final_target_mean']:.3f}",
        ]
      )
  return rows


TABLE_HEADER = ["task", "rule", "final return", "AUC", "greedy", "alpha bounded", "final alpha", "entropy / target"]


def plot_task(task: str, histories: dict, labels: dict, path: str, title: str = "target rules") -> str:
  """Return, alpha and entropy (targets dashed) per rule: median and range over seeds."""
  steps = next(iter(histories.values()))["steps"][:, 0]
  return reporting.plot_groups(
    steps,
    [
      ("mean return, last 10 episodes", {r: h["return"] for r, h in histories.items()}, False),
      ("alpha (log scale)", {r: h["alpha"] for r, h in histories.items()}, True),
      ("policy entropy (nats)", {r: h["entropy"] for r, h in histories.items()}, False),
    ],
    colors=COLORS,
    labels=labels,
    title=f"Discrete SAC on {task}: {title}",
    path=path,
    dashed={r: np.median(h["target"], axis=1) for r, h in histories.items()},
  )


# Rules drawn beside the anneals for reference, when they ran.
REFERENCE_RULES = ("paper", "mid")


def figure_groups(rules: Sequence[str]) -> dict[str, tuple[str, list[str]]]:
  """`{file suffix: (title, rules)}`: the fixed targets, and the moving ones beside the references."""
  kinds = {r: target_rules.RULES[r].kind for r in rules}
  fixed = [r for r in rules if kinds[r] in ("fixed", "velora")]
  moving = [r for r in rules if kinds[r] not in ("fixed", "velora")]
  groups = {"fixed": ("fixed targets", fixed)}
  if moving:
    groups["annealed"] = ("annealed targets", [r for r in rules if r in REFERENCE_RULES or r in moving])
  return {k: v for k, v in groups.items() if v[1]}


def run_task(
  task: Task,
  rules: Sequence[str],
  *,
  out: str | None = None,
  seed: int = 0,
  progress: bool = True,
  resume: bool = False,
) -> tuple[dict, dict]:
  """Every rule on one task; with `out`, saves each history as `<out>/<task>_<rule>.npz`.

  Returns:
    `(histories, summaries)`, both keyed by rule name.
  """
  histories, summaries = {}, {}
  for name in rules:
    path = None if out is None else os.path.join(out, f"{task.name}_{name}.npz")
    if resume and path and os.path.exists(path):
      data, finals = reporting.load_run(path)
    else:
      ((data, finals),) = run_rules(task, [target_rules.RULES[name]], seed=seed, progress=progress)
      if path:
        os.makedirs(out, exist_ok=True)
        reporting.save_run(path, data, finals)
    histories[name] = data
    summaries[name] = summarize(data, finals)
  return histories, summaries


def main(argv=None):
  parser = argparse.ArgumentParser(
    description="Discrete SAC under several target-entropy rules (fixed ratios, bounded"
    " alpha, linear anneal, staircase, TES-SAC), the same budget and seeds for each, on"
    " CartPole-v1 and MinAtar; writes per-run histories, results.json and plots."
  )
  parser.add_argument(
    "--tasks", nargs="+", default=["cartpole", "breakout"], choices=TASKS, help="tasks (default: cartpole breakout)"
  )
  parser.add_argument(
    "--rules",
    nargs="+",
    default=list(DEFAULT_RULES),
    choices=target_rules.RULES,
    help="rules (default: all)",
  )
  parser.add_argument(
    "--seeds", type=int, nargs="+", default=None, help="members per rule, one per task (default: 5 CartPole, 3 MinAtar)"
  )
  parser.add_argument(
    "--steps",
    type=int,
    nargs="+",
    default=None,
    help="env steps per member, one per task (default: 50000 CartPole, 150000 MinAtar)",
  )
  parser.add_argument(
    "--chunk", type=int, default=None, help="env steps per progress tick (default: 1000 CartPole, 5000 MinAtar)"
  )
  parser.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
  parser.add_argument("--out", default="discrete_target_study", help="output folder (default discrete_target_study/)")
  parser.add_argument(
    "--resume", action="store_true", help="reuse the histories already in --out instead of rerunning them"
  )
  args = parser.parse_args(argv)
  for flag in ("steps", "seeds"):
    if getattr(args, flag) is not None and len(getattr(args, flag)) != len(args.tasks):
      parser.error(f"--{flag} takes one value per task; got {getattr(args, flag)} for {args.tasks}")

  results, seconds, tasks = {}, {}, {}
  for i, name in enumerate(args.tasks):
    task = TASKS[name]
    task = task._replace(
      steps=task.steps if args.steps is None else args.steps[i],
      seeds=task.seeds if args.seeds is None else args.seeds[i],
      chunk=task.chunk if args.chunk is None else args.chunk,
    )
    tasks[task.name] = {"steps": task.steps, "seeds": task.seeds}
    histories, summaries = run_task(task, args.rules, out=args.out, seed=args.seed, resume=args.resume)
    results[task.name] = summaries
    seconds[task.name] = sum(s["seconds"] for s in summaries.values())
    labels = {r: target_rules.RULES[r].label() for r in args.rules}
    for group, title in figure_groups(args.rules).items():
      path = os.path.join(args.out, f"{task.name}_{group}.png")
      print(f"Wrote {plot_task(task.name, {r: histories[r] for r in title[1]}, labels, path, title[0])}")
  reporting.print_table(TABLE_HEADER, table_rows(results))
  meta = {
    "date": datetime.date.today().isoformat(),
    "machine": platform.machine(),
    "cpus": os.cpu_count(),
    "jax": jax.__version__,
    "device": str(jax.devices()[0]),
    "seed": args.seed,
    "rules": args.rules,
    "tasks": tasks,
    "initial_alpha": STUDY_INITIAL_ALPHA,
    "alpha_lr": STUDY_ALPHA_LR,
    "train_seconds": seconds,
  }
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump({"meta": meta, "results": results}, f, indent=1)
  print(f"Wrote {os.path.join(args.out, 'results.json')}")
  return results


if __name__ == "__main__":
  main()
