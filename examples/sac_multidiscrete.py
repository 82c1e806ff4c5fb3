"""MultiDiscrete SAC on gymnax Reacher-misc (or Swimmer-misc) with a temperature per branch, in one file.

Each action dimension of the task's `Box([-1, 1]^K)` is discretized into `bins` evenly spaced values, so the
policy is `MultiDiscrete([bins] * K)`: `K` independent categorical branches (or `MultiDiscrete(bins)` for a tuple
`bins`, a count per dimension, padded to the largest and masked with `ej.branch_mask`). The critic is a branching one
(Tavakoli et al. 2018, "Action Branching Architectures", arXiv:1711.08946): one head per branch, and
`Q(s, a) = sum_k Q_k(s, a_k)`, so the soft value and the actor loss take each branch's exact expectation over its
bins, as discrete SAC does for one branch (Christodoulou 2019, arXiv:1910.07207). The temperatures come from
`entropy_jax`'s structured API: one per branch with target `0.6 log(bins)` each (the default), or one shared
temperature with the summed target; `ej.structured_update` updates them in the jitted update step. Twin critics
with Polyak-averaged targets, a distrax policy, a flashbax buffer; steps and updates run in `lax.scan`, and a
population is the same code under `jax.vmap`. Run `python examples/sac_multidiscrete.py --help`.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
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

# ------------------------------------------------------------------- config --


class Config(NamedTuple):
  """Hyperparameters of one agent (shared by all population members)."""

  env_name: str = "Reacher-misc"
  bins: int | tuple[int, ...] = 11  # discrete values per action dimension (or one count each), spaced in [-1, 1]
  hidden: tuple[int, ...] = (64, 64)
  num_envs: int = 4  # environments per member, stepped together
  batch_size: int = 128
  actor_lr: float = 1e-3
  critic_lr: float = 1e-3
  alpha_lr: float = 1e-3
  gamma: float = 0.99
  tau: float = 0.01
  buffer_size: int = 50_000
  learning_starts: int = 2_000  # env steps per member of uniform-random actions, no updates
  initial_alpha: float = 0.05
  shared: bool = False  # entropy_jax: one temperature for the whole action (summed target) instead of one per branch


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
  """`obs [B, O] -> Categorical` with batch shape `[B, K]` over `N` bins: one distribution per branch.

  `mask [K, N]` marks each branch's real bins; the others get logit -inf (probability 0).
  """

  hidden: Sequence[int]
  mask: np.ndarray

  @nn.compact
  def __call__(self, obs: jax.Array) -> distrax.Categorical:
    logits = MLP(self.hidden, self.mask.size)(obs).reshape(*obs.shape[:-1], *self.mask.shape)
    return distrax.Categorical(logits=jnp.where(self.mask, logits, -jnp.inf))


class TwinBranchingCritic(nn.Module):
  """`obs [B, O] -> Q [2, B, K, N]`: two critics, each a value per branch and bin (`Q = sum_k Q_k(s, a_k)`)."""

  hidden: Sequence[int]
  branches: int
  bins: int

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    shape = (*obs.shape[:-1], self.branches, self.bins)
    return jnp.stack([MLP(self.hidden, self.branches * self.bins)(obs).reshape(shape) for _ in range(2)])


# ------------------------------------------------------------ replay buffer --


class Transition(NamedTuple):
  """One environment transition, as stored in the flashbax buffer."""

  obs: jax.Array  # [obs_dim]
  action: jax.Array  # [K] int32, the bin of each branch
  reward: jax.Array  # [] float32
  next_obs: jax.Array  # [obs_dim]: the true next observation, before any auto-reset
  terminated: jax.Array  # [] float32: 1.0 at a true terminal state (no bootstrap)


class EpisodeStats(struct.PyTreeNode):
  """The running returns of `E` environments and a ring of the last `R` finished episodes, carried by `lax.scan`."""

  current: jax.Array  # [E] float32
  recent: jax.Array  # [R] float32, shared by the E environments
  count: jax.Array  # [] int32, finished episodes

  def record(self, reward: jax.Array, done: jax.Array) -> EpisodeStats:
    """Adds the `[E]` rewards; files each finished episode's return into the ring, in env order."""
    ret, recent, count = self.current + reward, self.recent, self.count
    for e in range(reward.shape[0]):  # static and small
      recent = jnp.where(done[e], recent.at[count % recent.shape[0]].set(ret[e]), recent)
      count = count + done[e].astype(jnp.int32)
    return self.replace(current=jnp.where(done, 0.0, ret), recent=recent, count=count)

  def mean_recent(self) -> jax.Array:
    """Mean return over the last `R` finished episodes (NaN before the first)."""
    k = jnp.minimum(self.count, self.recent.shape[0])
    return jnp.where(k > 0, jnp.sum(self.recent * (jnp.arange(self.recent.shape[0]) < k)) / jnp.maximum(k, 1), jnp.nan)


