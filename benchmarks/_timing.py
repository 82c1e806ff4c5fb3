"""Side-by-side timing: the methods of one comparison interleaved, medians reported.

Each method is a zero-argument callable doing one unit of work (one update, one
loop over a population) and returning what to wait for. A sample times `inner`
back-to-back calls and waits once at the end with `jax.block_until_ready`
(PyTorch code is synchronous on the CPU, so waiting costs it nothing; PyTorch
on a GPU returns `torch.cuda.synchronize`, which `_block` calls); `inner`
is calibrated per method so that a sample lasts at least `min_time` seconds,
which keeps microsecond-scale calls above the timer's resolution. Within each
repeat every method takes one sample, in an order rotated from repeat to
repeat, so that a burst of load from other processes hits all methods alike.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax


@dataclasses.dataclass(frozen=True)
class Timing:
  """Seconds per call of one method: the median over repeats, and the spread."""

  median: float
  minimum: float
  maximum: float
  repeats: int
  inner: int

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def _block(out: Any) -> None:
  """Waits for `out`: jax values, or a callable that synchronizes (such as
  `torch.cuda.synchronize` for PyTorch work queued on a GPU)."""
  if callable(out):
    out()
  elif out is not None:
    jax.block_until_ready(out)


def _sample(fn: Callable[[], Any], inner: int) -> float:
  out = None
  start = time.perf_counter()
  for _ in range(inner):
    out = fn()
  _block(out)
  return (time.perf_counter() - start) / inner


def calibrate(fn: Callable[[], Any], min_time: float, max_inner: int = 100_000) -> int:
  """How many back-to-back calls of a warmed-up `fn` last at least `min_time`.

  Each estimate is the faster of two samples, so that one call slowed down by
  another process does not leave a microsecond-scale method timed one call at
  a time.
  """
  inner = 1
  while True:
    per_call = _sample(fn, inner)
    if per_call * inner >= min_time:
      per_call = min(per_call, _sample(fn, inner))
    if per_call * inner >= min_time or inner >= max_inner:
      return inner
    # Aim 20% past the goal from the last estimate; at least double.
    grow = 1.2 * min_time / max(per_call * inner, 1e-9)
    inner = min(max_inner, max(2 * inner, math.ceil(inner * grow)))


def threaded(fn: Callable[..., Any], state: Any, *args: Any, carry: bool = False) -> Callable[[], Any]:
  """A method that threads a state through `fn`, as a training loop does.

  Each call runs `state = fn(state, *args)` (with `carry=True`, keeps the
  first element of what `fn` returns, as for `(state, metrics)`) and returns
  the new state to wait for. `fn` may donate its state argument.
  """
  box = [state]

  def step():
    out = fn(box[0], *args)
    box[0] = out[0] if carry else out
    return box[0]

  return step


def interleaved(
  fns: dict[str, Callable[[], Any]],
  *,
  repeats: int,
  min_time: float,
  warmup: int = 2,
) -> dict[str, Timing]:
  """Times every method in `fns` side by side; returns seconds per call.

  Args:
    fns: name -> zero-argument callable doing one unit of work.
    repeats: number of samples per method (>= 1); the median is reported.
    min_time: seconds each sample should last at least (sets `inner`).
    warmup: untimed calls per method first (compilation, caches).

  Returns:
    name -> `Timing`, with the same keys as `fns`.
  """
  if repeats < 1:
    raise ValueError(f"interleaved: `repeats` must be >= 1; got {repeats}.")
  names = list(fns)
  for name in names:
    for _ in range(warmup):
      _block(fns[name]())
  inner = {name: calibrate(fns[name], min_time) for name in names}
  samples: dict[str, list[float]] = {name: [] for name in names}
  for r in range(repeats):
    shift = r % len(names)
    for name in names[shift:] + names[:shift]:
      samples[name].append(_sample(fns[name], inner[name]))
  return {
    name: Timing(
      median=statistics.median(s),
      minimum=min(s),
      maximum=max(s),
      repeats=repeats,
      inner=inner[name],
    )
    for name, s in samples.items()
  }
