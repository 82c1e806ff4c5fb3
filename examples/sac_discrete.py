"""Discrete SAC on gymnax CartPole-v1 or MinAtar, alpha tuned by entropy_jax.

Discrete SAC (Christodoulou 2019, "Soft Actor-Critic for Discrete Action
Settings", arXiv:1910.07207): the critics output Q for every action, and the
soft value, the actor loss and the temperature loss take the policy's exact
expectation over actions instead of a sample. Twin critics with
Polyak-averaged targets (Fujimoto et al. 2018), a distrax Categorical policy,
a flashbax replay buffer, and the temperature update
`entropy_jax.discrete_update` fused into the one jitted update step.
Environment steps and updates run in `lax.scan` on device; a population is the
same code under `vmap`, each member with its own seed and entropy state. A
member may carry a TES-SAC controller (`entropy_jax.tes_sac_update`, Xu et
al. 2021) that sets its target after every update.

Run `python examples/sac_discrete.py --help`.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

if __package__ in (None, ""):  # run as a script: make `examples` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import distrax
import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training.train_state import TrainState

import entropy_jax as ej
from examples import common, plotting, training
from examples.common import EpisodeStats, Transition

RETURN_BAR = 475.0  # CartPole-v1's "solved" threshold


class Config(NamedTuple):
  """Hyperparameters of one agent (shared by all population members)."""

  env_name: str = "CartPole-v1"
  hidden: tuple[int, ...] = (64, 64)
  num_envs: int = 2  # environments per member, stepped together
  batch_size: int = 256  # 128 learned as fast but collapsed late more often
  actor_lr: float = 1e-3
  critic_lr: float = 2e-3
  gamma: float = 0.99
  tau: float = 0.05
  buffer_size: int = 50_000
  learning_starts: int = 1_000  # env steps per member of uniform-random actions
  initial_alpha: float = 0.1
  max_alpha: float | None = None  # upper bound on alpha (None: unbounded)
  obs_dtype: str = "float32"  # how the buffer stores observations ("uint8" for 0/1 grids)


DEFAULT_CONFIG = Config()


# ----------------------------------------------------------------- networks --


class Actor(nn.Module):
  """`obs [B, obs_dim] -> Categorical` over `A` actions."""

  hidden: Sequence[int]
  num_actions: int

  @nn.compact
  def __call__(self, obs: jax.Array) -> distrax.Categorical:
    return distrax.Categorical(logits=common.MLP(self.hidden, self.num_actions)(obs))


class TwinQ(nn.Module):
  """`obs [B, obs_dim] -> Q [2, B, A]`: two independent critics, a value per action."""

  hidden: Sequence[int]
  num_actions: int

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    return jnp.stack([common.MLP(self.hidden, self.num_actions)(obs) for _ in range(2)])


# -------------------------------------------------------------------- agent --


class Agent(struct.PyTreeNode):
  """Everything one discrete SAC learner carries through `lax.scan`."""

  actor: TrainState
  critic: TrainState
  target_critic: Any  # critic parameters, Polyak-averaged
  entropy: ej.EntropyState
  tes: ej.TesSacState | None  # the TES-SAC controller of the target, or None
  buffer: Any  # flashbax buffer state
  env_state: Any  # [E] stacked gymnax states
  obs: jax.Array  # [E, obs_dim]
  stats: EpisodeStats  # `current` is [E]; the ring is shared by the E envs
  key: jax.Array
  steps: jax.Array  # [] int32 environment steps taken (all E envs)


OWN_FIELDS = common.OWN_FIELDS


def _row(x: jax.Array, e: int) -> jax.Array:
  return x[e]


def alpha_optimizer() -> optax.GradientTransformation:
  """Alpha's Adam (`ej.adam`) with an injected learning rate, set per member."""
  return optax.inject_hyperparams(ej.adam)(learning_rate=3e-4)


