"""Hybrid-action SAC on gymnax Pendulum-v1: a continuous torque beside a discrete gear, a temperature per part.

The action is a tuple: a continuous command `u` in [-1, 1] (a tanh-squashed Gaussian) and a discrete gear `g`
(a categorical over `GEARS`); the pendulum receives the torque `max_torque * GEARS[g] * u`. A swing-up needs the
high gear; the low gear gives finer control near the top. The critic takes `(s, u)` and outputs a value per gear,
so the expectation over the gear is exact and only the torque is sampled (hybrid SAC, Delalleau et al. 2019,
arXiv:1912.11077, with the discrete part of Christodoulou 2019, arXiv:1910.07207). The temperatures come from
`entropy_jax`'s structured API with the structure `(Continuous(1), Categorical(len(GEARS)))`: one per part with
targets `-1` and `0.6 log(len(GEARS))` (the defaults), or one shared with the summed target. Twin critics with
Polyak-averaged targets, a flashbax buffer; steps and updates run in `lax.scan`, and a population is the same code
under `jax.vmap`. Run `python examples/sac_hybrid.py --help`.
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

GEARS = (0.25, 1.0)  # torque scales the discrete part chooses between
RETURN_BAR = -200.0  # the mean return over 10 episodes that counts as "swings up and holds"

# ------------------------------------------------------------------- config --


class Config(NamedTuple):
  """Hyperparameters of one agent (shared by all population members)."""

  hidden: tuple[int, ...] = (64, 64)
  batch_size: int = 128
  actor_lr: float = 1e-3
  critic_lr: float = 1e-3
  alpha_lr: float = 1e-3
  gamma: float = 0.99
  tau: float = 0.01
  buffer_size: int = 20_000
  learning_starts: int = 1_000  # env steps per member of uniform-random actions, no updates
  initial_alpha: float = 0.5
  shared: bool = False  # entropy_jax: one temperature for the whole action (summed target) instead of one per part


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
  """`obs [B, O] -> (tanh(Normal) over [B, 1] in [-1, 1], Categorical over [B] gears)`, one torso."""

  hidden: Sequence[int]
  gears: int

  @nn.compact
  def __call__(self, obs: jax.Array) -> tuple[distrax.Distribution, distrax.Categorical]:
    mean, log_std, logits = jnp.split(MLP(self.hidden, 2 + self.gears)(obs), [1, 2], axis=-1)
    base = distrax.MultivariateNormalDiag(mean, jnp.exp(jnp.clip(log_std, -5.0, 2.0)))
    return distrax.Transformed(base, distrax.Block(distrax.Tanh(), ndims=1)), distrax.Categorical(logits=logits)


class TwinCritic(nn.Module):
  """`(obs [B, O], u [B, 1]) -> Q [2, B, G]`: two critics, a value per gear."""

  hidden: Sequence[int]
  gears: int

  @nn.compact
  def __call__(self, obs: jax.Array, u: jax.Array) -> jax.Array:
    x = jnp.concatenate([obs, u], axis=-1)
    return jnp.stack([MLP(self.hidden, self.gears)(x) for _ in range(2)])


# ------------------------------------------------------------ replay buffer --


class Transition(NamedTuple):
  """One environment transition, as stored in the flashbax buffer."""

  obs: jax.Array  # [obs_dim]
  u: jax.Array  # [1] float32 in [-1, 1], the continuous part
  gear: jax.Array  # [] int32, the discrete part
  reward: jax.Array  # [] float32
  next_obs: jax.Array  # [obs_dim]: the true next observation, before any auto-reset
  terminated: jax.Array  # [] float32: 1.0 at a true terminal state (no bootstrap)


class EpisodeStats(struct.PyTreeNode):
  """The running episode's return and a ring of the last `R` finished ones, carried through `lax.scan`."""

  current: jax.Array  # [] float32
  recent: jax.Array  # [R] float32
  count: jax.Array  # [] int32, finished episodes

  def record(self, reward: jax.Array, done: jax.Array) -> EpisodeStats:
    """Adds `reward`; when `done`, files the finished episode's return."""
    ret = self.current + reward
    recent = jnp.where(done, self.recent.at[self.count % self.recent.shape[0]].set(ret), self.recent)
    return self.replace(current=jnp.where(done, 0.0, ret), recent=recent, count=self.count + done.astype(jnp.int32))

  def mean_recent(self) -> jax.Array:
    """Mean return over the last `R` finished episodes (NaN before the first)."""
    k = jnp.minimum(self.count, self.recent.shape[0])
    return jnp.where(k > 0, jnp.sum(self.recent * (jnp.arange(self.recent.shape[0]) < k)) / jnp.maximum(k, 1), jnp.nan)


