"""What handing the temperature to entropy_jax buys, measured in the clients' own agents.

Two documented runs (not tests), each against the client's own defaults:

- `rejax`: rejax's discrete SAC on gymnax CartPole-v1. rejax's temperature
  (target `0.98 * log 2`, alpha from 1, no bounds), one run per seed, against
  `EntropySAC` with the target-and-bound recipe of `examples/sac_discrete.py`
  (target `discrete_target(2, ratio)`, ratio spread over [0.05, 0.25], alpha
  from 0.1 and at most 0.2) as a population from `entropy_jax.init_population`,
  each member with its own target and alpha learning rate (3e-4 to 3e-3),
  all trained by one `jax.vmap` of rejax's `train`.
- `sbx`: SBX's SAC on gymnasium Pendulum-v1 with one non-finite entropy
  estimate fed to the temperature step (a fault injected at one update, the
  same in both arms). SBX's Adam state turns NaN and its alpha with it, for
  good; entropy_jax skips the step, counts it, and trains on.

Returns are the clients' own measurements: rejax's `evaluate` (mean over 32
episodes of the stochastic policy) and SB3's episode monitor. Writes PNGs, a
JSON summary and a markdown table to `--out`.

Run `python examples/integrations/what_it_buys.py --help`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

if __package__ in (None, ""):  # run as a script: make `examples` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import jax
import jax.numpy as jnp
import numpy as np
import optax

import entropy_jax as ej
from examples import common, plotting, training

EVAL_EPISODES = 32
SBX_LEARNING_STARTS = 100  # sbx.SAC's default: the first update follows step 100


# --------------------------------------------------------------- rejax run --


def rejax_recipe(steps: int, seeds: int, members: int, key: int) -> dict:
  """rejax's discrete SAC on CartPole: its own temperature vs the entropy_jax recipe."""
  import rejax
  from rejax.evaluate import evaluate

  from examples.integrations.rejax_sac import (
    EntropySAC,
    as_rejax_state,
    log_alpha,
    rejax_env,
  )

  env, env_params = rejax_env("CartPole-v1")
  eval_freq = max(steps // 20, 1)

  def eval_callback(algo, ts, rng):
    act = algo.make_act(ts)
    _, returns = evaluate(act, rng, env, env_params, EVAL_EPISODES, env_params.max_steps_in_episode)
    return {"return": returns.mean(), "alpha": jnp.exp(log_alpha(ts.alpha_ts))}

  def run(algo, states):
    algo = algo.replace(eval_callback=eval_callback)
    train = jax.jit(jax.vmap(lambda ts: algo.train(train_state=ts)))
    with training.Timer() as t:
      _, ev = jax.block_until_ready(train(states))
    return jax.device_get(ev), t.seconds

  base = {"env": env, "env_params": env_params, "total_timesteps": steps, "eval_freq": eval_freq}
  theirs = rejax.SAC.create(**base)
  keys = jax.random.split(jax.random.key(key), max(seeds, members))
  default_ev, default_wall = run(theirs, jax.vmap(theirs.init_state)(keys[:seeds]))

  ratios = np.linspace(0.05, 0.25, members) if members > 1 else np.array([0.15])
  lrs = common.log_uniform_spread(3e-4, 3e-3, members)
  ours = EntropySAC.create(
    **base,
    initial_alpha=0.1,
    max_alpha=0.2,
    alpha_optimizer=optax.inject_hyperparams(optax.adam)(learning_rate=3e-4),
  )
  population = ej.init_population(
    np.array([ej.discrete_target(2, float(r)) for r in ratios], np.float32),
    initial_alpha=0.1,
    max_alpha=0.2,
    optimizer=ours.alpha_optimizer,
    loss_form="alpha",
    learning_rate=lrs,
  )
  states = jax.vmap(ours.init_state)(keys[:members])
  states = states.replace(alpha_ts=as_rejax_state(population))
  recipe_ev, recipe_wall = run(ours, states)
  return {
    "steps": (np.arange(default_ev["return"].shape[1]) * eval_freq).tolist(),
    "default": {k: np.asarray(v).tolist() for k, v in default_ev.items()},
    "recipe": {k: np.asarray(v).tolist() for k, v in recipe_ev.items()},
    "ratios": ratios.tolist(),
    "lrs": np.asarray(lrs).tolist(),
    "wall_s": {"default": default_wall, "recipe": recipe_wall},
  }


# ----------------------------------------------------------------- SBX run --


def sbx_fault(steps: int, seeds: int, fault_at: int, key: int) -> dict:
  """SBX's SAC on Pendulum with one NaN entropy estimate at update `fault_at`."""
  import sbx
  from stable_baselines3.common.callbacks import BaseCallback

  from examples.integrations.sbx_sac import EntropySAC

  def faulty(cls):
    """`cls` whose temperature step sees `entropy = NaN` once, at update `fault_at`."""
    step = cls.update_temperature

    @jax.jit
    def update_temperature(target_entropy, state, entropy):
      # The temperature steps so far: Adam's count for SBX's TrainState; an
      # EntropyState's count stops at a skipped step, so add its `skipped`.
      calls = jax.tree.leaves(state.opt_state)[0]
      if isinstance(state, ej.EntropyState):
        calls = state.step + state.skipped
      entropy = jnp.where(calls == fault_at, jnp.nan, entropy)
      return step(target_entropy, state, entropy)

    return type(f"Faulty{cls.__name__}", (cls,), {"update_temperature": staticmethod(update_temperature)})

  class Record(BaseCallback):
    def __init__(self):
      super().__init__()
      self.episodes, self.alphas = [], []

    def _on_step(self) -> bool:
      for info in self.locals["infos"]:
        if "episode" in info:
          self.episodes.append((self.num_timesteps, float(info["episode"]["r"])))
      state = self.model.ent_coef_state
      self.alphas.append(float(jnp.exp(state.params["log_ent_coef"])))
      return True

  out = {}
  for name, cls in (("sbx", faulty(sbx.SAC)), ("entropy_jax", faulty(EntropySAC))):
    runs = []
    for seed in range(key, key + seeds):
      model, rec = cls("MlpPolicy", "Pendulum-v1", seed=seed), Record()
      with training.Timer() as t:
        model.learn(steps, callback=rec)
      skipped = int(getattr(model.ent_coef_state, "skipped", -1))
      runs.append({"episodes": rec.episodes, "alpha": rec.alphas[::10], "wall_s": t.seconds, "skipped": skipped})
    out[name] = runs
  out["fault_at"] = fault_at
  return out


# ------------------------------------------------------------------ report --


def last_mean(values, n: int = 3) -> float:
  """Mean of the last `n` values, NaN-aware (a NaN run reports NaN)."""
  return float(np.mean(np.asarray(values, np.float64)[-n:]))


def rejax_table(r: dict) -> list[list]:
  rows = [
    [f"rejax default, seed {i}", "0.98 log 2", "1.0 (no bound)", "3e-4", f"{last_mean(ret):.0f}"]
    for i, ret in enumerate(r["default"]["return"])
  ]
  rows += [
    [f"entropy_jax member {i}", f"{ratio:.3f} log 2", "0.1 (max 0.2)", f"{lr:.1e}", f"{last_mean(ret):.0f}"]
    for i, (ratio, lr, ret) in enumerate(zip(r["ratios"], r["lrs"], r["recipe"]["return"]))
  ]
  return rows


def sbx_table(r: dict) -> list[list]:
  rows = []
  for name in ("sbx", "entropy_jax"):
    for i, run in enumerate(r[name]):
      returns = [ret for _, ret in run["episodes"]]
      rows.append(
        [
          f"{name}, seed {i}",
          f"{last_mean(returns, 5):.0f}",
          f"{run['alpha'][-1]:.3g}",
          run["skipped"] if run["skipped"] >= 0 else "n/a",
        ]
      )
  return rows


def two_panels(arms: list, title: str, xlabel: str, ylabel: str, path: str, vline: float | None = None) -> str:
  """Returns (left) and alpha (right, log scale) of every run, one colour per arm.

  Args:
    arms: `(label, colour, runs)` triples; a run is `((x, returns), (x, alphas))`.
    vline: an optional step to mark with a dotted line on both panels.
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for label, color, runs in arms:
    for i, run in enumerate(runs):
      for ax, (x, y) in zip(axes, run):
        ax.plot(x, y, color=color, alpha=0.7, label=label if i == 0 else None)
  if vline is not None:
    for ax in axes:
      ax.axvline(vline, color="k", ls=":", lw=1)
  axes[0].set(title=title, xlabel=xlabel, ylabel=ylabel)
  axes[1].set(title="alpha (NaN is not drawn)", xlabel=xlabel, yscale="log")
  axes[0].legend()
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


def plot(r_rejax: dict | None, r_sbx: dict | None, out: str) -> list[str]:
  """The two figures (those whose results are given); returns their paths."""
  paths = []
  if r_rejax:
    steps = np.asarray(r_rejax["steps"])
    arms = [
      (
        label,
        color,
        [((steps, ret), (steps, alpha)) for ret, alpha in zip(r_rejax[arm]["return"], r_rejax[arm]["alpha"])],
      )
      for arm, label, color in (
        ("default", "rejax temperature", "tab:gray"),
        ("recipe", "entropy_jax recipe", "tab:blue"),
      )
    ]
    paths.append(
      two_panels(
        arms, "rejax discrete SAC, CartPole-v1", "env steps", "eval return", os.path.join(out, "rejax_cartpole.png")
      )
    )
  if r_sbx:

    def runs(name):
      series = []
      for run in r_sbx[name]:
        ep = np.asarray(run["episodes"], np.float64).reshape(-1, 2)
        series.append(((ep[:, 0], ep[:, 1]), (np.arange(len(run["alpha"])) * 10, run["alpha"])))
      return series

    arms = [("SBX temperature", "tab:red", runs("sbx")), ("entropy_jax temperature", "tab:blue", runs("entropy_jax"))]
    paths.append(
      two_panels(
        arms,
        "SBX SAC, Pendulum-v1: one NaN entropy",
        "env steps",
        "episode return",
        os.path.join(out, "sbx_nonfinite.png"),
        vline=r_sbx["fault_at"] + SBX_LEARNING_STARTS,
      )
    )
  return paths


def main(argv=None):
  parser = argparse.ArgumentParser(
    description="Measure what entropy_jax's temperature buys inside rejax's and SBX's SAC"
    " (returns side by side, plots, wall times)."
  )
  parser.add_argument("--which", choices=("rejax", "sbx", "both"), default="both")
  parser.add_argument("--rejax-steps", type=int, default=50_000, help="CartPole env steps per run (default 50000)")
  parser.add_argument("--seeds", type=int, default=4, help="seeds of rejax's own temperature (default 4)")
  parser.add_argument("--members", type=int, default=8, help="entropy_jax population size in rejax (default 8)")
  parser.add_argument("--sbx-steps", type=int, default=10_000, help="Pendulum env steps per SBX run (default 10000)")
  parser.add_argument("--sbx-seeds", type=int, default=2, help="SBX seeds per arm (default 2)")
  parser.add_argument("--fault-at", type=int, default=2_000, help="the SBX update whose entropy is NaN (default 2000)")
  parser.add_argument("--seed", type=int, default=0, help="first PRNG seed (default 0)")
  parser.add_argument("--out", default="integrations_out", help="output folder")
  args = parser.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)

  results: dict = {"jax": jax.__version__, "devices": str(jax.devices())}
  if args.which in ("rejax", "both"):
    results["rejax"] = rejax_recipe(args.rejax_steps, args.seeds, args.members, args.seed)
    plotting.print_table(
      ["run", "target", "alpha start", "alpha lr", "return (last 3 evals)"], rejax_table(results["rejax"])
    )
    print("wall seconds:", results["rejax"]["wall_s"])
  if args.which in ("sbx", "both"):
    results["sbx"] = sbx_fault(args.sbx_steps, args.sbx_seeds, args.fault_at, args.seed)
    plotting.print_table(["run", "return (last 5 episodes)", "final alpha", "skipped"], sbx_table(results["sbx"]))
    print("wall seconds:", {k: [r["wall_s"] for r in results["sbx"][k]] for k in ("sbx", "entropy_jax")})
  with open(os.path.join(args.out, "what_it_buys.json"), "w") as f:
    json.dump(results, f)
  for path in plot(results.get("rejax"), results.get("sbx"), args.out):
    print("wrote", path)


if __name__ == "__main__":
  main()
