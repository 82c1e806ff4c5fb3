"""Every benchmark of entropy_jax in one run, graded against the goal sheet.

  python -m benchmarks.run                  # everything (make bench)
  python -m benchmarks.run --quick          # a short smoke run
  python -m benchmarks.run --sections population,hlo
  python -m benchmarks.run --max-n 1048576  # a larger population (a GPU)
  python -m benchmarks.run --sections agents --merge  # re-measure a section into the committed results
  python -m benchmarks.run --regrade        # the committed results against an edited goals.toml

Runs the measurements in turn (`--sections`), each its own module that also
runs alone as `python -m benchmarks.<module>`, on jax's default backend;
grades the goals of `goals.toml` and reports its facts; and writes
`results.json`, `results.md` and `population.png` into `--out`, with the
date, the machine and its load.
"""

from __future__ import annotations

import copy
import json
import pathlib
import sys
import time
from typing import Any

from benchmarks import (
  _cli,
  _machine,
  compile_import,
  goals,
  hlo_report,
  optimizer_cost,
  population,
  sac,
  single_update,
  velora_agents,
)

MODULES = {
  m.NAME: m for m in (single_update, velora_agents, population, optimizer_cost, hlo_report, sac, compile_import)
}
SECTIONS = tuple(MODULES)
DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None):
  p = _cli.parser("run", __doc__)
  p.add_argument(
    "--sections",
    type=_cli.subset_of(SECTIONS, "section(s)"),
    default=list(SECTIONS),
    help="comma-separated subset of " + ",".join(SECTIONS) + " (default all)",
  )
  p.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="output directory (default benchmarks/results)")
  p.add_argument("--no-plot", action="store_true", help="skip population.png")
  p.add_argument(
    "--merge",
    action="store_true",
    help="merge the sections run into --out's results.json, keeping the other sections as they were measured",
  )
  p.add_argument(
    "--regrade",
    action="store_true",
    help="measure nothing: grade --out's results.json against goals.toml again and rewrite results.json and results.md",
  )
  p.add_argument("--quick", action="store_true", help="a short run: fewer repeats, shorter samples, smaller sizes")
  p.add_argument(
    "--repeats",
    type=_cli.positive_int,
    default=None,
    help="timed samples per method, for every section (default: each section's own, 3 with --quick)",
  )
  p.add_argument(
    "--min-time",
    type=_cli.positive_float,
    default=None,
    help="seconds each timed sample lasts at least (default: each section's own)",
  )
  _cli.add_shapes(p)
  for module in MODULES.values():
    module.add_arguments(p)
  return p.parse_args(argv)


def portable(path: pathlib.Path) -> str:
  """`path` as the results record it: relative to the repository when inside
  it, else its last component, so that no machine's layout is committed."""
  path = path.resolve()
  try:
    return str(path.relative_to(DEFAULT_OUT.parents[1]))
  except ValueError:
    return path.name


def command_line(argv: list[str], out: pathlib.Path) -> str:
  """The command that produced a run, with `--out` written as `portable` writes it."""
  words = list(argv)
  for i, word in enumerate(words):
    if word == "--out" and i + 1 < len(words):
      words[i + 1] = portable(out)
    elif word.startswith("--out="):
      words[i] = "--out=" + portable(out)
  return " ".join(["python -m benchmarks.run", *words])


def section_args(args, module):
  """The run's flags with the section's own defaults filled in."""
  margs = copy.copy(args)
  _cli.fill_defaults(margs, module)
  return margs


def markdown(results: dict[str, Any]) -> str:
  m = results["machine"]
  v = m["versions"]
  lines = [
    "# entropy_jax benchmarks",
    "",
    f"Produced by `{m['command']}` on {m['date_utc']}: {m['cpu']} ({m['cpus_usable']} usable CPUs,"
    f" {m['memory_total_gb']} GB), backend `{m['backend']}` ({', '.join(m['devices'])}), load average"
    f" {m['loadavg_start']} at the start and {m.get('loadavg_end')} at the end. Python {m['python']}, jax {v['jax']},"
    f" jaxlib {v['jaxlib']}, optax {v['optax']}, flax {v['flax']}, chex {v['chex']}, torch {v['torch']},"
    f" velora {v['velora']}.",
    "",
    "Medians of interleaved repeats (see benchmarks/README.md). Ratios are the figures to quote; absolute"
    " times depend on the machine and its load.",
  ]
  lines += [""] + [f"- {note}" for note in results["notes"]] if results["notes"] else []
  for name, again in results.get("merged", {}).items():
    lines += [
      "",
      f"Section `{name}` measured again by `{again['command']}` on {again['date_utc']}, load average"
      f" {again['loadavg_start']} at the start and {again.get('loadavg_end')} at the end.",
    ]
  for name in results["sections"]:
    lines += ["", *MODULES[name].markdown(results, results["args"][name])]
  lines += ["", *goals.markdown(results)]
  return "\n".join(lines) + "\n"


