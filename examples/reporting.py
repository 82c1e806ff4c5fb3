"""What the scripts around the agents share: the population command line, run files, tables, timing and plots.

The agents (`sac_continuous.py`, `sac_discrete.py`) stand alone and import nothing from here; the
demo, population-based training and the discrete target study import them and this module. A
history maps names to `[chunks + 1, N]` arrays (the agents' `train`): one row per chunk, one
column per population member. Plots use matplotlib's Agg backend.

Run `python examples/reporting.py --help` to plot a history saved by an agent's `--out`.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

# Sized for the documentation's content column, about 800 px wide (furo: 46em at 17.6 px): a single plot
# (700 px) is shown at its own size, a row of panels (900 px wide, whatever their number) scaled by about
# 0.8, so that the smallest text, 9 pt (12.5 px at DPI 100), is still 10 px tall on the page.
DPI = 100
FIGSIZE = (7, 4.2)
PANELS_WIDTH, PANEL_HEIGHT = 9.0, 3.0
FONTS = {
  "font.size": 10,
  "axes.titlesize": 11,
  "axes.labelsize": 10,
  "xtick.labelsize": 9,
  "ytick.labelsize": 9,
  "legend.fontsize": 9,
  "figure.titlesize": 11,
}


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _steps_axis(ax) -> None:
  """Environment steps on the x axis, at most five ticks, in thousands ("50k") so that they never run together."""
  from matplotlib.ticker import FuncFormatter, MaxNLocator

  ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))
  ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x / 1000:g}k" if x else "0"))
  ax.set_xlabel("environment steps per member")


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path)
  _pyplot().close(fig)
  return path


def plot_members(
  steps: np.ndarray,
  values: np.ndarray,
  *,
  title: str,
  ylabel: str,
  path: str,
  labels: Sequence[str] | None = None,
  logy: bool = False,
  hline: float | None = None,
  dashed: np.ndarray | None = None,
) -> str:
  """One line per member: `values[T, N]` against `steps[T]`, saved as a PNG.

  `dashed[T, N]`, if given, is drawn dashed in each member's colour (e.g.
  the target entropy under the measured entropy); `hline` is a black
  dashed horizontal reference line.
  """
  plt = _pyplot()
  with plt.rc_context(FONTS):
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
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
    _steps_axis(ax)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(ncol=2, loc="best")
    fig.tight_layout()
  return _save(fig, path)


def member_labels(history: dict) -> list[str]:
  """Legend entries: each member's starting target and alpha learning rate."""
  t, lr = history["target"][0], history.get("alpha_lr", [None])[0]
  return [f"{i}: target {t[i]:.2f}" + ("" if lr is None else f", lr {lr[i]:.1e}") for i in range(len(t))]


# `plot_history`'s figures: (curve, title, y label, log scale).
HISTORY_FIGURES = (
  ("return", "mean return of the last 10 episodes", "return", False),
  ("alpha", "temperature alpha", "alpha (log scale)", True),
  ("entropy", "policy entropy (solid) and target (dashed)", "entropy estimate (nats)", False),
)


def plot_history(history: dict, out: str, title: str, bar: float | None = None) -> list[str]:
  """`return.png`, `alpha.png`, `entropy.png` in `out`, one line per member; their paths.

  Row 0 (after the warm-up, no update yet) is left out of the entropy plot; `bar`
  is drawn on the return plot.
  """
  steps = history["steps"][:, 0]
  names = member_labels(history)
  paths = []
  for name, what, ylabel, logy in HISTORY_FIGURES:
    rows = slice(1, None) if name == "entropy" else slice(None)
    paths.append(
      plot_members(
        steps[rows],
        history[name][rows],
        title=f"{title}: {what}",
        ylabel=ylabel,
        path=os.path.join(out, f"{name}.png"),
        labels=names,
        logy=logy,
        hline=bar if name == "return" else None,
        dashed=history["target"][rows] if name == "entropy" else None,
      )
    )
  return paths


def plot_groups(
  steps: np.ndarray,
  panels: Sequence[tuple[str, dict[str, np.ndarray], bool]],
  *,
  colors: dict[str, Any],
  labels: dict[str, str],
  title: str,
  path: str,
  dashed: dict[str, np.ndarray] | None = None,
) -> str:
  """Panels of grouped runs: per group, the median over its members and their range.

  Args:
    steps: `[T]` environment steps per member.
    panels: `(ylabel, {group: [T, S] values}, log_scale)` per panel, left to right.
    colors, labels: per group.
    title: the figure's title.
    path: the PNG to write.
    dashed: optional `{group: [T]}` drawn dashed in the last panel (e.g. targets).

  Returns:
    `path`.
  """
  plt = _pyplot()
  with plt.rc_context(FONTS):
    fig, axes = plt.subplots(1, len(panels), figsize=(PANELS_WIDTH, PANEL_HEIGHT + 1.0), dpi=DPI, squeeze=False)
    for ax, (ylabel, groups, logy) in zip(axes[0], panels):
      for name, values in groups.items():
        with warnings.catch_warnings():  # rows where every member is NaN (no episode yet)
          warnings.simplefilter("ignore", RuntimeWarning)
          mid = np.nanmedian(values, axis=1)
          lo, hi = np.nanmin(values, axis=1), np.nanmax(values, axis=1)
        ax.plot(steps, mid, color=colors[name], lw=1.3, label=labels[name])
        ax.fill_between(steps, lo, hi, color=colors[name], alpha=0.15, lw=0)
      if logy:
        ax.set_yscale("log")
      ax.set_ylabel(ylabel)
      _steps_axis(ax)
      ax.grid(alpha=0.3)
    if dashed:
      for name, values in dashed.items():
        axes[0, -1].plot(steps, values, color=colors[name], lw=0.8, ls="--")
    handles, names = axes[0, 0].get_legend_handles_labels()
    rows = -(-len(names) // 4)  # legend rows, at most 4 entries each
    fig.legend(handles, names, loc="lower center", ncol=min(len(names), 4), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.055 * rows + 0.01, 1, 1))
  return _save(fig, path)


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


