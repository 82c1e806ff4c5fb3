"""Soft Actor-Critic on gymnax Pendulum-v1, alpha tuned by entropy_jax.

Twin critics with Polyak-averaged targets, a tanh-squashed Gaussian actor
(distrax), a flashbax replay buffer, and the temperature update
`entropy_jax.continuous_update` fused into the one jitted update step
(Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications",
arXiv:1812.05905, algorithm 1). Environment steps and updates run in
`lax.scan` on device; a population of agents is the same code under `vmap`,
each member with its own seed, target entropy and alpha learning rate.

Run `python examples/sac_continuous.py --help`.
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

RETURN_BAR = -200.0  # the mean return over 10 episodes that counts as "swings up and holds"


class Config(NamedTuple):
  """Hyperparameters of one agent (shared by all population members)."""

  env_name: str = "Pendulum-v1"
  hidden: tuple[int, ...] = (64, 64)
  batch_size: int = 128
  actor_lr: float = 1e-3
  critic_lr: float = 1e-3
  gamma: float = 0.99
  tau: float = 0.01
  buffer_size: int = 20_000
  learning_starts: int = 1_000  # uniform-random actions, no updates
  initial_alpha: float = 1.0
  log_std_min: float = -5.0
  log_std_max: float = 2.0


DEFAULT_CONFIG = Config()


# ----------------------------------------------------------------- networks --


class Actor(nn.Module):
  """`obs [B, O] -> tanh(Normal(mean, std))` over `[B, action_dim]` in [-1, 1]."""

  hidden: Sequence[int]
  action_dim: int
  log_std_min: float = -5.0
  log_std_max: float = 2.0

  @nn.compact
  def __call__(self, obs: jax.Array) -> distrax.Distribution:
    out = common.MLP(self.hidden, 2 * self.action_dim)(obs)
    mean, log_std = jnp.split(out, 2, axis=-1)
    log_std = jnp.clip(log_std, self.log_std_min, self.log_std_max)
    base = distrax.MultivariateNormalDiag(mean, jnp.exp(log_std))
    return distrax.Transformed(base, distrax.Block(distrax.Tanh(), ndims=1))


class TwinCritic(nn.Module):
  """`(obs [B, O], action [B, D]) -> Q [2, B]`: two independent Q networks."""

  hidden: Sequence[int]

  @nn.compact
  def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
    x = jnp.concatenate([obs, action], axis=-1)
    q1 = common.MLP(self.hidden, 1)(x)
    q2 = common.MLP(self.hidden, 1)(x)
    return jnp.stack([q1[..., 0], q2[..., 0]])


# -------------------------------------------------------------------- agent --


class Agent(struct.PyTreeNode):
  """Everything one SAC learner carries through `lax.scan`."""

  actor: TrainState
  critic: TrainState
  target_critic: Any  # critic parameters, Polyak-averaged
  entropy: ej.EntropyState
  buffer: Any  # flashbax buffer state
  env_state: Any
  obs: jax.Array  # [obs_dim]
  stats: EpisodeStats
  key: jax.Array
  steps: jax.Array  # [] int32 environment steps taken


OWN_FIELDS = common.OWN_FIELDS


class SAC(common.ScanLoop):
  """The functions of a continuous-action SAC agent for one gymnax env.

  The object only holds static things (config, env, networks, buffer); all
  state is in `Agent`. Each method is a pure function of its arguments, so
  `jax.vmap(sac.train_chunk)` trains a population.
  """

  def __init__(self, cfg: Config = DEFAULT_CONFIG):
    self.cfg = cfg
    self.env, self.env_params = gymnax.make(cfg.env_name)
    space = self.env.action_space(self.env_params)
    self.action_dim = int(np.prod(space.shape))
    self.action_scale = float(space.high) if np.ndim(space.high) == 0 else np.asarray(space.high)
    self.obs_dim = int(np.prod(self.env.observation_space(self.env_params).shape))
    self.actor = Actor(cfg.hidden, self.action_dim, cfg.log_std_min, cfg.log_std_max)
    self.critic = TwinCritic(cfg.hidden)
    self.buffer = common.make_buffer(cfg.buffer_size, cfg.batch_size)
    # Optimizers built once: they are static pytree metadata of `TrainState`, so
    # agents made by different `init` calls have the same tree structure.
    self.actor_tx = optax.adam(cfg.actor_lr)
    self.critic_tx = optax.adam(cfg.critic_lr)
    # Alpha's Adam (`ej.adam`) with an injected learning rate, set per member.
    self.alpha_tx = optax.inject_hyperparams(ej.adam)(learning_rate=3e-4)
    # Built once, so repeated `init_population` calls reuse the compilation.
    self._init_population = jax.jit(jax.vmap(self.init))

  @property
  def default_target(self) -> float:
    """`-action_dim` (Haarnoja et al. 2018)."""
    return ej.continuous_target(self.action_dim)

  # ------------------------------------------------------------------ init --
  def init(self, key: jax.Array, entropy: ej.EntropyState) -> Agent:
    """A fresh agent with the given entropy state (one member of a population)."""
    k_actor, k_critic, k_env, key = jax.random.split(key, 4)
    obs0 = jnp.zeros((1, self.obs_dim))
    act0 = jnp.zeros((1, self.action_dim))
    actor = TrainState.create(
      apply_fn=self.actor.apply,
      params=self.actor.init(k_actor, obs0),
      tx=self.actor_tx,
    )
    critic_params = self.critic.init(k_critic, obs0, act0)
    critic = TrainState.create(
      apply_fn=self.critic.apply,
      params=critic_params,
      tx=self.critic_tx,
    )
    obs, env_state = self.env.reset(k_env, self.env_params)
    dummy = Transition(
      obs=jnp.zeros(self.obs_dim),
      action=jnp.zeros(self.action_dim),
      reward=jnp.zeros(()),
      next_obs=jnp.zeros(self.obs_dim),
      terminated=jnp.zeros(()),
    )
    return Agent(
      actor=actor,
      critic=critic,
      target_critic=critic_params,
      entropy=entropy,
      buffer=self.buffer.init(dummy),
      env_state=env_state,
      obs=obs,
      stats=EpisodeStats.create(),
      key=key,
      steps=jnp.zeros((), jnp.int32),
    )

  def init_population(self, key: jax.Array, targets: Sequence[float], alpha_lrs: Sequence[float]) -> Agent:
    """`N` agents with their own seeds, `[N]` target entropies and alpha learning rates."""
    targets = jnp.asarray(targets, jnp.float32)
    entropy = ej.init_population(
      targets,
      initial_alpha=self.cfg.initial_alpha,
      optimizer=self.alpha_tx,
      learning_rate=jnp.asarray(alpha_lrs, jnp.float32),
    )
    keys = jax.random.split(key, targets.shape[0])
    return self._init_population(keys, entropy)

  # ------------------------------------------------------------ acting --
  def env_step(self, agent: Agent, random_action: bool) -> Agent:
    """One environment step (policy or uniform action), stored in the buffer."""
    key, k_act, k_env = jax.random.split(agent.key, 3)
    if random_action:
      action = jax.random.uniform(k_act, (self.action_dim,), minval=-1.0, maxval=1.0)
    else:
      action = self.actor.apply(agent.actor.params, agent.obs[None]).sample(seed=k_act)[0]
    obs, env_state, reward, terminated, truncated, info = self.env.step(
      k_env, agent.env_state, action * self.action_scale, self.env_params
    )
    transition = Transition(
      obs=agent.obs,
      action=action,
      reward=reward.astype(jnp.float32),
      next_obs=info["final_observation"],
      terminated=terminated.astype(jnp.float32),
    )
    return agent.replace(
      buffer=self.buffer.add(agent.buffer, transition),
      env_state=env_state,
      obs=obs,
      stats=agent.stats.record(reward, terminated | truncated),
      key=key,
      steps=agent.steps + 1,
    )

  # ------------------------------------------------------------ learning --
  def update(self, agent: Agent, batch: Transition, key: jax.Array) -> tuple[Agent, dict[str, jax.Array]]:
    """One SAC update on a `[B]` batch: critics, actor, then alpha (fused).

    Args:
      agent: the learner.
      batch: a `Transition` with a leading batch axis `[B]`.
      key: PRNG key for the actions sampled in the losses.

    Returns:
      `(agent, metrics)` with scalar metrics.
    """
    cfg = self.cfg
    k_next, k_pi = jax.random.split(key)
    alpha = agent.entropy.alpha

    # Critics: soft Bellman target with the smaller target-Q (eq. 3 and 7).
    next_dist = self.actor.apply(agent.actor.params, batch.next_obs)
    next_action, next_log_prob = next_dist.sample_and_log_prob(seed=k_next)
    next_q = jnp.min(self.critic.apply(agent.target_critic, batch.next_obs, next_action), axis=0)
    y = batch.reward + cfg.gamma * (1.0 - batch.terminated) * (next_q - alpha * next_log_prob)
    y = jax.lax.stop_gradient(y)

    def critic_loss(params):
      q = self.critic.apply(params, batch.obs, batch.action)  # [2, B]
      return 0.5 * jnp.sum(jnp.mean((q - y) ** 2, axis=-1))

    q_loss, q_grads = jax.value_and_grad(critic_loss)(agent.critic.params)
    critic = agent.critic.apply_gradients(grads=q_grads)

    # Actor: minimise E[alpha log pi(a|s) - min Q(s, a)] (eq. 12).
    def actor_loss(params):
      action, log_prob = self.actor.apply(params, batch.obs).sample_and_log_prob(seed=k_pi)
      q = jnp.min(self.critic.apply(critic.params, batch.obs, action), axis=0)
      return jnp.mean(alpha * log_prob - q), log_prob

    (pi_loss, log_prob), pi_grads = jax.value_and_grad(actor_loss, has_aux=True)(agent.actor.params)
    actor = agent.actor.apply_gradients(grads=pi_grads)

    # Temperature: entropy_jax's fused loss + gradient + optax step (eq. 18).
    entropy, ent_metrics = ej.continuous_update(agent.entropy, log_prob)

    target_critic = optax.incremental_update(critic.params, agent.target_critic, cfg.tau)
    agent = agent.replace(actor=actor, critic=critic, target_critic=target_critic, entropy=entropy)
    metrics = {
      "critic_loss": q_loss,
      "actor_loss": pi_loss,
      "alpha": ent_metrics["alpha"],
      "target": ent_metrics["target"],
      "entropy": ent_metrics["entropy"],
    }
    return agent, metrics

  def train_step(self, agent: Agent) -> tuple[Agent, dict]:
    """One policy step in the environment, then one update from the buffer."""
    agent = self.env_step(agent, random_action=False)
    key, k_sample, k_update = jax.random.split(agent.key, 3)
    batch = self.buffer.sample(agent.buffer, k_sample).experience
    return self.update(agent.replace(key=key), batch, k_update)

  def evaluate(self, agent: Agent, key: jax.Array, episodes: int = 10, policy: str = "mean") -> jax.Array:
    """`[episodes]` returns of full episodes from fresh resets (no learning).

    `policy`: `"mean"` acts with `tanh(mean)` (the deterministic policy),
    `"sample"` samples the stochastic policy, `"random"` acts uniformly at
    random (the baseline a learning agent must beat).
    """

    def act(obs, k):
      if policy == "random":
        action = jax.random.uniform(k, (self.action_dim,), minval=-1.0, maxval=1.0)
      else:
        dist = self.actor.apply(agent.actor.params, obs[None])
        action = (jnp.tanh(dist.distribution.mean()) if policy == "mean" else dist.sample(seed=k))[0]
      return action * self.action_scale

    return common.evaluate_episodes(self.env, self.env_params, act, key, episodes)


# ------------------------------------------------------------ population --


def default_population(sac: SAC, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-member `[N]` targets and alpha learning rates.

  Targets are spread around the SAC default `-action_dim` (from
  `-2 * action_dim` to `-0.5 * action_dim`), alpha learning rates
  log-uniformly from 3e-4 to 3e-3.
  """
  t0 = sac.default_target
  targets = np.linspace(2.0 * t0, 0.5 * t0, n).astype(np.float32)
  lrs = common.log_uniform_spread(3e-4, 3e-3, n)
  return targets, lrs


# The shared loop (examples/training.py), with this agent's defaults.
train_population = functools.partial(training.train_population, chunk=500, desc="SAC Pendulum")
report = plotting.report


def main(argv=None):
  parser = plotting.population_parser(
    "Train a vmapped population of SAC agents on gymnax Pendulum-v1, alpha tuned by"
    " entropy_jax, and print each member's final return.",
    steps=20_000,
    chunk=500,
  )
  args = parser.parse_args(argv)

  sac = SAC()
  targets, lrs = default_population(sac, args.members)
  training.train_and_report(train_population, sac, targets, lrs, args, RETURN_BAR)


if __name__ == "__main__":
  main()
