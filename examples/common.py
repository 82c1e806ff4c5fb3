"""Building blocks shared by the SAC examples.

Networks (flax.linen), the replay buffer (flashbax), episode bookkeeping that
runs inside `lax.scan`, population helpers (`vmap` over members), the
exploit/explore step of population-based training (Jaderberg et al. 2017,
"Population Based Training of Neural Networks", arXiv:1711.09846), a chunked
training loop with a tqdm progress bar, and plotting.

Nothing here knows about a particular agent: the agents live in
`sac_continuous.py` and `sac_discrete.py`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, NamedTuple, Optional, Sequence

import flashbax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

PyTree = Any


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

  obs: jax.Array         # [obs_dim] float32
  action: jax.Array      # [action_dim] float32, or [] int32 for discrete actions
  reward: jax.Array      # [] float32
  next_obs: jax.Array    # [obs_dim] float32: the true next observation, before any auto-reset
  terminated: jax.Array  # [] float32: 1.0 at a true terminal state (no bootstrap), else 0.0


def make_buffer(max_length: int, batch_size: int):
  """A flashbax uniform item buffer that stores one `Transition` per `add`."""
  return flashbax.make_item_buffer(
      max_length=max_length, min_length=batch_size, sample_batch_size=batch_size
  )


# ------------------------------------------------------- episode statistics --

class EpisodeStats(struct.PyTreeNode):
  """Running return of the current episode and the last `K` finished ones.

  All fields live on device, so they are carried through `lax.scan`.
  """

  current: jax.Array   # [] float32, return so far of the running episode
  recent: jax.Array    # [K] float32, ring buffer of finished-episode returns
  count: jax.Array     # [] int32, number of finished episodes

  @classmethod
  def create(cls, window: int = 10) -> "EpisodeStats":
    return cls(
        current=jnp.zeros((), jnp.float32),
        recent=jnp.zeros((window,), jnp.float32),
        count=jnp.zeros((), jnp.int32),
    )

  def record(self, reward: jax.Array, done: jax.Array) -> "EpisodeStats":
    """Adds `reward`; when `done`, files the finished episode's return."""
    ret = self.current + reward
    slot = self.count % self.recent.shape[0]
    recent = jnp.where(done, self.recent.at[slot].set(ret), self.recent)
    return self.replace(
        current=jnp.where(done, 0.0, ret),
        recent=recent,
        count=self.count + done.astype(jnp.int32),
    )

  def mean_recent(self) -> jax.Array:
    """Mean return over the last `K` finished episodes (NaN before the first)."""
    k = jnp.minimum(self.count, self.recent.shape[0])
    total = jnp.sum(self.recent * (jnp.arange(self.recent.shape[0]) < k))
    return jnp.where(k > 0, total / jnp.maximum(k, 1), jnp.nan)


# --------------------------------------------------------------- population --

def log_uniform_spread(low: float, high: float, n: int) -> np.ndarray:
  """`n` values spaced evenly in log space from `low` to `high`."""
  return np.geomspace(low, high, n).astype(np.float32)


def member(population: PyTree, i: int) -> PyTree:
  """The `i`-th member of a stacked population."""
  return jax.tree.map(lambda x: x[i], population)


def injected(opt_state: PyTree, name: str) -> jax.Array:
  """Reads the hyperparameter `name` from an `optax.inject_hyperparams` state."""
  return optax.tree_utils.tree_get(opt_state, name)


# --------------------------------------- population-based training (PBT) --

class ExploreRange(NamedTuple):
  """How explore perturbs a replaced member's hyperparameters.

  The learning rate is multiplied by `exp(u)`, `u ~ U(-log_lr_scale, +log_lr_scale)`;
  the target entropy is shifted by `v ~ U(-target_shift, +target_shift)` and
  clipped to `[target_min, target_max]`.
  """

  log_lr_scale: float = float(np.log(1.25))
  target_shift: float = 0.25
  target_min: float = -4.0
  target_max: float = 0.5


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
  of member `worst[i]` becomes that of member `best[i]`. Works on any stacked
  pytree; the caller decides which parts to pass (e.g. not the env state).

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
    rng: ExploreRange = ExploreRange(),
) -> tuple[jax.Array, jax.Array]:
  """Perturbs `[N]` learning rates and targets where `replaced` is True."""
  k_lr, k_t = jax.random.split(key)
  u = jax.random.uniform(k_lr, lr.shape, minval=-rng.log_lr_scale, maxval=rng.log_lr_scale)
  v = jax.random.uniform(k_t, target.shape, minval=-rng.target_shift, maxval=rng.target_shift)
  new_lr = jnp.where(replaced, lr * jnp.exp(u), lr)
  new_target = jnp.where(
      replaced, jnp.clip(target + v, rng.target_min, rng.target_max), target
  )
  return new_lr, new_target