# -------------------------------------------------------- agent and update --


class Agent(struct.PyTreeNode):
  """Everything one hybrid SAC learner carries through `lax.scan`."""

  actor: TrainState
  critic: TrainState
  target_critic: Any  # critic parameters, Polyak-averaged
  entropy: Any  # entropy_jax: a tuple of two EntropyStates (torque, gear), or one shared EntropyState
  buffer: Any  # flashbax buffer state
  env_state: Any
  obs: jax.Array  # [obs_dim]
  stats: EpisodeStats
  key: jax.Array
  steps: jax.Array  # [] int32 environment steps taken


class SAC:
  """A hybrid-action SAC agent's functions: static things here, all state in `Agent`, so they vmap."""

  def __init__(self, cfg: Config | None = None):
    self.cfg = cfg = Config() if cfg is None else cfg
    self.env, self.env_params = gymnax.make("Pendulum-v1")
    self.max_torque = float(self.env_params.max_torque)
    self.obs_dim = int(np.prod(self.env.observation_space(self.env_params).shape))
    self.gears = jnp.asarray(GEARS)
    # entropy_jax: the action's structure, a continuous torque command beside a categorical gear.
    self.structure = (ej.Continuous(1), ej.Categorical(len(GEARS)))
    self.actor = Actor(cfg.hidden, len(GEARS))
    self.critic = TwinCritic(cfg.hidden, len(GEARS))
    self.buffer = flashbax.make_item_buffer(cfg.buffer_size, cfg.batch_size, cfg.batch_size)
    self.actor_tx = optax.adam(cfg.actor_lr)
    self.critic_tx = optax.adam(cfg.critic_lr)
    self.alpha_tx = ej.adam(cfg.alpha_lr)  # entropy_jax: alpha's optimizer (Adam in log space)

  def init_entropy(self) -> Any:
    """entropy_jax: a temperature per part with targets `-1` and `0.6 log(gears)`, or one with their sum."""
    cfg = self.cfg
    return ej.init_structured_state(
      self.structure, shared=cfg.shared, initial_alpha=cfg.initial_alpha, optimizer=self.alpha_tx
    )

  def init(self, key: jax.Array, entropy: Any) -> Agent:
    """A fresh agent with the given structured entropy state (one member of a population)."""
    k_actor, k_critic, k_env, key = jax.random.split(key, 4)
    obs0, u0 = jnp.zeros((1, self.obs_dim)), jnp.zeros((1, 1))
    actor = TrainState.create(apply_fn=self.actor.apply, params=self.actor.init(k_actor, obs0), tx=self.actor_tx)
    critic_params = self.critic.init(k_critic, obs0, u0)
    critic = TrainState.create(apply_fn=self.critic.apply, params=critic_params, tx=self.critic_tx)
    obs, env_state = self.env.reset(k_env, self.env_params)
    zero_obs, zero = jnp.zeros(self.obs_dim), jnp.zeros(())
    dummy = Transition(zero_obs, jnp.zeros(1), jnp.zeros((), jnp.int32), zero, zero_obs, zero)
    steps = jnp.zeros((), jnp.int32)
    stats = EpisodeStats(zero, jnp.zeros(10), steps)  # the last 10 returns
    return Agent(actor, critic, critic_params, entropy, self.buffer.init(dummy), env_state, obs, stats, key, steps)

  def torque(self, u: jax.Array, gear: jax.Array) -> jax.Array:
    """The pendulum's `[..., 1]` torque from the command `u [..., 1]` and the gear index `[...]`."""
    return self.max_torque * self.gears[gear][..., None] * u

  def env_step(self, agent: Agent, random_action: bool) -> Agent:
    """One environment step (policy or uniform action), stored in the buffer."""
    key, k_u, k_gear, k_env = jax.random.split(agent.key, 4)
    if random_action:
      u = jax.random.uniform(k_u, (1,), minval=-1.0, maxval=1.0)
      gear = jax.random.randint(k_gear, (), 0, len(GEARS))
    else:
      pi_u, pi_gear = self.actor.apply(agent.actor.params, agent.obs[None])
      u, gear = pi_u.sample(seed=k_u)[0], pi_gear.sample(seed=k_gear)[0].astype(jnp.int32)
    obs, env_state, reward, terminated, truncated, info = self.env.step(
      k_env, agent.env_state, self.torque(u, gear), self.env_params
    )
    reward = reward.astype(jnp.float32)
    transition = Transition(agent.obs, u, gear, reward, info["final_observation"], terminated.astype(jnp.float32))
    buffer, stats = self.buffer.add(agent.buffer, transition), agent.stats.record(reward, terminated | truncated)
    return agent.replace(buffer=buffer, env_state=env_state, obs=obs, stats=stats, key=key, steps=agent.steps + 1)

  def update(self, agent: Agent, batch: Transition, key: jax.Array) -> tuple[Agent, dict[str, jax.Array]]:
    """One update on a `[B]` batch: critics, actor, then the temperatures, all with the alphas from before the step.

    With `u ~ pi_u(.|s)` sampled and the gear's expectation exact, and `alpha_u`, `alpha_g` the parts' alphas:
    V(s')  = sum_g pi_g(g|s') [min_i Q'_i(s', u', g) - alpha_g log pi_g(g|s')] - alpha_u log pi_u(u'|s')
    J_Q    = 1/2 sum_i mean_b (Q_i(s_b, u_b, g_b) - r_b - gamma (1 - d_b) V(s'_b))^2
    J_pi   = mean_b [alpha_u log pi_u(u|s_b) + sum_g pi_g(g|s_b) (alpha_g log pi_g(g|s_b) - min_i Q_i(s_b, u, g))]
    """
    k_next, k_pi = jax.random.split(key)
    shared = self.cfg.shared
    alpha_u, alpha_g = ej.branch_alphas(self.structure, agent.entropy, shared=shared)  # entropy_jax: one per part

    next_pi_u, next_pi_g = self.actor.apply(agent.actor.params, batch.next_obs)
    next_u, next_log_u = next_pi_u.sample_and_log_prob(seed=k_next)
    next_q = jnp.min(self.critic.apply(agent.target_critic, batch.next_obs, next_u), axis=0)  # [B, G]
    next_v = jnp.sum(next_pi_g.probs * (next_q - alpha_g * next_pi_g.logits), axis=-1) - alpha_u * next_log_u
    y = jax.lax.stop_gradient(batch.reward + self.cfg.gamma * (1.0 - batch.terminated) * next_v)

    def critic_loss(params):
      q = self.critic.apply(params, batch.obs, batch.u)  # [2, B, G]
      q_a = jnp.take_along_axis(q, batch.gear[None, :, None], axis=-1)[..., 0]
      return 0.5 * jnp.sum(jnp.mean((q_a - y) ** 2, axis=-1))

    q_loss, q_grads = jax.value_and_grad(critic_loss)(agent.critic.params)
    critic = agent.critic.apply_gradients(grads=q_grads)

    def actor_loss(params):
      pi_u, pi_g = self.actor.apply(params, batch.obs)  # distrax normalises: `pi_g.logits` are log-probabilities
      u, log_u = pi_u.sample_and_log_prob(seed=k_pi)
      q = jnp.min(self.critic.apply(critic.params, batch.obs, u), axis=0)  # [B, G]
      loss = jnp.mean(alpha_u * log_u + jnp.sum(pi_g.probs * (alpha_g * pi_g.logits - q), axis=-1))
      return loss, (log_u, pi_g.probs, pi_g.logits)

    (pi_loss, inputs), pi_grads = jax.value_and_grad(actor_loss, has_aux=True)(agent.actor.params)
    actor = agent.actor.apply_gradients(grads=pi_grads)

    # entropy_jax: both parts' temperature losses, gradients and optax steps in one call.
    log_u, probs, log_probs = inputs
    entropy, ent = ej.structured_update(self.structure, agent.entropy, (log_u, (probs, log_probs)), shared=shared)
    target_critic = optax.incremental_update(critic.params, agent.target_critic, self.cfg.tau)
    agent = agent.replace(actor=actor, critic=critic, target_critic=target_critic, entropy=entropy)
    part_entropy = ent["branch_entropy"] if shared else tuple(m["entropy"] for m in ent)  # (torque, gear)
    metrics = {"critic_loss": q_loss, "actor_loss": pi_loss, "high_gear": jnp.mean(probs[:, -1])}
    return agent, metrics | {"entropy": jnp.stack(part_entropy)}

  # ------------------------------------------------ the scanned training loop --

  def train_step(self, agent: Agent) -> tuple[Agent, dict]:
    """One policy step in the environment, then one update from the buffer."""
    agent = self.env_step(agent, random_action=False)
    key, k_sample, k_update = jax.random.split(agent.key, 3)
    batch = self.buffer.sample(agent.buffer, k_sample).experience
    return self.update(agent.replace(key=key), batch, k_update)

  def warmup(self, agent: Agent) -> Agent:
    """`cfg.learning_starts` env steps of uniform-random actions (no updates), in one scan."""
    n = self.cfg.learning_starts
    return jax.lax.scan(lambda a, _: (self.env_step(a, random_action=True), None), agent, None, length=n)[0]

  def train_chunk(self, agent: Agent, length: int) -> tuple[Agent, dict]:
    """`length` env steps (train steps) in one scan, and their summary."""
    agent, metrics = jax.lax.scan(lambda a, _: self.train_step(a), agent, None, length=length)
    return agent, self.summary(agent, metrics)

  def summary(self, agent: Agent, metrics: dict | None = None) -> dict:
    """A chunk's scalars: the return, steps, each part's alpha and mean entropy `[2]` (torque, gear), and the
    policy's mean probability of the high gear on the chunk's batches."""
    alphas = ej.branch_alphas(self.structure, agent.entropy, shared=self.cfg.shared)  # entropy_jax
    out = {"return": agent.stats.mean_recent(), "steps": agent.steps, "alpha": jnp.stack(alphas)}
    out["entropy"], out["high_gear"] = jnp.full(2, jnp.nan), jnp.full((), jnp.nan)
    if metrics is not None:
      out["entropy"], out["high_gear"] = jnp.mean(metrics["entropy"], axis=0), jnp.mean(metrics["high_gear"])
    return out


