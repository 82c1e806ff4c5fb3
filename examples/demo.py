"""The entropy_jax demo: a population of SAC agents tuning their own alpha.

Trains a vmapped population of continuous SAC agents on gymnax Pendulum-v1
(each member with its own seed, target entropy and alpha learning rate),
everything jitted and on device, with a progress bar showing environment
steps per second and the current mean return. At the end it prints one
row per member (final return, alpha, entropy, target) and writes PNG plots of
return, alpha and policy entropy against environment steps, one line per
member, into `--out`. Then (unless `--ablation-steps 0`) it runs a short
discrete-SAC ablation of the target entropy on CartPole-v1 with
`discrete_target_study.py` (Velora's negative target, the paper's 0.98 log(A)
and the recommended 0.6 log(A)) and writes its plot.

Run `python examples/demo.py --help` (or `make demo`).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np

from examples import discrete_target_study as study
from examples import reporting
from examples.sac_continuous import RETURN_BAR, SAC, Config, default_population, train
from examples.target_rules import RULES

# The discrete-target ablation: Velora 0.2.0's negative target, the paper's
# 0.98 log(A) and the recommended 0.6 log(A), on CartPole-v1.
ABLATION_RULES = ("velora", "paper", "mid")
ABLATION_SEEDS = 2
ABLATION_CHUNK = 500


def write_plots(history: dict, out: str) -> list[str]:
  """`return.png`, `alpha.png`, `entropy.png` in `out`; returns their paths."""
  return reporting.plot_history(history, out, "SAC on Pendulum-v1", RETURN_BAR)


def save_history(history: dict, out: str) -> str:
  path = os.path.join(out, "history.npz")
  np.savez(path, **history)
  return path


def run(out: str, seed: int, members: int, steps: int, chunk: int, progress: bool = True) -> dict:
  """Trains, prints the table, writes plots and `summary.json`; returns a summary."""
  os.makedirs(out, exist_ok=True)
  sac = SAC(Config())
  targets, lrs = default_population(sac, members)
  print(
    f"Training {members} SAC agents on Pendulum-v1 for {steps} environment steps each"
    f" (jax {jax.__version__}, {jax.devices()[0].platform})."
  )
  population = sac.init_population(jax.random.key(seed), targets, lrs)
  with reporting.Timer() as t:
    _, history = train(sac, population, steps, chunk=chunk, progress=progress, desc="SAC population")
  table = reporting.print_table(["member", "return(last10)", "alpha", "entropy", "target"], reporting.report(history))
  final = history["return"][-1]
  n_ok = int(np.sum(final >= RETURN_BAR))
  line = (
    f"{n_ok}/{members} members reach a mean return >= {RETURN_BAR:.0f} over their"
    f" last 10 episodes; {members * steps / t.seconds:.0f} env steps/s overall,"
    f" {t.seconds:.0f} s of training (compilation included)."
  )
  print(line)
  paths = [*write_plots(history, out), save_history(history, out)]
  summary = {
    "members": members,
    "steps_per_member": steps,
    "seed": seed,
    "final_return": final.tolist(),
    "final_alpha": history["alpha"][-1].tolist(),
    "final_entropy": history["entropy"][-1].tolist(),
    "target": history["target"][-1].tolist(),
    "members_at_bar": n_ok,
    "train_seconds": t.seconds,
  }
  with open(os.path.join(out, "summary.json"), "w") as f:
    json.dump(summary, f, indent=1)
  with open(os.path.join(out, "summary.txt"), "w") as f:
    f.write(table + "\n" + line + "\n")
  print("Wrote " + ", ".join([*paths, os.path.join(out, "summary.json")]))
  return summary


def run_ablation(out: str, seed: int, steps: int, progress: bool = True) -> dict[str, dict]:
  """The discrete target ablation (`discrete_target_study` on CartPole, three rules); its summaries by rule."""
  task = study.TASKS["cartpole"]._replace(steps=steps, chunk=ABLATION_CHUNK, seeds=ABLATION_SEEDS)
  print(f"Ablation: discrete SAC on CartPole-v1 with three target entropies, {steps} steps each.")
  runs = study.run_rules(task, [RULES[r] for r in ABLATION_RULES], seed=seed, progress=progress)
  histories = {r: h for r, (h, _) in zip(ABLATION_RULES, runs)}
  summaries = {r: study.summarize(h, f) for r, (h, f) in zip(ABLATION_RULES, runs)}
  labels = {r: RULES[r].label() for r in ABLATION_RULES}
  reporting.print_table(
    ["target", "updates alpha fell", "rose", "final alpha", "return(last10)"],
    [
      [labels[r], s["alpha_falls"], s["alpha_rises"], s["final_alpha_median"], s["final_return_mean"]]
      for r, s in summaries.items()
    ],
  )
  path = study.plot_task(task.name, histories, labels, os.path.join(out, "discrete_targets.png"))
  with open(os.path.join(out, "discrete_targets.json"), "w") as f:
    json.dump(summaries, f, indent=1)
  print(f"Wrote {path}, {os.path.join(out, 'discrete_targets.json')}")
  return summaries


def main(argv=None):
  parser = reporting.population_parser(
    "entropy_jax demo: train a vmapped population of SAC agents on"
    " Pendulum-v1, each tuning its own temperature; print a per-member table and"
    " write return/alpha/entropy plots; then a short CartPole ablation of the"
    " discrete target entropy (Velora's, the paper's, 0.6 log A) and its plot.",
    steps=10_000,
    chunk=500,
  )
  parser.add_argument("--out", default="demo_out", help="output folder (default demo_out/)")
  parser.add_argument(
    "--ablation-steps",
    type=int,
    default=6_000,
    help="environment steps per member of the CartPole target ablation (default 6000; 0 skips it)",
  )
  args = parser.parse_args(argv)
  with reporting.Timer() as t:
    run(args.out, args.seed, args.members, args.steps, args.chunk)
    if args.ablation_steps:
      run_ablation(args.out, args.seed, args.ablation_steps)
  print(f"Demo done in {t.seconds:.0f} s.")


if __name__ == "__main__":
  main()
