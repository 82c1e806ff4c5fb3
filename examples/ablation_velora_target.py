"""Ablation: Velora 0.2.0's negative discrete target vs the paper's vs ours.

Velora 0.2.0 sets the discrete target entropy to `0.98 * log(1 / A)`, which is
negative (-0.68 nats on CartPole's 2 actions). A categorical policy's entropy
is never negative, so the temperature loss's gradient `H - target` is always
positive and alpha falls at every single update, whatever the policy does.
The paper's `0.98 * log(A)` (+0.68 nats) asks for an almost uniform policy, so
alpha climbs once the agent starts to prefer one action. Ours is a fraction
`ratio * log(A)` with a small ratio (`sac_discrete.default_population`).

This script trains one vmapped discrete SAC population on CartPole-v1 with
the three targets (`--seeds` members each, the same alpha learning rate, no
bound on alpha),
prints how often alpha rose and fell, and plots alpha and the mean return
against environment steps into `<out>/ablation_velora_target.png`.

Run `python examples/ablation_velora_target.py --help`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import NamedTuple

if __package__ in (None, ""):  # run as a script: make `examples` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

from entropy_jax.targets import DISCRETE_TARGET_RATIO, velora_discrete_target
from examples import common
from examples.sac_discrete import DiscreteSAC, Config, train_population

OUR_RATIO = 0.15  # the middle of sac_discrete.default_population's spread
COLORS = {"velora": "tab:red", "paper": "tab:orange", "ours": "tab:blue"}


class Arm(NamedTuple):
  name: str
  label: str
  target: float


def arms(sac: DiscreteSAC) -> list[Arm]:
  """The three targets compared, for `A = sac.num_actions` actions."""
  a = sac.num_actions
  return [
      Arm("velora", f"Velora 0.98 log(1/A) = {velora_discrete_target(a):+.3f}",
          velora_discrete_target(a)),
      Arm("paper", f"paper 0.98 log(A) = {sac.default_target(DISCRETE_TARGET_RATIO):+.3f}",
          sac.default_target(DISCRETE_TARGET_RATIO)),
      Arm("ours", f"ours {OUR_RATIO} log(A) = {sac.default_target(OUR_RATIO):+.3f}",
          sac.default_target(OUR_RATIO)),
  ]


def run_ablation(
    seed: int = 0,
    steps: int = 20_000,
    seeds_per_arm: int = 2,
    alpha_lr: float = 1e-3,
    chunk: int = 500,
    cfg: Config = Config(max_alpha=None),
    progress: bool = True,
) -> tuple[dict, list[str], DiscreteSAC]:
  """Trains `3 * seeds_per_arm` members, `seeds_per_arm` per target.

  The default config is `sac_discrete`'s without the upper bound on alpha, so
  that each target's effect on alpha shows unclipped.

  Returns:
    `(history, arm_of_member, sac)`: `history` as from `train_population`
    (`[chunks + 1, N]` arrays), `arm_of_member[i]` the arm name of member `i`.
  """
  sac = DiscreteSAC(cfg)
  names, targets = [], []
  for arm in arms(sac):
    names += [arm.name] * seeds_per_arm
    targets += [arm.target] * seeds_per_arm
  lrs = np.full(len(targets), alpha_lr, np.float32)
  _, history = train_population(
      sac, jax.random.key(seed), np.asarray(targets, np.float32), lrs, steps,
      chunk=chunk, progress=progress, desc="ablation: Velora / paper / ours",
  )
  return history, names, sac


def summarize(history: dict, names: list[str]) -> dict:
  """Per arm: updates where alpha rose / fell, final alpha and return (member means)."""
  out = {}
  for arm in dict.fromkeys(names):
    idx = [i for i, n in enumerate(names) if n == arm]
    out[arm] = {
        "alpha_rises": int(history["alpha_rises"][:, idx].sum()),
        "alpha_falls": int(history["alpha_falls"][:, idx].sum()),
        "final_alpha": [float(a) for a in history["alpha"][-1, idx]],
        "final_return": [float(r) for r in history["return"][-1, idx]],
        "final_entropy": [float(h) for h in history["entropy"][-1, idx]],
        "target": float(history["target"][0, idx[0]]),
    }
  return out


def plot_ablation(history: dict, names: list[str], labels: dict[str, str], path: str) -> str:
  """Two panels, alpha (log scale) and mean return, one line per member."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  steps = history["steps"][:, 0]
  fig, (ax_a, ax_r) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
  seen = set()
  for i, name in enumerate(names):
    label = None if name in seen else labels[name]
    seen.add(name)
    ax_a.plot(steps, history["alpha"][:, i], color=COLORS[name], lw=1.4, label=label)
    ax_r.plot(steps, history["return"][:, i], color=COLORS[name], lw=1.4, label=label)
  ax_a.set_yscale("log")
  ax_a.set_title("temperature alpha")
  ax_a.set_ylabel("alpha (log scale)")
  ax_r.set_title("mean return of the last 10 episodes")
  ax_r.set_ylabel("return")
  for ax in (ax_a, ax_r):
    ax.set_xlabel("environment steps (per member)")
    ax.grid(alpha=0.3)
  ax_a.legend(fontsize=8, loc="best")
  fig.suptitle("Discrete SAC on CartPole-v1: which target entropy?")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path


def main(argv=None):
  parser = argparse.ArgumentParser(
      description="Discrete SAC on CartPole-v1 with Velora 0.2.0's negative target"
      " entropy 0.98*log(1/A), the paper's 0.98*log(A) and ours; plots alpha and"
      " return against steps."
  )
  parser.add_argument("--out", default="ablation_out", help="output folder (default ablation_out/)")
  parser.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
  parser.add_argument("--steps", type=int, default=20_000,
                      help="environment steps per member (default 20000)")
  parser.add_argument("--seeds", type=int, default=2, help="members per target (default 2)")
  parser.add_argument("--alpha-lr", type=float, default=1e-3,
                      help="Adam learning rate of log alpha, all members (default 1e-3)")
  args = parser.parse_args(argv)

  with common.Timer() as t:
    history, names, sac = run_ablation(args.seed, args.steps, args.seeds, args.alpha_lr)
  labels = {arm.name: arm.label for arm in arms(sac)}
  summary = summarize(history, names)
  rows = [
      [labels[k], v["alpha_falls"], v["alpha_rises"], float(np.mean(v["final_alpha"])),
       float(np.mean(v["final_entropy"])), float(np.mean(v["final_return"]))]
      for k, v in summary.items()
  ]
  common.print_table(
      ["target", "updates alpha fell", "rose", "final alpha", "entropy", "return(last10)"], rows
  )
  path = plot_ablation(history, names, labels, os.path.join(args.out, "ablation_velora_target.png"))
  with open(os.path.join(args.out, "ablation_velora_target.json"), "w") as f:
    json.dump({"seed": args.seed, "steps": args.steps, "seconds": t.seconds, **summary}, f, indent=1)
  print(f"Wrote {path} ({t.seconds:.0f} s)")


if __name__ == "__main__":
  main()
