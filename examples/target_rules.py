"""Rules for the discrete target entropy, as entropy states for a population.

A rule says how a discrete SAC member sets its target entropy, in fractions
of the uniform policy's entropy `log A`, the same for every task:

* a fixed ratio (`entropy_jax.discrete_target(A, ratio)`), optionally with an
  upper bound on alpha;
* a linear anneal of the ratio over a fraction of the run
  (`entropy_jax.linear_schedule(..., num_actions=A)`);
* the staircase of Xu et al. 2021 on a fixed clock
  (`entropy_jax.annealed_discrete_target`);
* the TES-SAC controller of Xu et al. 2021 (`entropy_jax.tes_sac_init` /
  `tes_sac_update`), which drops the target when the entropy has settled;
* Velora 0.2.0's negative target (`entropy_jax.velora_discrete_target`),
  for the parity ablation.

`build` turns a rule into the `[N]` stacked `EntropyState` (and TES-SAC
state) that `jax.vmap(SAC.init)` of `sac_discrete.py` takes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

import entropy_jax as ej

# Fractions of log A.
PAPER_RATIO = ej.PAPER_DISCRETE_TARGET_RATIO  # Christodoulou 2019: 0.98
CLEANRL_RATIO = 0.89  # CleanRL's sac_atari `target_entropy_scale`
MID_RATIO = ej.DISCRETE_TARGET_RATIO  # 0.6, the library's default, chosen by this study
# Its neighbours, to see how sharp the optimum is.
MID_RATIOS = (0.5, 0.7)
LOW_RATIO = 0.15
LOW_MAX_ALPHA = 0.2
# The linear anneal runs from PAPER_RATIO to LOW_RATIO over this fraction of the updates.
ANNEAL_FRACTION = 0.5
# Updates per drop of the staircase, and TES-SAC's patience T (stable updates per drop).
UPDATES_PER_DROP = 1_000


class Rule(NamedTuple):
  """One way to set the target; ratios are fractions of `log A`."""

  name: str
  kind: str  # "fixed", "linear", "staircase", "tes" or "velora"
  ratio: float = PAPER_RATIO  # the fixed ratio, or where an anneal starts
  end_ratio: float = LOW_RATIO  # where the linear anneal ends
  max_alpha: float | None = None

  def label(self) -> str:
    """A legend entry, e.g. `fixed 0.98` or `TES-SAC from 0.98`."""
    bound = "" if self.max_alpha is None else f", alpha <= {self.max_alpha:g}"
    return {
      "fixed": f"fixed {self.ratio:g}{bound}",
      "linear": f"linear {self.ratio:g} -> {self.end_ratio:g}",
      "staircase": f"staircase from {self.ratio:g}",
      "tes": f"TES-SAC from {self.ratio:g}",
      "velora": "Velora 0.98 log(1/A)",
    }[self.kind]


RULES = {
  "paper": Rule("paper", "fixed", PAPER_RATIO),
  "cleanrl": Rule("cleanrl", "fixed", CLEANRL_RATIO),
  "mid_0.7": Rule("mid_0.7", "fixed", MID_RATIOS[1]),
  "mid": Rule("mid", "fixed", MID_RATIO),
  "mid_0.5": Rule("mid_0.5", "fixed", MID_RATIOS[0]),
  "low": Rule("low", "fixed", LOW_RATIO),
  "low_bounded": Rule("low_bounded", "fixed", LOW_RATIO, max_alpha=LOW_MAX_ALPHA),
  "linear": Rule("linear", "linear", PAPER_RATIO, LOW_RATIO),
  "staircase": Rule("staircase", "staircase", PAPER_RATIO),
  "tes": Rule("tes", "tes", PAPER_RATIO),
  "velora": Rule("velora", "velora"),
}


def build(
  rule: Rule,
  num_actions: int,
  members: int,
  updates: int,
  *,
  initial_alpha: float,
  alpha_lr: float,
  optimizer: optax.GradientTransformation,
) -> tuple[ej.EntropyState, ej.TesSacState | None]:
  """The `[members]` stacked entropy state (and TES-SAC state) of `rule`.

  Args:
    rule: the rule.
    num_actions: `A`.
    members: `N`, the population size.
    updates: the number of updates of the run (the linear anneal's clock).
    initial_alpha: alpha at the start.
    alpha_lr: alpha's learning rate, injected into `optimizer`'s state.
    optimizer: an `optax.inject_hyperparams` optimizer of `log_alpha`.

  Returns:
    `(entropy, tes)`: `tes` is None except for the TES-SAC rule.
  """

  def stack(one):
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (members, *jnp.shape(x))), one)

  if rule.kind in ("fixed", "tes", "velora"):
    target = (
      ej.velora_discrete_target(num_actions) if rule.kind == "velora" else ej.discrete_target(num_actions, rule.ratio)
    )
    entropy = ej.init_population(
      target,
      initial_alpha=initial_alpha,
      optimizer=optimizer,
      max_alpha=rule.max_alpha,
      size=members,
      learning_rate=alpha_lr,
    )
  elif rule.kind in ("linear", "staircase"):
    schedule = (
      ej.linear_schedule(rule.ratio, rule.end_ratio, max(int(updates * ANNEAL_FRACTION), 1), num_actions=num_actions)
      if rule.kind == "linear"
      else ej.annealed_discrete_target(num_actions, steps_per_drop=UPDATES_PER_DROP, initial_ratio=rule.ratio)
    )
    one = ej.init_entropy_state(schedule, initial_alpha=initial_alpha, optimizer=optimizer, max_alpha=rule.max_alpha)
    one = one.replace(opt_state=optax.tree_utils.tree_set(one.opt_state, learning_rate=jnp.float32(alpha_lr)))
    entropy = stack(one)
  else:
    raise ValueError(f"build: unknown rule kind {rule.kind!r} of rule {rule.name!r}.")
  tes = None
  if rule.kind == "tes":
    tes = stack(ej.tes_sac_init(ej.discrete_target(num_actions, rule.ratio), patience=UPDATES_PER_DROP))
  return entropy, tes
