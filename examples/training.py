"""The chunked population loop of the SAC examples.

`train` runs an agent (a `common.ScanLoop`) for a number of environment steps
in jitted chunks of one `lax.scan` each, with a tqdm progress bar between
chunks, and returns the history the plots read. `train_and_report` is what
the population scripts' `main` runs: the loop, timed, then the result table.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from examples import plotting
from examples.common import PyTree, ScanLoop


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
