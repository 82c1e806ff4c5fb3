"""rejax's discrete SAC on CartPole-v1: rejax's temperature against entropy_jax's default target.

Three arms, the same seeds, budget and rejax defaults otherwise (64x64
networks, learning rate 3e-4, batch 256, one update per step, alpha from 1):

- `rejax`: `rejax.SAC`, its own temperature, target `0.98 log 2`;
- `entropy_jax`: `EntropySAC` with `ej.discrete_target(2)` (`0.6 log 2`);
- `entropy_jax_stable`: the same with `stable_log_probs=True`, rejax's
  discrete losses computing `log_softmax(logits)` instead of `log(probs)`.

Each arm is one `jit(vmap(train))` over the seeds. Returns are rejax's
`evaluate` (mean over `--episodes` episodes of the stochastic policy); every
evaluation also records alpha, whether the actor's parameters are finite and
the smallest action probability over a replay batch. Writes
`rejax_cartpole.json` and `rejax_cartpole.png` to `--out`.

Run `python examples/integrations/rejax_cartpole.py --help`.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import rejax
from rejax.evaluate import evaluate

import entropy_jax as ej
from entropy_jax.integrations.rejax import EntropySAC, rejax_env

ARMS = ("rejax", "entropy_jax", "entropy_jax_stable")


def make(arm: str, steps: int, eval_freq: int, episodes: int):
  env, env_params = rejax_env("CartPole-v1")

  def eval_callback(algo, ts, rng):
    act = algo.make_act(ts)
    _, returns = evaluate(act, rng, env, env_params, episodes, env_params.max_steps_in_episode)
    batch = ts.replay_buffer.sample(algo.batch_size, rng)
    logits = algo.actor.apply(ts.actor_ts.params, batch.obs, method="_action_dist").logits
    finite = jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(ts.actor_ts.params)]))
    return {
      "return": returns.mean(),
      "alpha": jnp.exp(ts.alpha_ts.params["log_alpha"]),
      "finite": finite,
      "min_prob": jnp.min(jax.nn.softmax(logits)),
    }

  base = {"env": env, "env_params": env_params, "total_timesteps": steps, "eval_freq": eval_freq}
  if arm == "rejax":
    algo = rejax.SAC.create(**base)
  else:
    algo = EntropySAC.create(**base, entropy_target=ej.discrete_target(2), stable_log_probs=arm == "entropy_jax_stable")
  return algo.replace(eval_callback=eval_callback)


def run(arm: str, steps: int, seeds: int, eval_freq: int, episodes: int) -> dict:
  algo = make(arm, steps, eval_freq, episodes)
  keys = jax.random.split(jax.random.key(0), seeds)
  start = time.perf_counter()
  _, ev = jax.block_until_ready(jax.jit(jax.vmap(algo.train))(keys))
  wall = time.perf_counter() - start
  ev = jax.device_get(ev)
  out = {k: np.asarray(v).tolist() for k, v in ev.items()}  # [seeds, evals]
  out["steps"] = [i * eval_freq for i in range(len(out["return"][0]))]
  out["target"] = float(algo.target_entropy if arm == "rejax" else ej.discrete_target(2))
  out["wall_s"] = wall
  return out


def plot(results: dict, path: str) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  colors = {"rejax": "tab:red", "entropy_jax": "tab:gray", "entropy_jax_stable": "tab:blue"}
  labels = {
    "rejax": "rejax (0.98 log 2)",
    "entropy_jax": "entropy_jax (0.6 log 2)",
    "entropy_jax_stable": "entropy_jax (0.6 log 2), stable_log_probs",
  }
  # 900 px wide: shown in the docs' ~800 px column, its 9-11 pt text stays over 10 px tall.
  with plt.rc_context({"font.size": 10, "axes.titlesize": 11, "xtick.labelsize": 9, "legend.fontsize": 9}):
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for arm, r in results.items():
      steps = np.asarray(r["steps"])
      for i, (ret, alpha) in enumerate(zip(r["return"], r["alpha"])):
        label = labels[arm] if i == 0 else None
        axes[0].plot(steps, ret, color=colors[arm], alpha=0.8, label=label)
        axes[1].plot(steps, alpha, color=colors[arm], alpha=0.8, label=label)
    axes[0].set(xlabel="environment steps", ylabel="evaluation return", title="CartPole-v1, rejax SAC")
    axes[1].set(xlabel="environment steps", ylabel="alpha", yscale="log", title="temperature")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
  p.add_argument("--steps", type=int, default=30_000, help="environment steps per run")
  p.add_argument("--seeds", type=int, default=3)
  p.add_argument("--eval-freq", type=int, default=1_500)
  p.add_argument("--episodes", type=int, default=16)
  p.add_argument("--out", default="rejax_cartpole_out")
  p.add_argument("--replot", action="store_true", help="redraw the PNG from the JSON in --out, without training")
  args = p.parse_args()
  os.makedirs(args.out, exist_ok=True)
  path = os.path.join(args.out, "rejax_cartpole.json")
  results = {}
  if os.path.exists(path):
    with open(path) as f:
      results = json.load(f)["arms"]
  for arm in [] if args.replot else args.arms:
    results[arm] = run(arm, args.steps, args.seeds, args.eval_freq, args.episodes)
    r = results[arm]
    print(
      f"{arm}: final return {np.round(np.asarray(r['return'])[:, -1], 1)}, final alpha "
      f"{np.asarray(r['alpha'])[:, -1]}, finite {np.asarray(r['finite'])[:, -1]}, {r['wall_s']:.0f} s",
      flush=True,
    )
    with open(path, "w") as f:
      meta = {"jax": jax.__version__, "rejax": "0.1.3", "seeds": args.seeds, "steps": args.steps}
      json.dump({"meta": meta, "arms": results}, f)
  plot(results, os.path.join(args.out, "rejax_cartpole.png"))


if __name__ == "__main__":
  main()
