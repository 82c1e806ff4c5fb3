"""Population-based training of SAC's temperature on gymnax Pendulum-v1.

The population of `sac_continuous.py`, plus, every `--interval` environment
steps and inside the same jit: the `--replace` worst members (by mean return
over their last 10 episodes) copy the best members' networks, optimizer
states and entropy state (exploit), then perturb their target entropy and
alpha learning rate (explore) (Jaderberg et al. 2017, "Population Based
Training of Neural Networks", arXiv:1711.09846). The exploit/explore step
works on any stacked agent with an `entropy` field.

Run `python examples/pbt.py --help`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from examples import reporting
from examples.sac_continuous import RETURN_BAR, SAC, default_population, train

PyTree = Any
# Agent fields that hold a member's own experience, not what it has learned: exploit leaves them in place.
OWN_FIELDS = ("buffer", "env_state", "obs", "stats", "key", "steps")
LR_SCALE = 1.25  # explore multiplies a learning rate by at most this factor, or divides by it


class ExploreRange(NamedTuple):
  """How explore perturbs a replaced member's hyperparameters.

  The learning rate is multiplied by `exp(u)`, `u ~ U(-log_lr_scale, +log_lr_scale)`;
  the target entropy is shifted by `v ~ U(-target_shift, +target_shift)` and
  clipped to `[target_min, target_max]`.
  """

  log_lr_scale: float = float(np.log(LR_SCALE))
  target_shift: float = 0.25
  target_min: float = -4.0
  target_max: float = 0.5


DEFAULT_EXPLORE = ExploreRange()


def pbt_ranks(scores: jax.Array, n_replace: int) -> tuple[jax.Array, jax.Array]:
  """`(worst, best)`: indices of the `n_replace` lowest and highest scores.

  `worst[i]` is replaced by `best[i]`. NaN scores count as the worst.
  """
  scores = jnp.where(jnp.isnan(scores), -jnp.inf, scores)
  order = jnp.argsort(scores)  # ascending
  return order[:n_replace], order[::-1][:n_replace]


def exploit(population: PyTree, scores: jax.Array, n_replace: int) -> tuple[PyTree, jax.Array]:
  """Truncation selection: the worst `n_replace` members copy the best ones.

  Every leaf of `population` (parameters, optimizer states, entropy state, ...)
  of member `worst[i]` becomes that of member `best[i]`.

  Returns:
    `(new_population, source)`: `source[j]` is the member that `j` now copies
    (`source[j] == j` for members that were kept).
  """
  n = scores.shape[0]
  worst, best = pbt_ranks(scores, n_replace)
  source = jnp.arange(n).at[worst].set(best)
  return jax.tree.map(lambda x: x[source], population), source


def explore_lr_and_target(
  key: jax.Array,
  lr: jax.Array,
  target: jax.Array,
  replaced: jax.Array,
  rng: ExploreRange = DEFAULT_EXPLORE,
) -> tuple[jax.Array, jax.Array]:
  """Perturbs `[N]` learning rates and targets where `replaced` is True."""
  k_lr, k_t = jax.random.split(key)
  u = jax.random.uniform(k_lr, lr.shape, minval=-rng.log_lr_scale, maxval=rng.log_lr_scale)
  v = jax.random.uniform(k_t, target.shape, minval=-rng.target_shift, maxval=rng.target_shift)
  new_lr = jnp.where(replaced, lr * jnp.exp(u), lr)
  new_target = jnp.where(replaced, jnp.clip(target + v, rng.target_min, rng.target_max), target)
  return new_lr, new_target


def pbt_exploit_explore(
  key: jax.Array,
  population: PyTree,
  scores: jax.Array,
  n_replace: int,
  rng: ExploreRange = DEFAULT_EXPLORE,
  own_fields: Sequence[str] = (),
) -> tuple[PyTree, jax.Array]:
  """One PBT step on a stacked population of agents (a `struct.PyTreeNode`).

  Exploit: the `n_replace` lowest-scoring members copy every field of the
  `n_replace` highest-scoring ones (networks, optimizer states and the
  `entropy` `EntropyState`) except `own_fields` (their own experience:
  replay buffer, environment, episode statistics, PRNG key).
  Explore: each replaced member's alpha learning rate (an
  `optax.inject_hyperparams` `learning_rate`) and target entropy are then
  perturbed as `ExploreRange` states. Pure and jittable.

  The targets are set on `population.entropy.target`, so the entropy states
  must not carry a target schedule (it would overwrite them).

  Returns:
    `(new_population, source)`: see `exploit`.
  """
  copied, source = exploit(population, scores, n_replace)
  copied = copied.replace(**{f: getattr(population, f) for f in own_fields})
  replaced = source != jnp.arange(source.shape[0])
  entropy = copied.entropy
  lr = optax.tree_utils.tree_get(entropy.opt_state, "learning_rate")
  new_lr, new_target = explore_lr_and_target(key, lr, entropy.target, replaced, rng)
  entropy = entropy.replace(
    target=new_target.astype(entropy.target.dtype),
    opt_state=optax.tree_utils.tree_set(entropy.opt_state, learning_rate=new_lr.astype(lr.dtype)),
  )
  return copied.replace(entropy=entropy), source


def make_pbt_hook(key: jax.Array, every: int, n_replace: int, rng: ExploreRange):
  """A `chunk_hook` for the agents' `train`: a PBT step after every `every` chunks.

  Scores are each member's mean return over its last 10 episodes. The branch
  is a `lax.cond` on the chunk counter, so the whole thing stays in one jit.
  """

  def hook(population, chunk_index):
    def pbt(pop):
      scores = jax.vmap(lambda a: a.stats.mean_recent())(pop)
      new_pop, _ = pbt_exploit_explore(jax.random.fold_in(key, chunk_index), pop, scores, n_replace, rng, OWN_FIELDS)
      return new_pop

    return jax.lax.cond((chunk_index + 1) % every == 0, pbt, lambda p: p, population)

  return hook


def explore_range(sac: SAC) -> ExploreRange:
  """Targets stay within `[-3 * action_dim, 0]`; learning rates move by up to x1.25."""
  t0 = sac.default_target
  return ExploreRange(target_min=3.0 * t0, target_max=0.0)


def main(argv=None):
  parser = reporting.population_parser(
    "Population-based training (exploit + explore of target entropy and alpha learning"
    " rate, inside jit) of SAC agents on gymnax Pendulum-v1.",
    steps=20_000,
    chunk=500,
  )
  parser.add_argument("--interval", type=int, default=2_000, help="environment steps between PBT steps (default 2000)")
  parser.add_argument("--replace", type=int, default=2, help="members replaced at each PBT step (default 2)")
  args = parser.parse_args(argv)
  if args.interval % args.chunk:
    parser.error(f"--interval ({args.interval}) must be a multiple of --chunk ({args.chunk})")

  sac = SAC()
  targets, lrs = default_population(sac, args.members)
  key_train, key_pbt = jax.random.split(jax.random.key(args.seed))
  hook = make_pbt_hook(key_pbt, args.interval // args.chunk, args.replace, explore_range(sac))
  population = sac.init_population(key_train, targets, lrs)
  with reporting.Timer() as t:
    _, history = train(sac, population, args.steps, chunk=args.chunk, desc="SAC Pendulum PBT", chunk_hook=hook)
  reporting.print_population_result(history, RETURN_BAR, args.steps, t.seconds, extra=["alpha_lr"])
  return history


if __name__ == "__main__":
  main()
