"""The goal sheet (`goals.toml`), graded against a run's results.

  python -m benchmarks.goals [benchmarks/results/results.json]

prints each goal of a run's results with PASS, FAIL or n/a (not measured in
that run) and how many fail, then the sheet's facts about the compiled
update, which are information and never graded.
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


def load(path: pathlib.Path | None = None) -> list[dict[str, Any]]:
  """The goals of the sheet (default `SHEET`), each checked to have one comparison."""
  path = SHEET if path is None else path
  goals = tomllib.loads(path.read_text())["goal"]
  for g in goals:
    found = [k for k in COMPARISONS if k in g]
    if len(found) != 1 or not {"text", "value", "format"} <= set(g):
      raise ValueError(
        f"goals.load: goal {g.get('text')!r} in {path} needs text, value, format and exactly one of"
        f" {sorted(COMPARISONS)}; got keys {sorted(g)}."
      )
  return goals


def load_facts(path: pathlib.Path | None = None) -> list[dict[str, Any]]:
  """The facts of the sheet (default `SHEET`): figures reported with the goals, never graded."""
  return tomllib.loads((SHEET if path is None else path).read_text()).get("fact", [])


def lookup(results: dict[str, Any], path: list[str]) -> float | None:
  node: Any = results
  for key in path:
    if not isinstance(node, dict) or key not in node:
      return None
    node = node[key]
  return node if isinstance(node, (int, float)) else None


def grade(results: dict[str, Any], goals: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
  """Each goal with its measured value and status: PASS, FAIL or n/a.

  `value` (the path into the results), `comparison` (`at_least`, `at_most` or
  `below`) and `limit` let a reader quote a figure with its goal."""
  out = []
  for g in load() if goals is None else goals:
    [kind] = [k for k in COMPARISONS if k in g]
    symbol, holds = COMPARISONS[kind]
    value = lookup(results, g["value"])
    status = "n/a" if value is None else ("PASS" if holds(value, g[kind]) else "FAIL")
    out.append(
      {
        "goal": g["text"],
        "value": list(g["value"]),
        "comparison": kind,
        "limit": g[kind],
        "measured": value,
        "threshold": f"{symbol} {g[kind]:g}",
        "shown": "not measured" if value is None else g["format"].format(value),
        "status": status,
      }
    )
  return out


def facts(results: dict[str, Any], sheet: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
  """Each fact with its value as the results hold it, or "not measured"."""
  out = []
  for f in load_facts() if sheet is None else sheet:
    value = lookup(results, f["value"])
    shown = "not measured" if value is None else f["format"].format(value)
    out.append({"fact": f["text"], "value": list(f["value"]), "measured": value, "shown": shown})
  return out


def print_report(graded: list[dict[str, Any]], reported: list[dict[str, Any]], only_measured: bool = False) -> None:
  """Prints the goals, how many of them fail, then the facts."""
  goals = [g for g in graded if not (only_measured and g["status"] == "n/a")]
  if goals:
    print("Goals:", *(f"  [{g['status']:>4s}] {g['goal']}: {g['shown']}" for g in goals), sep="\n")
  failed = sum(g["status"] == "FAIL" for g in goals)
  if failed:
    print(f"{failed} of {len(goals)} goals FAIL; timings move with the machine's load (see the run's load average).")
  known = [f for f in reported if not (only_measured and f["measured"] is None)]
  if known:
    print("Facts about the compiled update (information, not graded):")
    print(*(f"  {f['fact']}: {f['shown']}" for f in known), sep="\n")


def markdown(results: dict[str, Any]) -> list[str]:
  """The goals and the facts of `results`, as results.md shows them."""
  rows = [[g["goal"], g["shown"], g["status"]] for g in results["goals"]]
  lines = ["## Goals", "", *_cli.table(["goal", "measured", "result"], rows)]
  known = [[f["fact"], f["shown"]] for f in results.get("facts", []) if f["measured"] is not None]
  if known:
    lines += [
      "",
      "## Facts about the compiled update",
      "",
      "What XLA made of the population update in this run: information that depends on the jaxlib, not goals.",
      "",
      *_cli.table(["fact", "value"], known),
    ]
  return lines


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
  print_report(grade(results), facts(results))
  return 0


if __name__ == "__main__":
  sys.exit(main())
