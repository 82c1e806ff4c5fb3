"""The benchmark scripts' command lines (no timing is asserted anywhere).

Every script answers `--help` and refuses a bad flag with exit status 2 and a
message naming the flag, the expected and the received value; population
sizes follow `--max-n`.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from benchmarks import population, run

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPTS = [
  "run",
  "single_update",
  "population",
  "optimizer_cost",
  "hlo_report",
  "sac",
  "compile_import",
  "goals",
  "_fresh",
]


def _run(*argv: str) -> subprocess.CompletedProcess:
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
  return subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_has_help_and_refuses_a_bad_flag(script):
  helped = _run(f"benchmarks.{script}", "--help")
  assert helped.returncode == 0, helped.stderr
  assert f"usage: python -m benchmarks.{script}" in helped.stdout
  bad = _run(f"benchmarks.{script}", "--bogus")
  assert bad.returncode == 2
  assert "unrecognized arguments: --bogus" in bad.stderr and "--help" in bad.stderr


def test_the_runner_lists_every_sections_flags(capsys):
  with pytest.raises(SystemExit) as e:
    run.parse_args(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  for flag in (
    "--quick",
    "--sections",
    "--out",
    "--repeats",
    "--max-n",
    "--sizes",
    "--loop-max-n",
    "--scan-k",
    "--optimizer-n",
    "--hlo-n",
    "--members",
    "--steps",
    "--fresh-repeats",
    "--compile-targets",
  ):
    assert flag in out


@pytest.mark.parametrize(
  "argv, message",
  [
    (["--repeats", "0"], "argument --repeats: expected a positive integer; got 0"),
    (["--max-n", "many"], "argument --max-n: expected a positive integer; got 'many'"),
    (["--sizes", "16,x"], "argument --sizes: expected a positive integer; got 'x'"),
    (["--sizes", ","], "argument --sizes: expected comma-separated positive integers; got ','"),
    (["--sections", "single,warp"], "argument --sections: unknown section(s) ['warp']"),
    (["--min-time", "nan"], "argument --min-time: expected a positive number; got 'nan'"),
    (["--warm-cache-repeats", "-1"], "argument --warm-cache-repeats: expected an integer >= 0; got -1"),
    (["--compile-targets", "continuous,gpu"], "argument --compile-targets: unknown compile target(s) ['gpu']"),
  ],
)
def test_bad_values_exit_2_with_a_message(argv, message, capsys):
  with pytest.raises(SystemExit) as e:
    run.parse_args(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert message in err and "Run `python -m benchmarks.run --help` for the options." in err


def _sizes(argv):
  args = run.section_args(run.parse_args(argv), population)
  return args.sizes


def test_sizes_follow_max_n(capsys):
  assert _sizes([]) == [1, 16, 256, 1024, 16384, 131072]
  assert _sizes(["--quick"]) == [1, 16, 256, 1024, 16384]
  assert _sizes(["--max-n", "1048576"])[-2:] == [131072, 1048576]
  assert _sizes(["--max-n", "300"]) == [1, 16, 256]
  assert _sizes(["--sizes", "64,8,8", "--max-n", "32"]) == [8]
  assert "[64] exceed --max-n 32" in capsys.readouterr().out


def test_each_section_gets_its_own_timing_defaults_unless_given():
  args = run.parse_args([])
  assert run.section_args(args, population).repeats == population.REPEATS
  from benchmarks import optimizer_cost, sac

  assert run.section_args(args, optimizer_cost).min_time == optimizer_cost.MIN_TIME
  assert run.section_args(args, sac).repeats == sac.REPEATS
  assert run.section_args(run.parse_args(["--repeats", "4"]), sac).repeats == 4
  assert run.section_args(run.parse_args(["--quick"]), population).repeats == 3
  assert args.repeats is None  # The run's own namespace is left as parsed.


def test_population_bytes_counts_the_log_probs_twice_and_the_states():
  assert population.population_bytes(1, 256) == 2 * 256 * 4 + 64 * 4
  assert population.population_bytes(131072, 256) == 2 * 131072 * 256 * 4 + 64 * 131072 * 4
