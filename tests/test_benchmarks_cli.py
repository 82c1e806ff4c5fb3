"""The benchmark runner's command line (no timing is asserted anywhere).

A bad flag exits with status 2 and a message naming the flag, the expected
and the received value; population sizes follow `--max-n`; each section gets
its own timing defaults; the recorded command holds no machine path; `--regrade`
grades the results again without measuring.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from benchmarks import goals, population, run


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


def test_the_recorded_command_names_the_output_directory_without_the_machines_path(tmp_path):
  inside = run.DEFAULT_OUT / "gpu"
  assert run.portable(inside) == str(pathlib.Path("benchmarks", "results", "gpu"))
  assert run.portable(tmp_path / "out") == "out"
  argv = ["--quick", "--out", str(tmp_path / "out"), "--sections", "hlo"]
  assert run.command_line(argv, tmp_path / "out") == "python -m benchmarks.run --quick --out out --sections hlo"
  assert run.command_line([f"--out={inside}"], inside) == "python -m benchmarks.run --out=benchmarks/results/gpu"


def test_merge_replaces_the_sections_run_and_keeps_the_others():
  previous = {
    "machine": {"date_utc": "old"},
    "sections": ["single", "agents"],
    "args": {"single": {"repeats": 9}, "agents": {"repeats": 41}},
    "notes": ["an old note"],
    "section_wall_s": {"single": 10.0, "agents": 90.0},
    "single": {"kept": 1},
    "agents": {"old": 1},
    "goals": [],
  }
  new = {
    "machine": {"date_utc": "new"},
    "sections": ["agents", "hlo"],
    "args": {"agents": {"repeats": 3}, "hlo": {"repeats": 1}},
    "notes": ["an old note", "a new note"],
    "section_wall_s": {"agents": 5.0, "hlo": 1.0},
    "agents": {"new": 2},
    "hlo": {"new": 3},
    "wall_s": 6.0,
  }
  out = run.merged(previous, new, ["agents", "hlo"])
  assert out["machine"] == {"date_utc": "old"} and out["single"] == {"kept": 1}
  assert out["agents"] == {"new": 2} and out["hlo"] == {"new": 3}
  assert out["sections"] == ["single", "agents", "hlo"] and out["notes"] == ["an old note", "a new note"]
  assert out["args"] == {"single": {"repeats": 9}, "agents": {"repeats": 3}, "hlo": {"repeats": 1}}
  assert out["section_wall_s"] == {"single": 10.0, "agents": 5.0, "hlo": 1.0}
  assert out["merged"] == {"agents": {"date_utc": "new"}, "hlo": {"date_utc": "new"}}
  assert previous["sections"] == ["single", "agents"] and "merged" not in previous  # Not changed in place.


def test_regrade_grades_the_results_again_and_measures_nothing(tmp_path, monkeypatch, capsys):
  measured = json.loads((run.DEFAULT_OUT / "results.json").read_text())
  (tmp_path / "results.json").write_text(json.dumps(measured))
  sheet = tmp_path / "goals.toml"
  sheet.write_text('[[goal]]\ntext = "import time"\nvalue = ["import", "added_s"]\nbelow = 1e-9\nformat = "{:.3f} s"\n')
  monkeypatch.setattr(goals, "SHEET", sheet)
  assert run.main(["--regrade", "--out", str(tmp_path)]) == 0
  regraded = json.loads((tmp_path / "results.json").read_text())
  assert [(g["goal"], g["status"]) for g in regraded["goals"]] == [("import time", "FAIL")]
  assert regraded["facts"] == []
  assert {k: v for k, v in regraded.items() if k not in ("goals", "facts")} == {
    k: v for k, v in measured.items() if k not in ("goals", "facts")
  }
  md = (tmp_path / "results.md").read_text()
  assert f"| import time | {measured['import']['added_s']:.3f} s | FAIL |" in md and "## Population scaling" in md
  assert "1 of 1 goals FAIL" in capsys.readouterr().out
