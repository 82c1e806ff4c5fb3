"""Building blocks shared by the SAC examples.

Networks (flax.linen), the replay buffer (flashbax), episode bookkeeping that
runs inside `lax.scan`, the scan-based training loop that both agents inherit
(`ScanLoop`) and greedy evaluation. Nothing here knows a particular agent:
the agents live in `sac_continuous.py` and `sac_discrete.py`, the chunked
population loop in `training.py`, PBT in `pbt.py`, plots in `plotting.py`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flashbax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

PyTree = Any
# Episodes whose returns `EpisodeStats.mean_recent` averages.
RETURN_WINDOW = 10


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


# ------------------------------------------------------------ replay buffer --


class Transition(NamedTuple):
  """One environment transition, as stored in the replay buffer."""

  obs: jax.Array  # [obs_dim]
  action: jax.Array  # [action_dim] float32, or [] int32 for discrete actions
  reward: jax.Array  # [] float32
  next_obs: jax.Array  # [obs_dim]: the true next observation, before any auto-reset
  terminated: jax.Array  # [] float32: 1.0 at a true terminal state (no bootstrap), else 0.0


def make_buffer(max_length: int, batch_size: int):
  """A flashbax uniform item buffer that stores one `Transition` per `add`."""
  return flashbax.make_item_buffer(max_length=max_length, min_length=batch_size, sample_batch_size=batch_size)


# ------------------------------------------------------- episode statistics --


class EpisodeStats(struct.PyTreeNode):
  """Running returns of the current episodes and the last `K` finished ones.

  All fields live on device, so they are carried through `lax.scan`.
  """

  current: jax.Array  # [] or [E] float32, return so far of each running episode
  recent: jax.Array  # [K] float32, ring buffer of finished-episode returns
  count: jax.Array  # [] int32, number of finished episodes

  @classmethod
  def create(cls, window: int = RETURN_WINDOW, envs: int | None = None) -> EpisodeStats:
    """Empty statistics for one environment (`envs=None`) or `envs` of them."""
    return cls(
      current=jnp.zeros(() if envs is None else (envs,), jnp.float32),
      recent=jnp.zeros((window,), jnp.float32),
      count=jnp.zeros((), jnp.int32),
    )

  def record(self, reward: jax.Array, done: jax.Array) -> EpisodeStats:
    """Adds `reward` (`[]`, one env); when `done`, files the finished episode's return."""
    ret = self.current + reward
    slot = self.count % self.recent.shape[0]
    recent = jnp.where(done, self.recent.at[slot].set(ret), self.recent)
    return self.replace(
      current=jnp.where(done, 0.0, ret),
      recent=recent,
      count=self.count + done.astype(jnp.int32),
    )

  def record_each(self, reward: jax.Array, done: jax.Array) -> EpisodeStats:
    """`record` for `E` environments (`[E]` rewards, `current` of shape `[E]`).

    Finished episodes are filed into the one shared ring in env order, so
    `mean_recent()` is the mean over the last K episodes, whichever
    environment ran them.
    """
    current = []
    stats = self
    for e in range(reward.shape[0]):  # static and small
      one = stats.replace(current=self.current[e]).record(reward[e], done[e])
      current.append(one.current)
      stats = one.replace(current=self.current)
    return stats.replace(current=jnp.stack(current))

  def mean_recent(self) -> jax.Array:
    """Mean return over the last `K` finished episodes (NaN before the first)."""
    k = jnp.minimum(self.count, self.recent.shape[0])
    total = jnp.sum(self.recent * (jnp.arange(self.recent.shape[0]) < k))
    return jnp.where(k > 0, total / jnp.maximum(k, 1), jnp.nan)


# --------------------------------------------------------------- population --

# Agent fields that belong to a member's own experience, not to what it has
# learned: PBT's exploit step leaves them in place.
OWN_FIELDS = ("buffer", "env_state", "obs", "stats", "key", "steps")


def log_uniform_spread(low: float, high: float, n: int) -> np.ndarray:
  """`n` values spaced evenly in log space from `low` to `high`."""
  return np.geomspace(low, high, n).astype(np.float32)


def injected(opt_state: PyTree, name: str) -> jax.Array:
  """Reads the hyperparameter `name` from an `optax.inject_hyperparams` state."""
  return optax.tree_utils.tree_get(opt_state, name)


# ------------------------------------------------ the scan loop of an agent --