def pbt_exploit_explore(
    key: jax.Array,
    population: PyTree,
    scores: jax.Array,
    n_replace: int,
    rng: ExploreRange = ExploreRange(),
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
  lr = injected(entropy.opt_state, "learning_rate")
  new_lr, new_target = explore_lr_and_target(key, lr, entropy.target, replaced, rng)
  entropy = entropy.replace(
      target=new_target.astype(entropy.target.dtype),
      opt_state=optax.tree_utils.tree_set(entropy.opt_state, learning_rate=new_lr.astype(lr.dtype)),
  )
  return copied.replace(entropy=entropy), source


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
      total=n_chunks * steps_per_chunk, desc=desc, unit="step", unit_scale=True,
      disable=not progress, dynamic_ncols=True,
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


class Timer:
  """`with Timer() as t: ...; t.seconds`."""

  def __enter__(self):
    self.start = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.seconds = time.perf_counter() - self.start


# ---------------------------------------------------------------- plotting --

def plot_members(
    steps: np.ndarray,
    values: np.ndarray,
    *,
    title: str,
    ylabel: str,
    path: str,
    labels: Optional[Sequence[str]] = None,
    logy: bool = False,
    hline: Optional[float] = None,
    dashed: Optional[np.ndarray] = None,
) -> str:
  """One line per member: `values[T, N]` against `steps[T]`, saved as a PNG.

  `dashed[T, N]`, if given, is drawn dashed in each member's colour (e.g.
  the target entropy under the measured entropy); `hline` is a black
  dashed horizontal reference line.
  """
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
  n = values.shape[1]
  cmap = plt.get_cmap("viridis")
  for i in range(n):
    label = labels[i] if labels is not None else f"member {i}"
    color = cmap(i / max(n - 1, 1))
    ax.plot(steps, values[:, i], color=color, lw=1.4, label=label)
    if dashed is not None:
      ax.plot(steps, dashed[:, i], color=color, lw=0.9, ls="--")
  if hline is not None:
    ax.axhline(hline, color="k", ls="--", lw=0.8)
  if logy:
    ax.set_yscale("log")
  ax.set_xlabel("environment steps (per member)")
  ax.set_ylabel(ylabel)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2, loc="best")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  plt.close(fig)
  return path


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  """Prints and returns a plain-text table."""
  cells = [[str(h) for h in header]] + [
      [f"{c:.3g}" if isinstance(c, (float, np.floating)) else str(c) for c in r] for r in rows
  ]
  widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
  lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
  lines.insert(1, "  ".join("-" * w for w in widths))
  text = "\n".join(lines)
  print(text)
  return text


# ----------------------------------------------------------------------------
# The population training loop, shared by the continuous and discrete agents.


def train_population(
    sac: Any,
    key: jax.Array,
    targets: Sequence[float],
    alpha_lrs: Sequence[float],
    total_steps: int,
    *,
    chunk: int,
    progress: bool = True,
    desc: str = "SAC",
    chunk_hook: Optional[Callable] = None,
) -> tuple[Any, dict]:
  """Trains a vmapped population of `sac` agents, `total_steps` env steps each.

  Args:
    sac: the agent's functions (`sac_continuous.SAC` or `sac_discrete.DiscreteSAC`):
      `init_population`, `warmup`, `train_chunk`, `summary`, and `cfg` with
      `learning_starts` (and `num_envs`, 1 if absent).
    key: PRNG key; each member gets its own.
    targets, alpha_lrs: `[N]` per-member target entropies and alpha rates.
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
  n = len(targets)
  num_envs = getattr(sac.cfg, "num_envs", 1)
  n_train = total_steps - sac.cfg.learning_starts
  if n_train < 0 or n_train % chunk or chunk % num_envs:
    raise ValueError(
        f"train_population: total_steps - learning_starts = {total_steps} -"
        f" {sac.cfg.learning_starts} must be a non-negative multiple of chunk={chunk},"
        f" itself a multiple of num_envs={num_envs}."
    )
  population = jax.jit(jax.vmap(sac.warmup))(sac.init_population(key, targets, alpha_lrs))
  first = jax.tree.map(np.asarray, jax.device_get(jax.vmap(sac.summary)(population)))
  first["entropy"] = np.full(n, np.nan, np.float32)
  first["critic_loss"] = np.full(n, np.nan, np.float32)

  def chunk_fn(carry):
    pop, i = carry
    pop, summary = jax.vmap(lambda a: sac.train_chunk(a, chunk))(pop)
    if chunk_hook is not None:
      pop = chunk_hook(pop, i)
    return (pop, i + 1), summary

  (population, _), summaries = run_chunks(
      jax.jit(chunk_fn), (population, jnp.zeros((), jnp.int32)), n_train // chunk,
      chunk * n, desc=desc, progress=progress,
  )
  return population, stack_summaries([first] + summaries)


def report(history: dict) -> list[list[Any]]:
  """Rows `[member, final return, alpha, entropy, target]` for the summary table."""
  return [
      [i, float(history["return"][-1, i]), float(history["alpha"][-1, i]),
       float(history["entropy"][-1, i]), float(history["target"][-1, i])]
      for i in range(history["return"].shape[1])
  ]