# ------------------------------------------------------- vmapped population --


def train(
  sac: SAC, population: Agent, total_steps: int, *, chunk: int = 1_000, progress: bool = True, desc: str = "SAC"
) -> tuple[Agent, dict[str, np.ndarray]]:
  """Trains a stacked `[M]` population for `total_steps` env steps per member (warm-up included).

  Each chunk of `chunk` env steps is one jitted, vmapped `lax.scan`. Returns `(population, history)`: `history`
  maps `return` and `steps` to `[chunks + 1, M]` arrays, `alpha` and `entropy` to `[chunks + 1, M, 2]`.
  """
  from tqdm.auto import tqdm

  n_train = total_steps - sac.cfg.learning_starts
  if n_train < 0 or n_train % chunk:
    raise ValueError(f"train: total_steps - learning_starts = {n_train} must be a non-negative multiple of {chunk}.")
  population = jax.jit(jax.vmap(sac.warmup))(population)
  rows = [jax.device_get(jax.vmap(sac.summary)(population))]
  chunk_fn = jax.jit(jax.vmap(lambda a: sac.train_chunk(a, chunk)))
  n = rows[0]["return"].shape[0]
  bar = tqdm(total=n_train * n, desc=desc, unit="step", unit_scale=True, disable=not progress, dynamic_ncols=True)
  for _ in range(n_train // chunk):
    population, row = chunk_fn(population)
    rows.append(jax.device_get(row))
    bar.update(chunk * n)
  bar.close()
  return population, {k: np.stack([np.asarray(r[k]) for r in rows]) for k in rows[0]}


# --------------------------------------------------------------- evaluation --


def evaluate(sac: SAC, agent: Agent, key: jax.Array, episodes: int = 10) -> tuple[jax.Array, jax.Array]:
  """`[episodes]` returns of the deterministic policy (`tanh(mean)`, the likeliest gear), and its high-gear share."""
  env, params = sac.env, sac.env_params

  def episode(k):
    k_reset, k_run = jax.random.split(k)
    obs, env_state = env.reset(k_reset, params)

    def body(carry, k_t):
      obs, env_state, total = carry
      pi_u, pi_g = sac.actor.apply(agent.actor.params, obs)
      u, gear = jnp.tanh(pi_u.distribution.mean()), pi_g.mode()
      obs, env_state, reward, _, _, _ = env.step(k_t, env_state, sac.torque(u, gear), params)
      return (obs, env_state, total + reward), gear == len(GEARS) - 1

    init = (obs, env_state, jnp.zeros(()))
    (_, _, total), high = jax.lax.scan(body, init, jax.random.split(k_run, params.max_steps_in_episode))
    return total, jnp.mean(high)

  returns, high = jax.vmap(episode)(jax.random.split(key, episodes))
  return returns, jnp.mean(high)


# --------------------------------------------------------------------- main --


def main(argv: Sequence[str] | None = None) -> tuple[Agent, dict[str, np.ndarray]]:
  parser = argparse.ArgumentParser(
    description="Train a vmapped population of hybrid-action SAC agents on Pendulum-v1 (a continuous torque and a"
    " discrete gear), a temperature per part tuned by entropy_jax, and print each member's final return."
  )
  parser.add_argument("--members", type=int, default=4, help="population size (seeds; default 4)")
  parser.add_argument("--steps", type=int, default=15_000, help="environment steps per member (default 15000)")
  parser.add_argument("--shared", action="store_true", help="one temperature for the whole action, summed target")
  parser.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
  parser.add_argument("--chunk", type=int, default=1_000, help="env steps per jitted scan (default 1000)")
  parser.add_argument("--out", default=None, help="optional .npz file for the training history")
  args = parser.parse_args(argv)

  sac = SAC(Config(shared=args.shared))
  entropy = jax.tree.map(lambda x: jnp.stack([x] * args.members), sac.init_entropy())  # entropy_jax: per member
  population = jax.jit(jax.vmap(sac.init))(jax.random.split(jax.random.key(args.seed), args.members), entropy)
  population, history = train(sac, population, args.steps, chunk=args.chunk, desc="hybrid SAC Pendulum")
  keys = jax.random.split(jax.random.key(args.seed + 1), args.members)
  policy, high = jax.jit(jax.vmap(lambda a, k: evaluate(sac, a, k)))(population, keys)
  print("member  return(last10)  alpha (torque, gear)  entropy (torque, gear)  deterministic  high gear")
  for i in range(args.members):
    alpha, ent = np.round(history["alpha"][-1, i], 3), np.round(history["entropy"][-1, i], 3)
    row = f"{i:6d}  {history['return'][-1, i]:14.1f}  {alpha!s:20s}  {ent!s:22s}"
    print(f"{row}  {float(policy[i].mean()):13.1f}  {float(high[i]):9.2f}")
  print(f"{int(np.sum(history['return'][-1] >= RETURN_BAR))}/{args.members} members at >= {RETURN_BAR:.0f}")
  if args.out:
    np.savez(args.out, **history)
  return population, history


if __name__ == "__main__":
  main()
