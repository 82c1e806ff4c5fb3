"""`python -m benchmarks.<section>`: one measurement module run on its own.

Parses the module's flags, runs it, prints the goals it measured and writes
`--json`. `run.py` runs every section the same way, with one set of flags.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
from typing import Any

from benchmarks import _cli, goals

# The folder this process imports `benchmarks` from, as found (a link is not followed): run from
# there, a fresh process imports the same `benchmarks` and the same installed `entropy_jax`.
HOME = pathlib.Path(__file__).absolute().parent.parent


def fresh_process(module: str, argv: list[str]) -> Any:
  """Runs `python -m benchmarks.<module> *argv` in a fresh process; returns the JSON of its last line."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HOME), env.get("PYTHONPATH")]))
  cmd = [sys.executable, "-m", f"benchmarks.{module}", *argv]
  proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HOME, timeout=600)
  if proc.returncode != 0:
    raise RuntimeError(f"{' '.join(cmd)} failed (rc={proc.returncode}):\n{proc.stderr[-2000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def standalone(module: Any, argv: list[str] | None = None) -> int:
  """Runs `module` as a script; returns its exit status, 0.

  A measurement module defines `NAME` (its section), `REPEATS` and `MIN_TIME`
  (its timing defaults; `REPEATS = None` for one timed otherwise), `SHAPES`
  (whether it takes `--batch`, `--action-dim` and `--num-actions`),
  `add_arguments(parser)` (its flags; `add_scaled` for those whose default
  depends on `--quick`), optionally `finish(args)` (what else the flags
  imply), `run(args, notes)`, which returns its entries of the results
  (`{NAME: ...}`, or more than one), and `markdown(results, args)`, which
  reads them back.
  """
  name = module.__spec__.name if module.__spec__ else module.__name__  # Not "__main__" under -m.
  p = _cli.parser(name.rsplit(".", 1)[-1], module.__doc__)
  if module.REPEATS:
    _cli.add_timing(p, module.REPEATS, module.MIN_TIME)
  else:  # Timed in fresh processes, without `_timing.interleaved`.
    p.add_argument("--quick", action="store_true", help="a short run: fewer fresh processes")
  if module.SHAPES:
    _cli.add_shapes(p)
  module.add_arguments(p)
  _cli.add_json(p)
  args = p.parse_args(argv)
  _cli.fill_defaults(args, module)

  notes: list[str] = []
  results = {**module.run(args, notes), "notes": notes}
  for note in notes:
    print("note: " + note)
  goals.print_report(goals.grade(results), goals.facts(results), only_measured=True)
  _cli.write_json(args.json, results)
  return 0