class DiscreteSAC(common.ScanLoop):
  """The functions of a discrete-action SAC agent for one gymnax env.

  The object only holds static things (config, env, networks, buffer); all
  state is in `Agent`. Each method is a pure function of its arguments, so
  `jax.vmap(sac.train_chunk)` trains a population. Step counts are
  environment steps per member; each scan iteration steps `num_envs`
  environments and makes one gradient update.
  """

  def __init__(self, cfg: Config = DEFAULT_CONFIG):
    self.cfg = cfg
    self.num_envs = cfg.num_envs
    self.env, self.env_params = gymnax.make(cfg.env_name)
    self.num_actions = int(self.env.action_space(self.env_params).n)
    # Observations are flattened: MinAtar's [10, 10, C] grids become [100 C] vectors.
    self.obs_dim = int(np.prod(self.env.observation_space(self.env_params).shape))
    self.actor = Actor(cfg.hidden, self.num_actions)
    self.critic = TwinQ(cfg.hidden, self.num_actions)
    self.buffer = common.make_buffer(cfg.buffer_size, cfg.batch_size)
    self.actor_tx = optax.adam(cfg.actor_lr)
    self.critic_tx = optax.adam(cfg.critic_lr)
    self.alpha_tx = alpha_optimizer()

  def default_target(self, ratio: float = ej.DISCRETE_TARGET_RATIO) -> float:
    """`ratio * log(A)` (`entropy_jax.discrete_target`)."""
    return ej.discrete_target(self.num_actions, ratio)

  # ------------------------------------------------------------------ init --
  def init(self, key: jax.Array, entropy: ej.EntropyState, tes: ej.TesSacState | None = None) -> Agent:
    """A fresh agent with the given entropy state (one member of a population)."""
    cfg = self.cfg
    k_actor, k_critic, k_env, key = jax.random.split(key, 4)
    obs0 = jnp.zeros((1, self.obs_dim))
    actor = TrainState.create(
      apply_fn=self.actor.apply,
      params=self.actor.init(k_actor, obs0),
      tx=self.actor_tx,
    )
    critic_params = self.critic.init(k_critic, obs0)
    critic = TrainState.create(
      apply_fn=self.critic.apply,
      params=critic_params,
      tx=self.critic_tx,
    )
    obs, env_state = jax.vmap(self.env.reset, (0, None))(jax.random.split(k_env, cfg.num_envs), self.env_params)
    stored = jnp.zeros(self.obs_dim, cfg.obs_dtype)
    dummy = Transition(
      obs=stored, action=jnp.zeros((), jnp.int32), reward=jnp.zeros(()), next_obs=stored, terminated=jnp.zeros(())
    )
    return Agent(
      actor=actor,
      critic=critic,
      target_critic=critic_params,
      entropy=entropy,
      tes=tes,
      buffer=self.buffer.init(dummy),
      env_state=env_state,
      obs=obs.reshape(cfg.num_envs, -1),
      stats=EpisodeStats.create(envs=cfg.num_envs),
      key=key,
      steps=jnp.zeros((), jnp.int32),
    )

  def init_members(self, key: jax.Array, entropy: ej.EntropyState, tes: ej.TesSacState | None = None) -> Agent:
    """`N` agents with their own seeds from a stacked `[N]` entropy state (and controller)."""
    keys = jax.random.split(key, entropy.log_alpha.shape[0])
    return jax.vmap(self.init)(keys, entropy, tes)

  def init_population(self, key: jax.Array, targets: Sequence[float], alpha_lrs: Sequence[float]) -> Agent:
    """`N` agents with their own seeds, `[N]` target entropies and alpha learning rates."""
    entropy = ej.init_population(
      jnp.asarray(targets, jnp.float32),
      initial_alpha=self.cfg.initial_alpha,
      max_alpha=self.cfg.max_alpha,
      optimizer=self.alpha_tx,
      learning_rate=jnp.asarray(alpha_lrs, jnp.float32),
    )
    return self.init_members(key, entropy)

  # ------------------------------------------------------------ acting --
  def env_step(self, agent: Agent, random_action: bool) -> Agent:
    """One step of each of the member's `E` environments, stored in the buffer."""
    n_envs = self.cfg.num_envs
    key, k_act, k_env = jax.random.split(agent.key, 3)
    if random_action:
      action = jax.random.randint(k_act, (n_envs,), 0, self.num_actions)
    else:
      action = self.actor.apply(agent.actor.params, agent.obs).sample(seed=k_act)
    action = action.astype(jnp.int32)
    obs, env_state, reward, terminated, truncated, info = jax.vmap(self.env.step, (0, 0, 0, None))(
      jax.random.split(k_env, n_envs), agent.env_state, action, self.env_params
    )
    obs = obs.reshape(n_envs, -1)
    store = self.cfg.obs_dtype
    transitions = Transition(
      obs=agent.obs.astype(store),
      action=action,
      reward=reward.astype(jnp.float32),
      next_obs=info["final_observation"].reshape(n_envs, -1).astype(store),
      terminated=terminated.astype(jnp.float32),
    )
    buffer = agent.buffer
    for e in range(n_envs):
      buffer = self.buffer.add(buffer, jax.tree.map(functools.partial(_row, e=e), transitions))
    return agent.replace(
      buffer=buffer,
      env_state=env_state,
      obs=obs,
      stats=agent.stats.record_each(reward, terminated | truncated),
      key=key,
      steps=agent.steps + n_envs,
    )

  # ------------------------------------------------------------ learning --
  def update(self, agent: Agent, batch: Transition) -> tuple[Agent, dict[str, jax.Array]]:
    """One discrete SAC update on a `[B]` batch: critics, actor, then alpha.

    Christodoulou 2019, with the exact expectation over the `A` actions:
      V(s')  = sum_a pi(a|s') [min_i Q'_i(s', a) - alpha log pi(a|s')]   (eq. 10)
      J_Q    = 1/2 sum_i mean_b (Q_i(s_b, a_b) - r_b - gamma (1 - d_b) V(s'_b))^2
      J_pi   = mean_b sum_a pi(a|s_b) [alpha log pi(a|s_b) - min_i Q_i(s_b, a)]  (eq. 12)
      J_alpha: `entropy_jax.discrete_update(pi(.|s_b), log pi(.|s_b))`     (eq. 11)
    All three use the alpha from before this step. With a TES-SAC controller,
    the batch entropy then advances it and its target becomes the state's.

    Args:
      agent: the learner.
      batch: a `Transition` with a leading batch axis `[B]`.

    Returns:
      `(agent, metrics)` with scalar metrics.
    """
    cfg = self.cfg
    alpha = agent.entropy.alpha

    next_pi = self.actor.apply(agent.actor.params, batch.next_obs)
    next_q = jnp.min(self.critic.apply(agent.target_critic, batch.next_obs), axis=0)
    next_v = jnp.sum(next_pi.probs * (next_q - alpha * next_pi.logits), axis=-1)
    y = jax.lax.stop_gradient(batch.reward + cfg.gamma * (1.0 - batch.terminated) * next_v)

    def critic_loss(params):
      q = self.critic.apply(params, batch.obs)  # [2, B, A]
      q_a = jnp.take_along_axis(q, batch.action[None, :, None], axis=-1)[..., 0]
      return 0.5 * jnp.sum(jnp.mean((q_a - y) ** 2, axis=-1))

    q_loss, q_grads = jax.value_and_grad(critic_loss)(agent.critic.params)
    critic = agent.critic.apply_gradients(grads=q_grads)
    q_min = jnp.min(self.critic.apply(critic.params, batch.obs), axis=0)  # [B, A]

    def actor_loss(params):
      pi = self.actor.apply(params, batch.obs)
      # distrax normalises: `pi.logits` are the log-probabilities.
      loss = jnp.mean(jnp.sum(pi.probs * (alpha * pi.logits - q_min), axis=-1))
      return loss, (pi.probs, pi.logits)

    (pi_loss, (probs, log_probs)), pi_grads = jax.value_and_grad(actor_loss, has_aux=True)(agent.actor.params)
    actor = agent.actor.apply_gradients(grads=pi_grads)

    # Temperature: entropy_jax's fused loss + gradient + optax step.
    entropy, ent_metrics = ej.discrete_update(agent.entropy, probs, log_probs)
    tes = agent.tes
    if tes is not None:
      tes = ej.tes_sac_update(tes, ent_metrics["entropy"])
      entropy = entropy.replace(target=tes.target)

    target_critic = optax.incremental_update(critic.params, agent.target_critic, cfg.tau)
    agent = agent.replace(
      actor=actor,
      critic=critic,
      target_critic=target_critic,
      entropy=entropy,
      tes=tes,
    )
    metrics = {
      "critic_loss": q_loss,
      "actor_loss": pi_loss,
      "alpha": ent_metrics["alpha"],
      "target": ent_metrics["target"],
      "entropy": ent_metrics["entropy"],
    }
    return agent, metrics

  def train_step(self, agent: Agent) -> tuple[Agent, dict]:
    """One policy step in each environment, then one update from the buffer."""
    agent = self.env_step(agent, random_action=False)
    key, k_sample = jax.random.split(agent.key)
    batch = self.buffer.sample(agent.buffer, k_sample).experience
    batch = batch._replace(obs=batch.obs.astype(jnp.float32), next_obs=batch.next_obs.astype(jnp.float32))
    return self.update(agent.replace(key=key), batch)

  def evaluate(self, agent: Agent, key: jax.Array, episodes: int = 10, policy: str = "greedy") -> jax.Array:
    """`[episodes]` returns of full episodes from fresh resets (no learning).

    `policy`: `"greedy"` takes the most probable action, `"sample"` samples
    the policy, `"random"` acts uniformly at random (the baseline).
    """

    def act(obs, k):
      if policy == "random":
        return jax.random.randint(k, (), 0, self.num_actions)
      pi = self.actor.apply(agent.actor.params, obs.reshape(-1))
      return pi.mode() if policy == "greedy" else pi.sample(seed=k)

    return common.evaluate_episodes(self.env, self.env_params, act, key, episodes)


