"""SAC throughput, and the entropy update's share of a SAC training step.

On the continuous SAC example (`examples.sac_continuous`, gymnax Pendulum, a
vmapped population of `--members` agents with their own targets and alpha
learning rates), side by side (medians of interleaved repeats, `_timing.py`),
each a jitted `lax.scan` of `--steps` steps with the state threaded from call
to call and donated, as a training loop runs:

* environment steps per second of the training loop (`SAC.train_chunk`: one
  environment step and one update per step), for one agent and for the
  population;
* the full training step (`SAC.train_step`: environment step, replay sample,
  critic, actor and temperature updates) against the entropy update alone
  (`continuous_update` on the same `[N]` entropy states and `[B]` log_probs
  per member): the alone/full ratio is the entropy update's share of a step.
"""

from __future__ import annotations

import sys
from typing import Any

from benchmarks import _cli, _script

NAME = "sac"
REPEATS, MIN_TIME = 11, 0.0  # Each sample is one scan of --steps steps.
SHAPES = False
CHUNK_ONE = "training loop, one agent"
CHUNK_POP = "training loop, population"
FULL = "SAC.train_step, population"
ALONE = "continuous_update alone, population"


def add_arguments(p) -> None:
  p.add_argument("--members", type=_cli.positive_int, default=8, help="population size (default 8)")
  _cli.add_scaled(p, "--steps", full=200, quick=50, help="training steps per timed lax.scan")


def run(args, notes: list[str]) -> dict[str, Any]:
  del notes
  import jax

  from benchmarks._timing import interleaved, threaded
  from entropy_jax import continuous_update
  from examples.sac_continuous import SAC, Config, default_population

  sac = SAC(Config())
  n, k = args.members, args.steps
  targets, lrs = default_population(sac, n)
  pop = sac.init_population(jax.random.key(0), targets, lrs)
  pop = jax.block_until_ready(jax.jit(jax.vmap(sac.warmup))(pop))  # A filled buffer, as in training.

  def copy(tree):
    return jax.tree.map(lambda x: x.copy(), tree)

  chunk = jax.jit(jax.vmap(lambda a: sac.train_chunk(a, k)), donate_argnums=0)

  def full_steps(agent):
    return jax.lax.scan(lambda a, _: (sac.train_step(a)[0], None), agent, None, length=k)

  def alone_steps(entropy, log_probs):
    return jax.lax.scan(lambda e, lp: (continuous_update(e, lp)[0], None), entropy, log_probs)

  log_probs = -jax.random.uniform(jax.random.key(1), (n, k, sac.cfg.batch_size))
  fns = {
    CHUNK_ONE: threaded(chunk, jax.tree.map(lambda x: x[:1].copy(), pop), carry=True),
    CHUNK_POP: threaded(chunk, copy(pop), carry=True),
    FULL: threaded(jax.jit(jax.vmap(full_steps), donate_argnums=0), copy(pop), carry=True),
    ALONE: threaded(jax.jit(jax.vmap(alone_steps), donate_argnums=0), copy(pop.entropy), log_probs, carry=True),
  }
  t = {name: timing.median for name, timing in interleaved(fns, repeats=args.repeats, min_time=args.min_time).items()}
  results = {
    "device": str(jax.devices()[0]),
    "members": n,
    "steps_per_call": k,
    "hidden": list(sac.cfg.hidden),
    "batch_size": sac.cfg.batch_size,
    "env_steps_per_s_one_agent": k / t[CHUNK_ONE],
    "env_steps_per_s_population": n * k / t[CHUNK_POP],
    "train_step_s": t[FULL] / k,
    "entropy_update_alone_s": t[ALONE] / k,
    "entropy_update_per_member_s": t[ALONE] / k / n,
    "entropy_update_share": t[ALONE] / t[FULL],
  }
  results["population_speedup_vs_one"] = results["env_steps_per_s_population"] / results["env_steps_per_s_one_agent"]
  for line in lines(results):
    print("  " + line)
  return {NAME: results}


def lines(r: dict[str, Any]) -> list[str]:
  n = r["members"]
  return [
    f"environment steps per second, one agent: {r['env_steps_per_s_one_agent']:,.0f}",
    f"environment steps per second, population of {n}: {r['env_steps_per_s_population']:,.0f}"
    f" ({r['population_speedup_vs_one']:.1f}x one agent)",
    f"SAC training step of {n} members (lax.scan): {_cli.fmt_time(r['train_step_s'])}",
    f"entropy update of {n} members alone (lax.scan): {_cli.fmt_time(r['entropy_update_alone_s'])}"
    f" ({_cli.fmt_time(r['entropy_update_per_member_s'])} per member)",
    f"entropy update's share of a SAC training step: {100 * r['entropy_update_share']:.2f}%",
  ]


def markdown(results: dict[str, Any], args: dict[str, Any]) -> list[str]:
  r = results[NAME]
  return [
    f"## SAC on Pendulum: throughput and the entropy update's share (hidden {tuple(r['hidden'])},"
    f" batch {r['batch_size']}, {r['steps_per_call']} steps per lax.scan, {r['device']})",
    "",
  ] + [f"- {line}" for line in lines(r)]


def main(argv: list[str] | None = None) -> int:
  return _script.standalone(sys.modules[__name__], argv)


if __name__ == "__main__":
  sys.exit(main())
