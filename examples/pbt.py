"""Population-based training of SAC's temperature on gymnax Pendulum-v1.

The population of `sac_continuous.py`, plus, every `--interval` environment
steps and inside the same jit: the `--replace` worst members (by mean return
over their last 10 episodes) copy the best members' networks, optimizer
states and entropy state (exploit), then perturb their target entropy and
alpha learning rate (explore) (Jaderberg et al. 2017, "Population Based
Training of Neural Networks", arXiv:1711.09846).

Run `python examples/pbt.py --help`.
"""

from __future__ import annotations

import argparse
import os
import sys

if __package__ in (None, ""):  # run as a script: make `examples` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np

from examples import common
from examples.sac_continuous import OWN_FIELDS, SAC, default_population, report, train_population


def make_pbt_hook(sac: SAC, key: jax.Array, every: int, n_replace: int,
                  rng: common.ExploreRange):
  """A `chunk_hook` for `train_population`: a PBT step after every `every` chunks.

  Scores are each member's mean return over its last 10 episodes. The branch
  is a `lax.cond` on the chunk counter, so the whole thing stays in one jit.
  """
  def hook(population, chunk_index):
    def pbt(pop):
      scores = jax.vmap(lambda a: a.stats.mean_recent())(pop)
      new_pop, _ = common.pbt_exploit_explore(
          jax.random.fold_in(key, chunk_index), pop, scores, n_replace, rng, OWN_FIELDS
      )
      return new_pop

    return jax.lax.cond((chunk_index + 1) % every == 0, pbt, lambda p: p, population)

  return hook


def explore_range(sac: SAC) -> common.ExploreRange:
  """Targets stay within `[-3 * action_dim, 0]`; learning rates move by up to x1.25."""
  t0 = sac.default_target
  return common.ExploreRange(target_min=3.0 * t0, target_max=0.0)


def main(argv=None):
  parser = argparse.ArgumentParser(
      description="Population-based training (exploit + explore of target entropy and"
      " alpha learning rate, inside jit) of SAC agents on gymnax Pendulum-v1."
  )
  parser.add_argument("--members", type=int, default=8, help="population size (default 8)")
  parser.add_argument("--steps", type=int, default=20_000,
                      help="environment steps per member (default 20000)")
  parser.add_argument("--interval", type=int, default=2_000,
                      help="environment steps between PBT steps (default 2000)")
  parser.add_argument("--replace", type=int, default=2,
                      help="members replaced at each PBT step (default 2)")
  parser.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
  parser.add_argument("--chunk", type=int, default=500,
                      help="steps per jitted scan / progress tick (default 500)")
  args = parser.parse_args(argv)
  if args.interval % args.chunk:
    parser.error(f"--interval ({args.interval}) must be a multiple of --chunk ({args.chunk})")

  sac = SAC()
  targets, lrs = default_population(sac, args.members)
  key_train, key_pbt = jax.random.split(jax.random.key(args.seed))
  hook = make_pbt_hook(sac, key_pbt, args.interval // args.chunk, args.replace, explore_range(sac))
  with common.Timer() as t:
    _, history = train_population(
        sac, key_train, targets, lrs, args.steps, chunk=args.chunk, desc="SAC Pendulum PBT",
        chunk_hook=hook,
    )
  rows = [r + [float(history["alpha_lr"][-1, r[0]])] for r in report(history)]
  common.print_table(
      ["member", "return(last10)", "alpha", "entropy", "target", "alpha_lr"], rows
  )
  final = history["return"][-1]
  print(f"{int(np.sum(final >= -200))}/{args.members} members at mean return >= -200"
        f" after {args.steps} steps; wall {t.seconds:.0f} s")


if __name__ == "__main__":
  main()