class ScanLoop(abc.ABC):
  """Warm-up, chunks of training steps and their summary, for an agent class.

  The agent class provides `cfg` (with `learning_starts`), `num_envs`,
  `env_step(agent, random_action) -> agent` (steps its `num_envs`
  environments) and `train_step(agent) -> (agent, metrics)` (one env step and
  one update); its agents carry `stats`, `entropy` and `steps`. Step counts
  are environment steps per member.
  """

  cfg: Any
  num_envs: int = 1  # environments each member steps per train step

  @abc.abstractmethod
  def env_step(self, agent: Any, random_action: bool) -> Any:
    """One step of the member's `num_envs` environments, with uniform-random actions or the policy's."""

  @abc.abstractmethod
  def train_step(self, agent: Any) -> tuple[Any, dict]:
    """One environment step and one update; returns the agent and the update's metrics."""

  def warmup(self, agent: Any) -> Any:
    """`cfg.learning_starts` env steps of uniform-random actions (no updates), in one scan."""

    def body(a, _):
      return self.env_step(a, random_action=True), None

    n = self.cfg.learning_starts // self.num_envs
    agent, _ = jax.lax.scan(body, agent, None, length=n)
    return agent

  def train_chunk(self, agent: Any, length: int) -> tuple[Any, dict]:
    """`length` env steps (`length // num_envs` train steps) in one scan, and their summary."""
    if length % self.num_envs:
      raise ValueError(f"train_chunk: length={length} env steps must be a multiple of num_envs={self.num_envs}.")
    alpha_before = agent.entropy.alpha
    agent, metrics = jax.lax.scan(lambda a, _: self.train_step(a), agent, None, length=length // self.num_envs)
    return agent, self.summary(agent, metrics, alpha_before)

  @staticmethod
  def summary(agent: Any, metrics: dict | None = None, alpha_before: jax.Array | None = None) -> dict:
    """Scalars for logging: recent return, alpha, entropy, target, steps.

    `alpha_rises` / `alpha_falls` count the updates of the chunk that raised
    / lowered alpha (a run's alpha is monotone iff one of them sums to 0);
    `alpha_peak` is the largest alpha within the chunk.
    """
    out = {
      "return": agent.stats.mean_recent(),
      "episodes": agent.stats.count,
      "alpha": agent.entropy.alpha,
      "target": agent.entropy.target,
      "steps": agent.steps,
      "alpha_rises": jnp.zeros((), jnp.int32),
      "alpha_falls": jnp.zeros((), jnp.int32),
      "alpha_peak": agent.entropy.alpha,
    }
    lr = injected(agent.entropy.opt_state, "learning_rate")
    if lr is not None:
      out["alpha_lr"] = lr
    if metrics is not None:
      out["entropy"] = jnp.mean(metrics["entropy"])
      # The mean of `H - target` over the chunk's updates: the sign that drives alpha.
      out["entropy_gap"] = jnp.mean(metrics["entropy"] - metrics["target"])
      out["critic_loss"] = jnp.mean(metrics["critic_loss"])
      alphas = jnp.concatenate([alpha_before[None], metrics["alpha"]])
      out["alpha_rises"] = jnp.sum(jnp.diff(alphas) > 0).astype(jnp.int32)
      out["alpha_falls"] = jnp.sum(jnp.diff(alphas) < 0).astype(jnp.int32)
      out["alpha_peak"] = jnp.max(alphas)
    return out


def evaluate_episodes(env: Any, env_params: Any, act: Callable, key: jax.Array, episodes: int) -> jax.Array:
  """`[episodes]` returns of full episodes from fresh resets, acting with `act`.

  Args:
    env, env_params: a gymnax environment.
    act: `(obs, key) -> action` for one observation.
    key: PRNG key.
    episodes: how many episodes, run in parallel (`vmap`).

  Returns:
    `[episodes]` float32 returns; rewards after an episode's end are ignored.
  """
  length = env_params.max_steps_in_episode

  def episode(k):
    k_reset, k_run = jax.random.split(k)
    obs, env_state = env.reset(k_reset, env_params)

    def body(carry, k_t):
      obs, env_state, total, alive = carry
      k_act, k_env = jax.random.split(k_t)
      obs, env_state, reward, terminated, truncated, _ = env.step(k_env, env_state, act(obs, k_act), env_params)
      total = total + alive * reward
      return (obs, env_state, total, alive * (1.0 - (terminated | truncated))), None

    init = (obs, env_state, jnp.zeros(()), jnp.ones(()))
    (_, _, total, _), _ = jax.lax.scan(body, init, jax.random.split(k_run, length))
    return total

  return jax.vmap(episode)(jax.random.split(key, episodes))
