"""Building blocks shared by the SAC examples.

Networks (flax.linen), the replay buffer (flashbax), episode bookkeeping that
runs inside `lax.scan`, the scan-based training loop that both agents inherit
(`ScanLoop`), greedy evaluation, and the chunked population loop with its
tqdm progress bar. Nothing here knows a particular agent: the agents live in
`sac_continuous.py` and `sac_discrete.py`, PBT in `pbt.py`, plots in
`plotting.py`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flashbax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from examples import plotting

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


class ScanLoop:
  """Warm-up, chunks of training steps and their summary, for an agent class.

  The agent class provides `cfg` (with `learning_starts`), `num_envs`,
  `env_step(agent, random_action) -> agent` (steps its `num_envs`
  environments) and `train_step(agent) -> (agent, metrics)` (one env step and
  one update); its agents carry `stats`, `entropy` and `steps`. Step counts
  are environment steps per member.
  """

  cfg: Any
  num_envs: int = 1  # environments each member steps per train step

  def env_step(self, agent: Any, random_action: bool) -> Any:
    raise NotImplementedError

  def train_step(self, agent: Any) -> tuple[Any, dict]:
    raise NotImplementedError

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


# ---------------------------------------------------------- training loop --


def run_chunks(
  chunk_fn: Callable[[PyTree], tuple[PyTree, dict]],
  carry: PyTree,
  n_chunks: int,
  steps_per_chunk: int,
  *,
  desc: str = "train",
  progress: bool = True,
  return_key: str = "return",
) -> tuple[PyTree, list[dict]]:
  """Calls the jitted `chunk_fn` `n_chunks` times, with a tqdm progress bar.

  Each chunk is one `lax.scan` on device; between chunks the host only reads
  the chunk's small summary (`dict` of arrays) to update the bar, which shows
  environment steps per second and the current mean return.

  Args:
    chunk_fn: `carry -> (carry, summary)`, jitted.
    carry: the initial training state.
    n_chunks: how many chunks to run.
    steps_per_chunk: environment steps per chunk, summed over the population.
    desc: the bar's label.
    progress: show the bar (False in tests).
    return_key: the summary entry holding `[N]` mean returns.

  Returns:
    `(final_carry, summaries)`, one summary (NumPy arrays) per chunk.
  """
  from tqdm.auto import tqdm

  summaries = []
  bar = tqdm(
    total=n_chunks * steps_per_chunk,
    desc=desc,
    unit="step",
    unit_scale=True,
    disable=not progress,
    dynamic_ncols=True,
  )
  for _ in range(n_chunks):
    carry, summary = chunk_fn(carry)
    summary = jax.tree.map(np.asarray, jax.device_get(summary))
    summaries.append(summary)
    bar.update(steps_per_chunk)
    ret = summary.get(return_key)
    if ret is not None and np.any(np.isfinite(ret)):
      bar.set_postfix(mean_return=f"{np.nanmean(ret):.1f}")
  bar.close()
  return carry, summaries


def stack_summaries(summaries: list[dict]) -> dict:
  """`[chunks]` of `{name: [N]}` -> `{name: [chunks, N]}`."""
  return {k: np.stack([s[k] for s in summaries]) for k in summaries[0]}


def train(
  sac: ScanLoop,
  population: Any,
  total_steps: int,
  *,
  chunk: int,
  progress: bool = True,
  desc: str = "SAC",
  chunk_hook: Callable | None = None,
) -> tuple[Any, dict]:
  """Trains a stacked population of fresh agents, `total_steps` env steps each.

  Args:
    sac: the agent's functions (a `ScanLoop`).
    population: `[N]` stacked agents, as from `sac.init_population`.
    total_steps: environment steps per member, warm-up included.
    chunk: env steps per member per jitted scan (one progress-bar tick).
    progress: show a tqdm bar (steps per second, current mean return).
    desc: the bar's label.
    chunk_hook: optional `(population, chunk_index) -> population`, applied
      after each chunk's scan inside the same jit (PBT uses it).

  Returns:
    `(population, history)`: history maps names to `[chunks + 1, N]` arrays
    (row 0 is after the random warm-up, with NaN entropy and critic loss).
  """
  n_train = total_steps - sac.cfg.learning_starts
  if n_train < 0 or n_train % chunk or chunk % sac.num_envs:
    raise ValueError(
      f"train: total_steps - learning_starts = {total_steps} -"
      f" {sac.cfg.learning_starts} must be a non-negative multiple of chunk={chunk},"
      f" itself a multiple of num_envs={sac.num_envs}."
    )
  population = jax.jit(jax.vmap(sac.warmup))(population)
  first = jax.tree.map(np.asarray, jax.device_get(jax.vmap(sac.summary)(population)))
  n = first["alpha"].shape[0]
  first["entropy"] = np.full(n, np.nan, np.float32)
  first["critic_loss"] = np.full(n, np.nan, np.float32)
  first["entropy_gap"] = np.full(n, np.nan, np.float32)

  def chunk_fn(carry):
    pop, i = carry
    pop, summary = jax.vmap(lambda a: sac.train_chunk(a, chunk))(pop)
    if chunk_hook is not None:
      pop = chunk_hook(pop, i)
    return (pop, i + 1), summary

  (population, _), summaries = run_chunks(
    jax.jit(chunk_fn),
    (population, jnp.zeros((), jnp.int32)),
    n_train // chunk,
    chunk * n,
    desc=desc,
    progress=progress,
  )
  return population, stack_summaries([first, *summaries])


def train_population(
  sac: Any,
  key: jax.Array,
  targets: Sequence[float],
  alpha_lrs: Sequence[float],
  total_steps: int,
  **kwargs: Any,
) -> tuple[Any, dict]:
  """`train` on `sac.init_population(key, targets, alpha_lrs)`; `kwargs` as for `train`."""
  return train(sac, sac.init_population(key, targets, alpha_lrs), total_steps, **kwargs)


def train_and_report(
  train: Callable[..., tuple[Any, dict]],
  sac: Any,
  targets: Sequence[float],
  alpha_lrs: Sequence[float],
  args: Any,
  bar: float,
  *,
  key: jax.Array | None = None,
  extra: Sequence[str] = (),
  **kwargs: Any,
) -> tuple[Any, dict]:
  """Trains a population as a script's command line says, then prints its table.

  Args:
    train: the script's `train_population`.
    sac: the agent.
    targets: `[N]` target entropies.
    alpha_lrs: `[N]` alpha learning rates.
    args: the parsed `plotting.population_parser` flags (`seed`, `steps`,
      `chunk`).
    bar: the return a member must reach.
    key: the PRNG key of the population (default `jax.random.key(args.seed)`).
    extra: further history columns for the table.
    **kwargs: passed on to `train`.

  Returns:
    `(population, history)` as `train` returns them.
  """
  key = jax.random.key(args.seed) if key is None else key
  with Timer() as t:
    population, history = train(sac, key, targets, alpha_lrs, args.steps, chunk=args.chunk, **kwargs)
  plotting.print_population_result(history, bar, args.steps, t.seconds, extra=extra)
  return population, history


class Timer:
  """`with Timer() as t: ...; t.seconds`."""

  def __enter__(self):
    self.start = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.seconds = time.perf_counter() - self.start