def merged(previous: dict[str, Any], new: dict[str, Any], sections: list[str]) -> dict[str, Any]:
  """`previous` results with the entries of `sections` taken from `new`, and `new`'s machine recorded for them."""
  out = copy.deepcopy(previous)
  out.update({k: v for k, v in new.items() if k not in RUN_KEYS})
  for key in ("args", "section_wall_s"):
    out[key] = {**previous.get(key, {}), **new[key]}
  out["sections"] = [*previous["sections"], *(s for s in sections if s not in previous["sections"])]
  out["notes"] = [*previous["notes"], *(n for n in new["notes"] if n not in previous["notes"])]
  out.setdefault("merged", {}).update({name: new["machine"] for name in sections})
  return out


RUN_KEYS = ("machine", "sections", "args", "notes", "section_wall_s", "wall_s", "goals", "facts", "merged")


def write(results: dict[str, Any], out: pathlib.Path) -> None:
  """Grades `results` against the goal sheet, adds its facts, and writes results.json and results.md into `out`."""
  results["goals"], results["facts"] = goals.grade(results), goals.facts(results)
  out.mkdir(parents=True, exist_ok=True)
  (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
  (out / "results.md").write_text(markdown(results))


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  if args.regrade:
    results = json.loads((args.out / "results.json").read_text())
    write(results, args.out)
    goals.print_report(results["goals"], results["facts"])
    print(f"Graded the results in {args.out} again, measuring nothing; wrote results.json, results.md.")
    return 0
  start = time.perf_counter()
  import jax

  command = command_line(sys.argv[1:] if argv is None else list(argv), args.out)
  results: dict[str, Any] = {
    "machine": _machine.machine_info(command),
    "sections": args.sections,
    "args": {},
    "notes": [],
    "section_wall_s": {},
  }
  print(
    f"entropy_jax benchmarks on {jax.default_backend()} ({results['machine']['cpu']}), load average"
    f" {results['machine']['loadavg_start']}; sections {','.join(args.sections)}",
    flush=True,
  )
  for i, name in enumerate(args.sections, 1):
    module = MODULES[name]
    margs = section_args(args, module)
    print(f"{i}. {name}: {module.__doc__.strip().splitlines()[0]}", flush=True)
    t0 = time.perf_counter()
    notes: list[str] = []
    results.update(module.run(margs, notes))
    results["notes"] += [n for n in notes if n not in results["notes"]]
    results["section_wall_s"][name] = round(time.perf_counter() - t0, 1)
    results["args"][name] = {k: portable(v) if isinstance(v, pathlib.Path) else v for k, v in vars(margs).items()}
  results["machine"]["loadavg_end"] = _machine.loadavg()
  results["wall_s"] = round(time.perf_counter() - start, 1)
  this_run, wall = results["machine"], results["wall_s"]
  if args.merge:
    results = merged(json.loads((args.out / "results.json").read_text()), results, args.sections)
  write(results, args.out)
  written = ["results.json", "results.md"]
  if not args.no_plot and "population" in args.sections and results.get("population", {}).get("sizes"):
    population.plot(results["population"], results["machine"], args.batch, args.out / "population.png")
    written.append("population.png")
  for note in results["notes"]:
    print("note: " + note)
  goals.print_report(results["goals"], results["facts"])
  print(
    f"Load average {this_run['loadavg_start']} at the start, {this_run['loadavg_end']} at"
    f" the end. Wrote {', '.join(written)} to {args.out} in {wall:.0f} s."
  )
  return 0


if __name__ == "__main__":
  sys.exit(main())