# ------------------------------------------------------------ population --


def default_population(sac: DiscreteSAC, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-member `[N]` targets and alpha learning rates.

  Every target is the library's default, `entropy_jax.discrete_target(A)`
  (0.6 log A: the ratio that served on both CartPole and MinAtar Breakout
  without tuning, docs/discrete_targets.md); alpha learning rates are spread
  log-uniformly from 3e-4 to 3e-3.
  """
  targets = np.full(n, sac.default_target(), np.float32)
  lrs = common.log_uniform_spread(3e-4, 3e-3, n)
  return targets, lrs


# The shared loop (examples/training.py), with this agent's defaults.
train_population = functools.partial(training.train_population, chunk=1_000, desc="discrete SAC CartPole")
report = plotting.report


def main(argv=None):
  parser = plotting.population_parser(
    "Train a vmapped population of discrete SAC agents on gymnax CartPole-v1, alpha"
    " tuned by entropy_jax, and print each member's final return.",
    steps=50_000,
    chunk=1_000,
  )
  parser.add_argument("--out", default=None, help="optional folder for history.npz and PNGs")
  args = parser.parse_args(argv)

  sac = DiscreteSAC()
  targets, lrs = default_population(sac, args.members)
  population, history = training.train_and_report(train_population, sac, targets, lrs, args, RETURN_BAR)
  greedy = jax.vmap(lambda a, k: sac.evaluate(a, k))(
    population, jax.random.split(jax.random.key(args.seed + 1), args.members)
  )
  print("greedy-policy evaluation (10 episodes each):", np.round(np.mean(greedy, axis=1), 1))
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    np.savez(os.path.join(args.out, "history.npz"), **history)
    plotting.plot_history(history, args.out, "discrete SAC on CartPole-v1", RETURN_BAR)


if __name__ == "__main__":
  main()
