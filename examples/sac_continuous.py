"""Soft Actor-Critic on gymnax Pendulum-v1 with alpha tuned by entropy_jax, in one file.

Twin critics with Polyak-averaged targets, a tanh-squashed Gaussian actor (distrax), a flashbax
replay buffer, and `entropy_jax.continuous_update` fused into the one jitted update step (Haarnoja
et al. 2018, arXiv:1812.05905, algorithm 1). Environment steps and updates run in `lax.scan`; a
population is the same code under `jax.vmap`, each member with its own seed, target and alpha
learning rate. It reads top to bottom: config, networks, replay buffer, agent and update, scanned
training loop, vmapped population, evaluation, `main`. Run `python examples/sac_continuous.py --help`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import distrax
import flashbax
import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training.train_state import TrainState

import entropy_jax as ej

RETURN_BAR = -200.0  # the mean return over 10 episodes that counts as "swings up and holds"


# ------------------------------------------------------------------- config --


class Config(NamedTuple):
  """Hyperparameters of one agent (shared by all population members)."""

  env_name: str = "Pendulum-v1"
  hidden: tuple[int, ...] = (64, 64)
  num_envs: int = 1  # environments per member, stepped together
  batch_size: int = 128
  actor_lr: float = 1e-3
  critic_lr: float = 1e-3
  gamma: float = 0.99
  tau: float = 0.01
  buffer_size: int = 20_000
  learning_starts: int = 1_000  # env steps per member of uniform-random actions, no updates
  initial_alpha: float = 1.0
  max_alpha: float | None = None  # entropy_jax: an upper bound on alpha (None: unbounded)
  obs_dtype: str = "float32"  # how the buffer stores observations
  log_std_min: float = -5.0
  log_std_max: float = 2.0


# ----------------------------------------------------------------- networks --


class MLP(nn.Module):
  """`Dense -> relu` for each hidden size, then a linear `Dense(out)`."""

  hidden: Sequence[int]
  out: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for h in self.hidden:
      x = nn.relu(nn.Dense(h)(x))
    return nn.Dense(self.out)(x)


class Actor(nn.Module):
  """`obs [B, O] -> tanh(Normal(mean, std))` over `[B, action_dim]` in [-1, 1]."""

  hidden: Sequence[int]
  action_dim: int
  log_std_min: float = -5.0
  log_std_max: float = 2.0

  @nn.compact
  def __call__(self, obs: jax.Array) -> distrax.Distribution:
    mean, log_std = jnp.split(MLP(self.hidden, 2 * self.action_dim)(obs), 2, axis=-1)
    log_std = jnp.clip(log_std, self.log_std_min, self.log_std_max)
    base = distrax.MultivariateNormalDiag(mean, jnp.exp(log_std))
    return distrax.Transformed(base, distrax.Block(distrax.Tanh(), ndims=1))


class TwinCritic(nn.Module):
  """`(obs [B, O], action [B, D]) -> Q [2, B]`: two independent Q networks."""

  hidden: Sequence[int]

  @nn.compact
  def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
    x = jnp.concatenate([obs, action], axis=-1)
    return jnp.stack([MLP(self.hidden, 1)(x)[..., 0], MLP(self.hidden, 1)(x)[..., 0]])


# ------------------------------------------------------------ replay buffer --


class Transition(NamedTuple):
  """One environment transition, as stored in the flashbax buffer."""

  obs: jax.Array  # [obs_dim], stored as `cfg.obs_dtype`
  action: jax.Array  # [action_dim] float32, in [-1, 1]
  reward: jax.Array  # [] float32
  next_obs: jax.Array  # [obs_dim]: the true next observation, before any auto-reset
  terminated: jax.Array  # [] float32: 1.0 at a true terminal state (no bootstrap)


class EpisodeStats(struct.PyTreeNode):
  """The running returns of `E` environments and a ring of the last `K` finished episodes, carried by `lax.scan`."""

  current: jax.Array  # [E] float32
  recent: jax.Array  # [K] float32, shared by the E environments
  count: jax.Array  # [] int32, finished episodes

  def record(self, reward: jax.Array, done: jax.Array) -> EpisodeStats:
    """Adds the `[E]` rewards; files each finished episode's return into the ring, in env order."""
    ret, recent, count = self.current + reward, self.recent, self.count
    for e in range(reward.shape[0]):  # static and small
      recent = jnp.where(done[e], recent.at[count % recent.shape[0]].set(ret[e]), recent)
      count = count + done[e].astype(jnp.int32)
    return self.replace(current=jnp.where(done, 0.0, ret), recent=recent, count=count)

  def mean_recent(self) -> jax.Array:
    """Mean return over the last `K` finished episodes (NaN before the first)."""
    k = jnp.minimum(self.count, self.recent.shape[0])
    return jnp.where(k > 0, jnp.sum(self.recent * (jnp.arange(self.recent.shape[0]) < k)) / jnp.maximum(k, 1), jnp.nan)