def report(history: dict) -> list[list[Any]]:
  """Rows `[member, final return, alpha, entropy, target]` for the summary table."""
  return [
    [
      i,
      float(history["return"][-1, i]),
      float(history["alpha"][-1, i]),
      float(history["entropy"][-1, i]),
      float(history["target"][-1, i]),
    ]
    for i in range(history["return"].shape[1])
  ]


def save_run(path: str, history: dict, finals: dict) -> None:
  """Writes a run's `history` and its `finals` (stored as `final_<name>`) to one `.npz` file."""
  np.savez(path, **history, **{f"final_{k}": v for k, v in finals.items()})


def load_run(path: str) -> tuple[dict, dict]:
  """`(history, finals)` of a run written by `save_run`."""
  with np.load(path) as f:
    history = dict(f)
  return history, {k[len("final_") :]: history.pop(k) for k in list(history) if k.startswith("final_")}


def return_summary(history: dict, greedy: np.ndarray) -> tuple[dict, np.ndarray]:
  """The final return over seeds (mean, spread), the area under the learning curve and the greedy return.

  Returns the figures, keyed as the studies' `results.json` keys them, and the area per seed: the mean
  return over the run (rows without a finished episode count 0), from the history's `[T, S]` returns
  against its steps.
  """
  steps = history["steps"][:, 0].astype(np.float64)
  final = history["return"][-1]
  auc = np.trapezoid(np.nan_to_num(history["return"], nan=0.0), steps, axis=0) / (steps[-1] - steps[0])
  figures = {
    "final_return_mean": float(np.mean(final)),
    "final_return_std": float(np.std(final)),
    "final_return_min": float(np.min(final)),
    "final_return_max": float(np.max(final)),
    "auc_mean": float(np.mean(auc)),
    "auc_std": float(np.std(auc)),
    "greedy_mean": float(np.mean(greedy)),
  }
  return figures, auc


def population_parser(description: str, *, steps: int, chunk: int) -> argparse.ArgumentParser:
  """The command line every population script shares: --members, --steps, --seed, --chunk."""
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--members", type=int, default=8, help="population size (default 8)")
  parser.add_argument("--steps", type=int, default=steps, help=f"environment steps per member (default {steps})")
  parser.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
  parser.add_argument(
    "--chunk", type=int, default=chunk, help=f"env steps per jitted scan / progress tick (default {chunk})"
  )
  return parser


def print_population_result(history: dict, bar: float, steps: int, seconds: float, extra: Sequence[str] = ()) -> str:
  """The per-member table (plus `extra` columns of the history) and how many members reached `bar`."""
  header = ["member", "return(last10)", "alpha", "entropy", "target", *extra]
  rows = [[*r, *(float(history[k][-1, r[0]]) for k in extra)] for r in report(history)]
  print_table(header, rows)
  final = history["return"][-1]
  line = (
    f"{int(np.sum(final >= bar))}/{final.shape[0]} members at mean return >= {bar:.0f} over their last"
    f" 10 episodes after {steps} steps; wall {seconds:.0f} s"
  )
  print(line)
  return line


class Timer:
  """`with Timer() as t: ...; t.seconds`."""

  def __enter__(self) -> Timer:
    self.start = time.perf_counter()
    return self

  def __exit__(self, *exc: object) -> None:
    self.seconds = time.perf_counter() - self.start


def main(argv: Sequence[str] | None = None) -> list[str]:
  parser = argparse.ArgumentParser(
    description="Plot a training history saved by an agent's --out: return.png, alpha.png and entropy.png."
  )
  parser.add_argument("history", help="the .npz file an agent's --out wrote")
  parser.add_argument("--out", required=True, help="folder for the PNGs")
  parser.add_argument("--title", default="SAC", help="the plots' title (default SAC)")
  parser.add_argument("--bar", type=float, default=None, help="return drawn as a dashed line on the return plot")
  args = parser.parse_args(argv)
  with np.load(args.history) as f:
    history = dict(f)
  paths = plot_history(history, args.out, args.title, args.bar)
  print("Wrote " + ", ".join(paths))
  return paths


if __name__ == "__main__":
  main()
