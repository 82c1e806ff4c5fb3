"""The goal sheet (`goals.toml`), graded against a run's results.

  python -m benchmarks.goals [benchmarks/results/results.json]

prints each goal of a run's results with PASS, FAIL or n/a (not measured in
that run), and flags a failed goal as a regression; it exits with status 1
when a structure goal (one on the compiled program, not on a timing) fails.
"""

from __future__ import annotations

import json
import pathlib
import sys
import tomllib
from typing import Any

from benchmarks import _cli

SHEET = pathlib.Path(__file__).resolve().parent / "goals.toml"
COMPARISONS = {
  "at_least": (">=", lambda v, x: v >= x),
  "at_most": ("<=", lambda v, x: v <= x),
  "below": ("<", lambda v, x: v < x),
}


def load(path: pathlib.Path = SHEET) -> list[dict[str, Any]]:
  """The goals of the sheet, each checked to have one comparison."""
  goals = tomllib.loads(path.read_text())["goal"]
  for g in goals:
    found = [k for k in COMPARISONS if k in g]
    if len(found) != 1 or not {"text", "value", "format"} <= set(g):
      raise ValueError(
        f"goals.load: goal {g.get('text')!r} in {path} needs text, value, format and exactly one of"
        f" {sorted(COMPARISONS)}; got keys {sorted(g)}."
      )
  return goals


def lookup(results: dict[str, Any], path: list[str]) -> float | None:
  node: Any = results
  for key in path:
    if not isinstance(node, dict) or key not in node:
      return None
    node = node[key]
  return node if isinstance(node, (int, float)) else None


def grade(results: dict[str, Any], goals: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
  """Each goal with its measured value and status: PASS, FAIL or n/a."""
  out = []
  for g in load() if goals is None else goals:
    [kind] = [k for k in COMPARISONS if k in g]
    symbol, holds = COMPARISONS[kind]
    value = lookup(results, g["value"])
    status = "n/a" if value is None else ("PASS" if holds(value, g[kind]) else "FAIL")
    out.append(
      {
        "goal": g["text"],
        "measured": value,
        "threshold": f"{symbol} {g[kind]:g}",
        "shown": "not measured" if value is None else g["format"].format(value),
        "status": status,
        "structure": bool(g.get("structure", False)),
      }
    )
  return out


def print_goals(graded: list[dict[str, Any]], only_measured: bool = False) -> int:
  """Prints the goals and a regression line for each failed one; returns the
  exit status: 1 if a structure goal failed, else 0."""
  shown = [g for g in graded if not (only_measured and g["status"] == "n/a")]
  if shown:
    print("Goals:")
  for g in shown:
    print(f"  [{g['status']:>4s}] {g['goal']}: {g['shown']}")
  failed = [g for g in graded if g["status"] == "FAIL"]
  for g in failed:
    kind = "structure of the compiled update" if g["structure"] else "timing; check the machine's load"
    print(f"REGRESSION ({kind}): {g['goal']}: {g['shown']}, expected {g['threshold']}")
  return int(any(g["structure"] for g in failed))


def main(argv: list[str] | None = None) -> int:
  p = _cli.parser("goals", __doc__)
  p.add_argument(
    "results",
    type=pathlib.Path,
    nargs="?",
    default=SHEET.parent / "results" / "results.json",
    help="a results.json written by python -m benchmarks.run (default benchmarks/results/results.json)",
  )
  args = p.parse_args(argv)
  try:
    results = json.loads(args.results.read_text())
  except (OSError, ValueError) as e:
    p.error(f"argument results: cannot read {args.results}: {e}")
  return print_goals(grade(results))


if __name__ == "__main__":
  sys.exit(main())