# -------------------------------------------------------- agent and update --


class Agent(struct.PyTreeNode):
  """Everything one SAC learner carries through `lax.scan`."""

  actor: TrainState
  critic: TrainState
  target_critic: Any  # critic parameters, Polyak-averaged
  entropy: ej.EntropyState  # entropy_jax: log_alpha, its optimizer state, the target
  buffer: Any  # flashbax buffer state
  env_state: Any  # [E] stacked gymnax states
  obs: jax.Array  # [E, obs_dim]
  stats: EpisodeStats
  key: jax.Array
  steps: jax.Array  # [] int32 environment steps taken (all E environments)


class SAC:
  """A continuous-action SAC agent's functions: static things here, all state in `Agent`, so they vmap."""

  def __init__(self, cfg: Config | None = None):
    self.cfg = cfg = Config() if cfg is None else cfg
    self.env, self.env_params = gymnax.make(cfg.env_name)
    space = self.env.action_space(self.env_params)
    self.action_dim = int(np.prod(space.shape))
    self.action_scale = float(space.high) if np.ndim(space.high) == 0 else np.asarray(space.high)
    self.obs_dim = int(np.prod(self.env.observation_space(self.env_params).shape))
    self.actor = Actor(cfg.hidden, self.action_dim, cfg.log_std_min, cfg.log_std_max)
    self.critic = TwinCritic(cfg.hidden)
    self.buffer = flashbax.make_item_buffer(cfg.buffer_size, cfg.batch_size, cfg.batch_size)
    # Built once: they are static fields of `TrainState`, so every `init` makes the same tree structure.
    self.actor_tx, self.critic_tx = optax.adam(cfg.actor_lr), optax.adam(cfg.critic_lr)
    # entropy_jax: alpha's Adam, its learning rate injected so each member sets its own.
    self.alpha_tx = optax.inject_hyperparams(ej.adam)()
    self._init_members = jax.jit(jax.vmap(self.init))

  @property
  def default_target(self) -> float:
    """entropy_jax: `-action_dim` (Haarnoja et al. 2018)."""
    return ej.continuous_target(self.action_dim)

  def init(self, key: jax.Array, entropy: ej.EntropyState) -> Agent:
    """A fresh agent with the given entropy state (one member of a population)."""
    cfg, obs0, act0 = self.cfg, jnp.zeros((1, self.obs_dim)), jnp.zeros((1, self.action_dim))
    k_actor, k_critic, k_env, key = jax.random.split(key, 4)
    actor = TrainState.create(apply_fn=self.actor.apply, params=self.actor.init(k_actor, obs0), tx=self.actor_tx)
    critic_params = self.critic.init(k_critic, obs0, act0)
    critic = TrainState.create(apply_fn=self.critic.apply, params=critic_params, tx=self.critic_tx)
    obs, env_state = jax.vmap(self.env.reset, (0, None))(jax.random.split(k_env, cfg.num_envs), self.env_params)
    zero_obs = jnp.zeros(self.obs_dim, cfg.obs_dtype)
    dummy = Transition(zero_obs, jnp.zeros(self.action_dim), jnp.zeros(()), zero_obs, jnp.zeros(()))
    steps, obs = jnp.zeros((), jnp.int32), obs.reshape(cfg.num_envs, -1)
    stats = EpisodeStats(jnp.zeros(cfg.num_envs), jnp.zeros(10), steps)  # the last 10 returns
    return Agent(actor, critic, critic_params, entropy, self.buffer.init(dummy), env_state, obs, stats, key, steps)

  def init_population(self, key: jax.Array, targets: Sequence[float], alpha_lrs: Sequence[float]) -> Agent:
    """`N` agents with their own seeds, `[N]` target entropies and alpha learning rates."""
    # entropy_jax: one stacked EntropyState, a target and an alpha learning rate per member.
    cfg, targets, lrs = self.cfg, jnp.asarray(targets, jnp.float32), jnp.asarray(alpha_lrs, jnp.float32)
    entropy = ej.init_population(
      targets, initial_alpha=cfg.initial_alpha, max_alpha=cfg.max_alpha, optimizer=self.alpha_tx, learning_rate=lrs
    )
    return self._init_members(jax.random.split(key, len(targets)), entropy)

  def env_step(self, agent: Agent, random_action: bool) -> Agent:
    """One step of each of the member's `E` environments (policy or uniform actions), stored in the buffer."""
    n_envs, store = self.cfg.num_envs, self.cfg.obs_dtype
    key, k_act, k_env = jax.random.split(agent.key, 3)
    if random_action:
      action = jax.random.uniform(k_act, (n_envs, self.action_dim), minval=-1.0, maxval=1.0)
    else:
      action = self.actor.apply(agent.actor.params, agent.obs).sample(seed=k_act)
    obs, env_state, reward, terminated, truncated, info = jax.vmap(self.env.step, (0, 0, 0, None))(
      jax.random.split(k_env, n_envs), agent.env_state, action * self.action_scale, self.env_params
    )
    reward, final_obs = reward.astype(jnp.float32), info["final_observation"].reshape(n_envs, -1)
    done, terminated = terminated | truncated, terminated.astype(jnp.float32)
    transitions = Transition(agent.obs.astype(store), action, reward, final_obs.astype(store), terminated)
    buffer = agent.buffer
    for e in range(n_envs):  # one item per environment, in env order
      buffer = self.buffer.add(buffer, jax.tree.map(lambda x, e=e: x[e], transitions))
    stats, obs = agent.stats.record(reward, done), obs.reshape(n_envs, -1)
    return agent.replace(buffer=buffer, env_state=env_state, obs=obs, stats=stats, key=key, steps=agent.steps + n_envs)

  def update(self, agent: Agent, batch: Transition) -> tuple[Agent, dict[str, jax.Array]]:
    """One update on a `[B]` batch: critics, actor, then alpha, all with the alpha from before the step."""
    key, k_next, k_pi = jax.random.split(agent.key, 3)  # for a' ~ pi(.|s') and a ~ pi(.|s)
    alpha = agent.entropy.alpha  # entropy_jax: the temperature, exp(log_alpha)

    # Critics: soft Bellman target with the smaller target-Q (eq. 3 and 7).
    next_action, next_log_prob = self.actor.apply(agent.actor.params, batch.next_obs).sample_and_log_prob(seed=k_next)
    next_q = jnp.min(self.critic.apply(agent.target_critic, batch.next_obs, next_action), axis=0)
    next_v = next_q - alpha * next_log_prob
    y = jax.lax.stop_gradient(batch.reward + self.cfg.gamma * (1.0 - batch.terminated) * next_v)

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

    # entropy_jax: the temperature's loss, gradient and optax step in one call (eq. 18).
    entropy, ent_metrics = ej.continuous_update(agent.entropy, log_prob)

    target_critic = optax.incremental_update(critic.params, agent.target_critic, self.cfg.tau)
    agent = agent.replace(actor=actor, critic=critic, target_critic=target_critic, entropy=entropy, key=key)
    return agent, {"critic_loss": q_loss, "actor_loss": pi_loss, **ent_metrics}

  # ------------------------------------------------ the scanned training loop --

  def train_step(self, agent: Agent) -> tuple[Agent, dict]:
    """One policy step in each environment, then one update from the buffer."""
    agent = self.env_step(agent, random_action=False)
    key, k_sample = jax.random.split(agent.key)
    batch = self.buffer.sample(agent.buffer, k_sample).experience
    batch = batch._replace(obs=batch.obs.astype(jnp.float32), next_obs=batch.next_obs.astype(jnp.float32))
    return self.update(agent.replace(key=key), batch)

  def warmup(self, agent: Agent) -> Agent:
    """`cfg.learning_starts` env steps of uniform-random actions (no updates), in one scan."""
    n = self.cfg.learning_starts // self.cfg.num_envs
    return jax.lax.scan(lambda a, _: (self.env_step(a, random_action=True), None), agent, None, length=n)[0]

  def train_chunk(self, agent: Agent, length: int) -> tuple[Agent, dict]:
    """`length` env steps per member (`length // num_envs` train steps) in one scan, and their summary."""
    alpha_before = agent.entropy.alpha
    agent, metrics = jax.lax.scan(lambda a, _: self.train_step(a), agent, None, length=length // self.cfg.num_envs)
    return agent, summary(agent, metrics, alpha_before)


def summary(agent: Agent, metrics: dict | None = None, alpha_before: jax.Array | None = None) -> dict:
  """A chunk's scalars. `alpha_rises` / `alpha_falls` count its updates that raised / lowered alpha."""
  alpha, zero, nan = agent.entropy.alpha, jnp.zeros((), jnp.int32), jnp.full((), jnp.nan)
  out = {"return": agent.stats.mean_recent(), "steps": agent.steps, "alpha": alpha}
  out["alpha_lr"] = optax.tree_utils.tree_get(agent.entropy.opt_state, "learning_rate")
  out |= {"target": agent.entropy.target, "alpha_peak": alpha, "alpha_rises": zero, "alpha_falls": zero}
  out |= {"entropy": nan, "entropy_gap": nan}
  if metrics is not None:
    moves = jnp.diff(jnp.concatenate([alpha_before[None], metrics["alpha"]]))
    out |= {"alpha_rises": jnp.sum(moves > 0).astype(jnp.int32), "alpha_falls": jnp.sum(moves < 0).astype(jnp.int32)}
    out["alpha_peak"] = jnp.maximum(alpha_before, jnp.max(metrics["alpha"]))
    out["entropy"] = jnp.mean(metrics["entropy"])
    out["entropy_gap"] = jnp.mean(metrics["entropy"] - metrics["target"])  # the sign that drives alpha
  return out


# ------------------------------------------------------- vmapped population --


def default_population(sac: SAC, n: int) -> tuple[np.ndarray, np.ndarray]:
  """`[N]` targets from `-2 * action_dim` to `-0.5 * action_dim`; alpha learning rates log-uniform in [3e-4, 3e-3]."""
  t0 = sac.default_target
  return np.linspace(2.0 * t0, 0.5 * t0, n).astype(np.float32), np.geomspace(3e-4, 3e-3, n).astype(np.float32)


def train(
  sac: SAC,
  population: Agent,
  total_steps: int,
  *,
  chunk: int = 500,
  progress: bool = True,
  desc: str = "SAC Pendulum",
  chunk_hook: Callable[[Agent, jax.Array], Agent] | None = None,
) -> tuple[Agent, dict[str, np.ndarray]]:
  """Trains a stacked `[N]` population for `total_steps` env steps per member (warm-up included).

  Each chunk of `chunk` env steps is one jitted, vmapped `lax.scan`, followed in the same jit by
  `chunk_hook(population, i)` if given. Returns `(population, history)`, `history` of `[chunks + 1, N]` arrays.
  """
  from tqdm.auto import tqdm

  n_train = total_steps - sac.cfg.learning_starts
  if n_train < 0 or n_train % chunk or chunk % sac.cfg.num_envs:
    raise ValueError(
      f"train: total_steps - learning_starts = {n_train} must be a non-negative multiple of chunk={chunk},"
      f" itself a multiple of num_envs={sac.cfg.num_envs}."
    )
  population = jax.jit(jax.vmap(sac.warmup))(population)
  rows = [jax.vmap(summary)(population)]

  @jax.jit
  def chunk_fn(pop, i):
    pop, row = jax.vmap(lambda a: sac.train_chunk(a, chunk))(pop)
    return (pop if chunk_hook is None else chunk_hook(pop, i)), row

  n = rows[0]["alpha"].shape[0]
  bar = tqdm(total=n_train * n, desc=desc, unit="step", unit_scale=True, disable=not progress, dynamic_ncols=True)
  for i in range(n_train // chunk):
    population, row = chunk_fn(population, jnp.int32(i))
    rows.append(jax.device_get(row))
    bar.update(chunk * n)
    if np.any(np.isfinite(rows[-1]["return"])):
      bar.set_postfix(mean_return=f"{np.nanmean(rows[-1]['return']):.1f}")
  bar.close()
  return population, {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}


# --------------------------------------------------------------- evaluation --


def evaluate(sac: SAC, agent: Agent, key: jax.Array, episodes: int = 10) -> jax.Array:
  """`[episodes]` returns of the deterministic policy `tanh(mean)` from fresh resets, episodes run in parallel."""
  env, params = sac.env, sac.env_params

  def episode(k):
    k_reset, k_run = jax.random.split(k)
    obs, env_state = env.reset(k_reset, params)

    def body(carry, k_t):
      obs, env_state, total, alive = carry
      action = jnp.tanh(sac.actor.apply(agent.actor.params, obs[None]).distribution.mean())[0] * sac.action_scale
      obs, env_state, reward, terminated, truncated, _ = env.step(jax.random.split(k_t)[1], env_state, action, params)
      return (obs, env_state, total + alive * reward, alive * (1.0 - (terminated | truncated))), None  # stop at the end

    init = (obs, env_state, jnp.zeros(()), jnp.ones(()))
    return jax.lax.scan(body, init, jax.random.split(k_run, params.max_steps_in_episode))[0][2]

  return jax.vmap(episode)(jax.random.split(key, episodes))


# --------------------------------------------------------------------- main --


def main(argv: Sequence[str] | None = None) -> tuple[Agent, dict[str, np.ndarray]]:
  parser = argparse.ArgumentParser(
    description="Train a vmapped population of SAC agents on gymnax Pendulum-v1, alpha tuned by entropy_jax,"
    " and print each member's final return."
  )
  parser.add_argument("--members", type=int, default=8, help="population size (default 8)")
  parser.add_argument("--steps", type=int, default=20_000, help="environment steps per member (default 20000)")
  parser.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
  parser.add_argument("--chunk", type=int, default=500, help="env steps per jitted scan (default 500)")
  parser.add_argument("--out", default=None, help="optional .npz file for the training history")
  args = parser.parse_args(argv)

  sac = SAC()
  targets, lrs = default_population(sac, args.members)
  population = sac.init_population(jax.random.key(args.seed), targets, lrs)
  population, history = train(sac, population, args.steps, chunk=args.chunk)
  print("member  return(last10)     alpha  entropy  target")
  for i, row in enumerate(zip(*(history[k][-1] for k in ("return", "alpha", "entropy", "target")))):
    print(f"{i:6d}  {row[0]:14.1f}  {row[1]:8.3g}  {row[2]:7.3f}  {row[3]:6.3f}")
  at_bar = int(np.sum(history["return"][-1] >= RETURN_BAR))
  print(f"{at_bar}/{args.members} members at mean return >= {RETURN_BAR:.0f} after {args.steps} steps")
  keys = jax.random.split(jax.random.key(args.seed + 1), args.members)
  policy = np.asarray(jax.jit(jax.vmap(lambda a, k: evaluate(sac, a, k)))(population, keys)).mean(axis=1)
  print(f"deterministic policy tanh(mean), mean of 10 episodes per member: {np.round(policy, 1)}")
  if args.out:
    np.savez(args.out, **history)
  return population, history


if __name__ == "__main__":
  main()
