"""SBX's SAC on Pendulum-v1: SBX's fixed target entropy against an entropy_jax target schedule.

SBX's `target_entropy` is one number for the whole run. With
`entropy_jax.integrations.sbx.SAC` the target can be a schedule of the update
count: here `ej.linear_schedule(start, end, steps)`, a high target early (more
exploration) annealed below SBX's `-action_dim`. Everything else is SBX's
defaults (`ent_coef="auto"`, alpha from 1, its networks and learning rate).

Two arms, the same seeds: `sbx` (`sbx.SAC`, target -1) and `schedule`
(`entropy_jax.integrations.sbx.SAC` with the schedule). Every `--every` steps
a callback records alpha, the target, the policy's entropy (`-mean log pi` of
sampled actions on a replay batch) and the mean return of the last 5 episodes
(SB3's episode monitor). Writes `sbx_target_schedule.json` and `.png` to `--out`.

Run `python examples/integrations/sbx_target_schedule.py --help`.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import sbx
from stable_baselines3.common.callbacks import BaseCallback

import entropy_jax as ej
from entropy_jax.integrations.sbx import SAC


class Probe(BaseCallback):
  """Every `every` steps: alpha, target, policy entropy on a replay batch, recent return."""

  def __init__(self, every: int):
    super().__init__()
    self.every = every
    self.rows: list[dict] = []

  def _on_step(self) -> bool:
    model = self.model
    if self.num_timesteps % self.every or model.replay_buffer.size() < 256:
      return True
    state = model.ent_coef_state
    if isinstance(state, ej.EntropyState):
      alpha, target = float(state.alpha), float(state.target)
    else:
      alpha, target = float(state.apply_fn({"params": state.params})), float(model.target_entropy)
    obs = model.replay_buffer.sample(256).observations.numpy()
    actor = model.policy.actor_state
    dist = actor.apply_fn(actor.params, obs)
    actions = dist.sample(seed=jax.random.key(self.num_timesteps))
    entropy = float(-jnp.mean(dist.log_prob(actions)))
    episodes = [e["r"] for e in list(model.ep_info_buffer)[-5:]]
    ret = float(np.mean(episodes)) if episodes else float("nan")
    self.rows.append({"step": self.num_timesteps, "alpha": alpha, "target": target, "entropy": entropy, "return": ret})
    return True


def run(arm: str, seed: int, steps: int, every: int, start: float, end: float, ramp: int) -> dict:
  if arm == "sbx":
    model = sbx.SAC("MlpPolicy", "Pendulum-v1", seed=seed)
  else:
    # The whole change for an SBX user: this import and constructor.
    model = SAC("MlpPolicy", "Pendulum-v1", seed=seed, entropy_target=ej.linear_schedule(start, end, ramp))
  probe = Probe(every)
  t = time.perf_counter()
  model.learn(steps, callback=probe)
  rows = probe.rows
  return {k: [r[k] for r in rows] for k in rows[0]} | {"wall_s": time.perf_counter() - t}


def plot(results: dict, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  # 900 px wide: shown in the docs' ~800 px column, its 9-11 pt text stays over 10 px tall.
  with plt.rc_context({"font.size": 10, "axes.titlesize": 11, "xtick.labelsize": 9, "legend.fontsize": 9}):
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.4))
    colors = {"sbx": "tab:red", "schedule": "tab:blue"}
    for key, runs in results.items():
      arm = key.split(":")[0]
      first = key.endswith(":0")
      for ax, field in zip(axes, ("return", "entropy", "alpha")):
        ax.plot(runs["step"], runs[field], color=colors[arm], alpha=0.8, label=arm if first else None)
        if field == "entropy" and first:
          ax.plot(runs["step"], runs["target"], color=colors[arm], ls="--", lw=1, label=f"{arm} target")
    axes[0].set(xlabel="environment steps", ylabel="return, last 5 episodes", title="SBX SAC, Pendulum-v1")
    axes[1].set(xlabel="environment steps", ylabel="policy entropy", title="entropy and its target")
    axes[2].set(xlabel="environment steps", ylabel="alpha", yscale="log", title="temperature")
    axes[0].legend()
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--steps", type=int, default=5_000)
  p.add_argument("--seeds", type=int, default=2)
  p.add_argument("--every", type=int, default=250)
  p.add_argument("--start", type=float, default=1.0, help="the schedule's target at the first update")
  p.add_argument("--end", type=float, default=-2.0, help="its target from --ramp updates on")
  p.add_argument("--ramp", type=int, default=4_000, help="updates over which the target is annealed")
  p.add_argument("--out", default="sbx_target_schedule_out")
  p.add_argument("--replot", action="store_true", help="redraw the PNG from the JSON in --out, without training")
  args = p.parse_args()
  os.makedirs(args.out, exist_ok=True)
  path, figure = (os.path.join(args.out, f"sbx_target_schedule.{ext}") for ext in ("json", "png"))
  if args.replot:
    with open(path) as f:
      plot(json.load(f)["runs"], figure)
    return
  results = {}
  for seed in range(args.seeds):
    for arm in ("sbx", "schedule"):
      results[f"{arm}:{seed}"] = r = run(arm, seed, args.steps, args.every, args.start, args.end, args.ramp)
      print(
        f"{arm} seed {seed}: final return {r['return'][-1]:.0f}, entropy {r['entropy'][-1]:.2f},"
        f" alpha {r['alpha'][-1]:.3f}, {r['wall_s']:.0f} s",
        flush=True,
      )
      meta = {"jax": jax.__version__, "sbx-rl": "0.28.0", **vars(args)}
      with open(path, "w") as f:
        json.dump({"meta": meta, "runs": results}, f)
  plot(results, figure)


if __name__ == "__main__":
  main()