# -------------------------------------------------------- agent and update --


class Agent(struct.PyTreeNode):
  """Everything one MultiDiscrete SAC learner carries through `lax.scan`."""

  actor: TrainState
  critic: TrainState
  target_critic: Any  # critic parameters, Polyak-averaged
  entropy: ej.EntropyState  # entropy_jax: a temperature per branch (a leading [K] axis), or one shared
  buffer: Any  # flashbax buffer state
  env_state: Any  # [E] stacked gymnax states
  obs: jax.Array  # [E, obs_dim]
  stats: EpisodeStats
  key: jax.Array
  steps: jax.Array  # [] int32 environment steps taken (all E environments)


class SAC:
  """A MultiDiscrete SAC agent's functions: static things here, all state in `Agent`, so they vmap."""

  def __init__(self, cfg: Config | None = None):
    self.cfg = cfg = Config() if cfg is None else cfg
    self.env, self.env_params = gymnax.make(cfg.env_name)
    space = self.env.action_space(self.env_params)
    self.branches = k = int(np.prod(space.shape))
    self.low, self.high = np.broadcast_to(space.low, space.shape), np.broadcast_to(space.high, space.shape)
    self.obs_dim = int(np.prod(self.env.observation_space(self.env_params).shape))
    # entropy_jax: the policy's structure, K categorical branches of `nvec[k]` choices each, and their [K, N] mask.
    self.structure = ej.MultiCategorical((cfg.bins,) * k if isinstance(cfg.bins, int) else cfg.bins)
    self.nvec, self.mask = np.asarray(self.structure.nvec), np.asarray(ej.branch_mask(self.structure))
    self.actor = Actor(cfg.hidden, self.mask)
    self.critic = TwinBranchingCritic(cfg.hidden, k, self.mask.shape[1])
    self.buffer = flashbax.make_item_buffer(cfg.buffer_size, cfg.batch_size, cfg.batch_size)
    self.actor_tx = optax.adam(cfg.actor_lr)
    self.critic_tx = optax.adam(cfg.critic_lr)
    self.alpha_tx = ej.adam(cfg.alpha_lr)  # entropy_jax: alpha's optimizer (Adam in log space)

  def init_entropy(self, ratio: float = ej.DISCRETE_TARGET_RATIO) -> ej.EntropyState:
    """entropy_jax: a temperature per branch with target `ratio * log(bins)`, or one with the summed target."""
    cfg = self.cfg
    return ej.init_structured_state(
      self.structure, shared=cfg.shared, ratio=ratio, initial_alpha=cfg.initial_alpha, optimizer=self.alpha_tx
    )

  def bins_to_action(self, bins: jax.Array) -> jax.Array:
    """`[..., K]` bin indices to the environment's `[..., K]` continuous actions, evenly spaced in `[low, high]`."""
    return self.low + (self.high - self.low) * bins / (self.nvec - 1)

  def log_pi(self, pi: distrax.Categorical) -> jax.Array:
    """`[B, K, N]` log-probabilities, 0 at padded bins (probability 0), so that `p log p` is 0 there, not NaN."""
    return jnp.where(self.mask, pi.logits, 0.0)

  def init(self, key: jax.Array, entropy: ej.EntropyState) -> Agent:
    """A fresh agent with the given structured entropy state (one member of a population)."""
    cfg, obs0 = self.cfg, jnp.zeros((1, self.obs_dim))
    k_actor, k_critic, k_env, key = jax.random.split(key, 4)
    actor = TrainState.create(apply_fn=self.actor.apply, params=self.actor.init(k_actor, obs0), tx=self.actor_tx)
    critic_params = self.critic.init(k_critic, obs0)
    critic = TrainState.create(apply_fn=self.critic.apply, params=critic_params, tx=self.critic_tx)
    obs, env_state = jax.vmap(self.env.reset, (0, None))(jax.random.split(k_env, cfg.num_envs), self.env_params)
    zero_obs = jnp.zeros(self.obs_dim)
    dummy = Transition(zero_obs, jnp.zeros(self.branches, jnp.int32), jnp.zeros(()), zero_obs, jnp.zeros(()))
    steps = jnp.zeros((), jnp.int32)
    stats = EpisodeStats(jnp.zeros(cfg.num_envs), jnp.zeros(10), steps)  # the last 10 returns
    return Agent(actor, critic, critic_params, entropy, self.buffer.init(dummy), env_state, obs, stats, key, steps)

  def env_step(self, agent: Agent, random_action: bool) -> Agent:
    """One step of each of the member's `E` environments (policy or uniform bins), stored in the buffer."""
    n_envs = self.cfg.num_envs
    key, k_act, k_env = jax.random.split(agent.key, 3)
    if random_action:
      bins = jax.random.randint(k_act, (n_envs, self.branches), 0, self.nvec)
    else:
      bins = self.actor.apply(agent.actor.params, agent.obs).sample(seed=k_act).astype(jnp.int32)
    obs, env_state, reward, terminated, truncated, info = jax.vmap(self.env.step, (0, 0, 0, None))(
      jax.random.split(k_env, n_envs), agent.env_state, self.bins_to_action(bins), self.env_params
    )
    reward, done = reward.astype(jnp.float32), terminated | truncated
    transitions = Transition(agent.obs, bins, reward, info["final_observation"], terminated.astype(jnp.float32))
    buffer = agent.buffer
    for e in range(n_envs):  # one item per environment, in env order
      buffer = self.buffer.add(buffer, jax.tree.map(lambda x, e=e: x[e], transitions))
    stats = agent.stats.record(reward, done)
    return agent.replace(buffer=buffer, env_state=env_state, obs=obs, stats=stats, key=key, steps=agent.steps + n_envs)

  def update(self, agent: Agent, batch: Transition) -> tuple[Agent, dict[str, jax.Array]]:
    """One update on a `[B]` batch: critics, actor, then the temperatures, all with the alphas from before the step.

    With `Q_i(s, a) = sum_k Q_ik(s, a_k)`, `pi(a|s) = prod_k pi_k(a_k|s)` and a temperature `alpha_k` per branch:
    V(s')  = sum_k sum_n pi_k(n|s') [min_i Q'_ik(s', n) - alpha_k log pi_k(n|s')]
    J_Q    = 1/2 sum_i mean_b (Q_i(s_b, a_b) - r_b - gamma (1 - d_b) V(s'_b))^2
    J_pi   = mean_b sum_k sum_n pi_k(n|s_b) [alpha_k log pi_k(n|s_b) - min_i Q_ik(s_b, n)]
    """
    shared = self.cfg.shared
    alpha = ej.branch_alphas(self.structure, agent.entropy, shared=shared)[:, None]  # entropy_jax: [K] -> [K, 1]

    next_pi = self.actor.apply(agent.actor.params, batch.next_obs)
    next_q = jnp.min(self.critic.apply(agent.target_critic, batch.next_obs), axis=0)  # [B, K, N]
    next_v = jnp.sum(next_pi.probs * (next_q - alpha * self.log_pi(next_pi)), axis=(-2, -1))
    y = jax.lax.stop_gradient(batch.reward + self.cfg.gamma * (1.0 - batch.terminated) * next_v)

    def critic_loss(params):
      q = self.critic.apply(params, batch.obs)  # [2, B, K, N]
      q_a = jnp.sum(jnp.take_along_axis(q, batch.action[None, :, :, None], axis=-1)[..., 0], axis=-1)  # [2, B]
      return 0.5 * jnp.sum(jnp.mean((q_a - y) ** 2, axis=-1))

    q_loss, q_grads = jax.value_and_grad(critic_loss)(agent.critic.params)
    critic = agent.critic.apply_gradients(grads=q_grads)
    q_min = jnp.min(self.critic.apply(critic.params, batch.obs), axis=0)  # [B, K, N]

    def actor_loss(params):
      pi = self.actor.apply(params, batch.obs)  # distrax normalises: `pi.logits` are log-probabilities
      loss = jnp.mean(jnp.sum(pi.probs * (alpha * self.log_pi(pi) - q_min), axis=(-2, -1)))
      return loss, (pi.probs, pi.logits)

    (pi_loss, (probs, log_probs)), pi_grads = jax.value_and_grad(actor_loss, has_aux=True)(agent.actor.params)
    actor = agent.actor.apply_gradients(grads=pi_grads)

    # entropy_jax: every branch's temperature loss (exact over its bins), gradient and optax step in one call.
    entropy, ent = ej.structured_update(self.structure, agent.entropy, (probs, log_probs), shared=shared)
    target_critic = optax.incremental_update(critic.params, agent.target_critic, self.cfg.tau)
    agent = agent.replace(actor=actor, critic=critic, target_critic=target_critic, entropy=entropy)
    metrics = {"critic_loss": q_loss, "actor_loss": pi_loss, "alpha_loss": jnp.sum(ent["loss"])}
    # Each branch's entropy `[K]`: per branch, the update's own; shared, the parts of the joint entropy.
    return agent, metrics | {"branch_entropy": ent["branch_entropy"] if shared else ent["entropy"]}

  # ------------------------------------------------ the scanned training loop --

  def train_step(self, agent: Agent) -> tuple[Agent, dict]:
    """One policy step in each environment, then one update from the buffer."""
    agent = self.env_step(agent, random_action=False)
    key, k_sample = jax.random.split(agent.key)
    batch = self.buffer.sample(agent.buffer, k_sample).experience
    return self.update(agent.replace(key=key), batch)

  def warmup(self, agent: Agent) -> Agent:
    """`cfg.learning_starts` env steps of uniform-random bins (no updates), in one scan."""
    n = self.cfg.learning_starts // self.cfg.num_envs
    return jax.lax.scan(lambda a, _: (self.env_step(a, random_action=True), None), agent, None, length=n)[0]

  def train_chunk(self, agent: Agent, length: int) -> tuple[Agent, dict]:
    """`length` env steps per member (`length // num_envs` train steps) in one scan, and their summary."""
    agent, metrics = jax.lax.scan(lambda a, _: self.train_step(a), agent, None, length=length // self.cfg.num_envs)
    return agent, self.summary(agent, metrics)

  def summary(self, agent: Agent, metrics: dict | None = None) -> dict:
    """A chunk's scalars: the return, steps, each branch's alpha `[K]` and mean entropy `[K]`, the summed target."""
    alpha = ej.branch_alphas(self.structure, agent.entropy, shared=self.cfg.shared)  # entropy_jax: [K]
    out = {"return": agent.stats.mean_recent(), "steps": agent.steps, "alpha": alpha}
    out["target"] = jnp.sum(agent.entropy.target)  # the summed target, in both designs
    out["entropy"] = jnp.full(self.branches, jnp.nan)
    if metrics is not None:
      out["entropy"] = jnp.mean(metrics["branch_entropy"], axis=0)
    return out


# ------------------------------------------------------- vmapped population --


def train(
  sac: SAC, population: Agent, total_steps: int, *, chunk: int = 2_000, progress: bool = True, desc: str = "SAC"
) -> tuple[Agent, dict[str, np.ndarray]]:
  """Trains a stacked `[M]` population for `total_steps` env steps per member (warm-up included).

  Each chunk of `chunk` env steps is one jitted, vmapped `lax.scan`. Returns `(population, history)`: `history`
  maps `return`, `steps` and `target` to `[chunks + 1, M]` arrays, `alpha` and `entropy` to `[chunks + 1, M, K]`.
  """
  from tqdm.auto import tqdm

  n_train = total_steps - sac.cfg.learning_starts
  if n_train < 0 or n_train % chunk or chunk % sac.cfg.num_envs:
    raise ValueError(
      f"train: total_steps - learning_starts = {n_train} must be a non-negative multiple of chunk={chunk},"
      f" itself a multiple of num_envs={sac.cfg.num_envs}."
    )
  population = jax.jit(jax.vmap(sac.warmup))(population)
  rows = [jax.device_get(jax.vmap(sac.summary)(population))]
  chunk_fn = jax.jit(jax.vmap(lambda a: sac.train_chunk(a, chunk)))
  n = rows[0]["return"].shape[0]
  bar = tqdm(total=n_train * n, desc=desc, unit="step", unit_scale=True, disable=not progress, dynamic_ncols=True)
  for _ in range(n_train // chunk):
    population, row = chunk_fn(population)
    rows.append(jax.device_get(row))
    bar.update(chunk * n)
    if np.any(np.isfinite(rows[-1]["return"])):
      bar.set_postfix(mean_return=f"{np.nanmean(rows[-1]['return']):.1f}")
  bar.close()
  return population, {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}


# --------------------------------------------------------------- evaluation --


def evaluate(sac: SAC, agent: Agent, key: jax.Array, episodes: int = 10) -> jax.Array:
  """`[episodes]` returns of the greedy policy (each branch's most probable bin) from fresh resets, in parallel."""
  env, params = sac.env, sac.env_params

  def episode(k):
    k_reset, k_run = jax.random.split(k)
    obs, env_state = env.reset(k_reset, params)

    def body(carry, k_t):
      obs, env_state, total, alive = carry
      action = sac.bins_to_action(sac.actor.apply(agent.actor.params, obs).mode())
      obs, env_state, reward, terminated, truncated, _ = env.step(k_t, env_state, action, params)
      return (obs, env_state, total + alive * reward, alive * (1.0 - (terminated | truncated))), None

    init = (obs, env_state, jnp.zeros(()), jnp.ones(()))
    return jax.lax.scan(body, init, jax.random.split(k_run, params.max_steps_in_episode))[0][2]

  return jax.vmap(episode)(jax.random.split(key, episodes))


# --------------------------------------------------------------------- main --


def main(argv: Sequence[str] | None = None) -> tuple[Agent, dict[str, np.ndarray]]:
  parser = argparse.ArgumentParser(
    description="Train a vmapped population of MultiDiscrete SAC agents on a gymnax task with each action dimension"
    " discretized into bins, a temperature per branch tuned by entropy_jax, and print each member's final return."
  )
  parser.add_argument("--members", type=int, default=4, help="population size (seeds; default 4)")
  parser.add_argument("--steps", type=int, default=80_000, help="environment steps per member (default 80000)")
  parser.add_argument("--env", default="Reacher-misc", help="gymnax task with Box actions (default Reacher-misc)")
  parser.add_argument("--bins", type=int, default=11, help="bins per action dimension (default 11)")
  parser.add_argument("--ratio", type=float, default=ej.DISCRETE_TARGET_RATIO, help="per-branch target ratio")
  parser.add_argument("--shared", action="store_true", help="one temperature for the whole action, summed target")
  parser.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
  parser.add_argument("--chunk", type=int, default=2_000, help="env steps per jitted scan (default 2000)")
  parser.add_argument("--out", default=None, help="optional .npz file for the training history")
  args = parser.parse_args(argv)

  sac = SAC(Config(env_name=args.env, bins=args.bins, shared=args.shared))
  entropy = sac.init_entropy(ratio=args.ratio)  # entropy_jax: one tree, copied per member
  entropy = jax.tree.map(lambda x: jnp.stack([x] * args.members), entropy)
  population = jax.jit(jax.vmap(sac.init))(jax.random.split(jax.random.key(args.seed), args.members), entropy)
  population, history = train(sac, population, args.steps, chunk=args.chunk, desc=f"MultiDiscrete SAC {args.env}")
  print("member  return(last10)  alpha per branch          entropy per branch")
  for i in range(args.members):
    alpha, ent = history["alpha"][-1, i], history["entropy"][-1, i]
    print(f"{i:6d}  {history['return'][-1, i]:14.2f}  {np.array2string(alpha, precision=3):24s}  {np.round(ent, 3)}")
  keys = jax.random.split(jax.random.key(args.seed + 1), args.members)
  policy = np.asarray(jax.jit(jax.vmap(lambda a, k: evaluate(sac, a, k)))(population, keys)).mean(axis=1)
  print(f"greedy policy, mean of 10 episodes per member: {np.round(policy, 2)}")
  if args.out:
    np.savez(args.out, **history)
  return population, history


if __name__ == "__main__":
  main()
