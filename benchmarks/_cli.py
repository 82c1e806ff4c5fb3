"""Command-line pieces shared by every benchmark script.

Every script parses its flags with `parser()`: `--help` lists them, and a bad
flag exits with status 2 and a message that names the flag, the expected and
the received value. Only the standard library is imported here.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple


class _Parser(argparse.ArgumentParser):
  def error(self, message: str):  # type: ignore[override]
    self.print_usage(sys.stderr)
    self.exit(2, f"{self.prog}: error: {message}\nRun `{self.prog} --help` for the options.\n")


def parser(module: str, doc: str | None) -> argparse.ArgumentParser:
  """A parser for `python -m benchmarks.<module>`, described by the first
  paragraph of the module's docstring."""
  first = (doc or "").strip().split("\n\n")[0].replace("\n", " ")
  return _Parser(prog=f"python -m benchmarks.{module}", description=first)


def _integer(text: str, minimum: int, expected: str) -> int:
  try:
    value = int(text.replace("_", ""))
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected {expected}; got {text!r}") from None
  if value < minimum:
    raise argparse.ArgumentTypeError(f"expected {expected}; got {value}")
  return value


def positive_int(text: str) -> int:
  return _integer(text, 1, "a positive integer")


def nonnegative_int(text: str) -> int:
  return _integer(text, 0, "an integer >= 0")


def positive_float(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}") from None
  if not (value > 0 and math.isfinite(value)):
    raise argparse.ArgumentTypeError(f"expected a positive number; got {text!r}")
  return value


def size_list(text: str) -> list[int]:
  """`"1,16,256"` -> `[1, 16, 256]`, sorted and without repeats."""
  sizes = sorted({positive_int(t.strip()) for t in text.split(",") if t.strip()})
  if not sizes:
    raise argparse.ArgumentTypeError(f"expected comma-separated positive integers; got {text!r}")
  return sizes


def subset_of(choices: Sequence[str], what: str) -> Callable[[str], list[str]]:
  """A type for a comma-separated subset of `choices`, returned in their order."""

  def parse(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [n for n in names if n not in choices]
    if unknown or not names:
      raise argparse.ArgumentTypeError(
        f"unknown {what} {unknown or [text]}; expected a comma-separated subset of {','.join(choices)}"
      )
    return [c for c in choices if c in names]

  return parse


def add_timing(p: argparse.ArgumentParser, repeats: int, min_time: float) -> None:
  """`--quick`, `--repeats` and `--min-time`, the flags of `_timing.interleaved`."""
  p.add_argument("--quick", action="store_true", help="a short run: fewer repeats, shorter samples, smaller sizes")
  p.add_argument(
    "--repeats",
    type=positive_int,
    default=None,
    help=f"timed samples per method; the median is reported (default {repeats}, 3 with --quick)",
  )
  p.add_argument(
    "--min-time",
    type=positive_float,
    default=None,
    help=f"seconds each timed sample lasts at least (default {min_time:g}, {min_time / 4:g} with --quick)",
  )


def timing_defaults(args: argparse.Namespace, repeats: int, min_time: float) -> None:
  """Fills `--repeats` and `--min-time` left unset, from `--quick`."""
  if args.repeats is None:
    args.repeats = 3 if args.quick else repeats
  if args.min_time is None:
    args.min_time = min_time / 4 if args.quick else min_time


class ByQuick(NamedTuple):
  """The default of a flag that `--quick` scales: `full`, or `quick` with `--quick`."""

  full: Any
  quick: Any


def add_scaled(
  p: argparse.ArgumentParser, flag: str, *, full: Any, quick: Any, help: str, type: Callable[[str], Any] = positive_int
) -> None:
  """A flag whose default depends on `--quick`; `fill_defaults` sets it after parsing."""
  p.add_argument(flag, type=type, default=ByQuick(full, quick), help=f"{help} (default {full}, {quick} with --quick)")


def fill_defaults(args: argparse.Namespace, module: Any) -> None:
  """Fills what the parsed flags leave to a measurement module: its timing
  defaults, the `add_scaled` flags not passed (for `--quick` or not), then
  its `finish(args)`, where it has one."""
  if module.REPEATS:
    timing_defaults(args, module.REPEATS, module.MIN_TIME)
  for name, value in vars(args).items():
    if isinstance(value, ByQuick):
      setattr(args, name, value.quick if args.quick else value.full)
  finish = getattr(module, "finish", None)
  if finish is not None:
    finish(args)


def add_json(p: argparse.ArgumentParser) -> None:
  p.add_argument("--json", type=pathlib.Path, default=None, metavar="PATH", help="also write the results to this file")


def write_json(path: pathlib.Path | None, results: Any) -> None:
  if path is not None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")


def table(head: list[str], rows: list[list[str]]) -> list[str]:
  """The lines of a markdown table: the first column left-aligned, the others right-aligned."""
  lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
  return lines + ["| " + " | ".join(row) + " |" for row in rows]


def fmt_time(seconds: float) -> str:
  """`2.5e-05` -> `"25.0 us"`."""
  if seconds < 1e-6:
    return f"{seconds * 1e9:.2f} ns"
  if seconds < 1e-3:
    return f"{seconds * 1e6:.1f} us"
  if seconds < 1:
    return f"{seconds * 1e3:.2f} ms"
  return f"{seconds:.2f} s"


def add_shapes(p: argparse.ArgumentParser) -> None:
  """`--batch`, `--action-dim` and `--num-actions`: the shapes of one update."""
  p.add_argument("--batch", type=positive_int, default=256, help="log_probs per update, per member (default 256)")
  p.add_argument(
    "--action-dim",
    type=positive_int,
    default=6,
    help="continuous action dimension; the target is -action_dim (default 6)",
  )
  p.add_argument("--num-actions", type=positive_int, default=6, help="discrete actions A (default 6)")
