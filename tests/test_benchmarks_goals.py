"""The goal sheet (`benchmarks/goals.toml`) and its grading.

The sheet's goals read figures the measurements write, and its facts figures
the hlo section writes. Grading compares a figure with its goal's limit (a
figure on the wrong side FAILs, one on the right side or at an inclusive
limit PASSes), reports a figure the results lack as n/a, and reports facts
without grading them.
"""

from __future__ import annotations

import argparse
import json

import pytest

from benchmarks import goals, hlo_report, population, single_update, velora_agents


def test_every_goal_reads_a_value_the_measurements_write():
  # The paths name sections, sizes and methods by the modules' own constants.
  methods = {population.DEFAULT, population.FUSED}
  for g in goals.load():
    path = g["value"]
    if path[0] == "population":
      assert path[1] == "sizes" and int(path[2]) in population.SIZES and path[3] in methods, path
      assert path[4] in ("x_floor", "x_faster_than_velora_loop"), path
    elif path[0] == "single":
      assert path[1] in single_update.KINDS and path[2] == single_update.COMPAT, path
      assert path[3] == "speedup_vs_velora", path
    elif path[0] == velora_agents.NAME:
      assert path[1] in velora_agents.CONFIGS and path[2] in velora_agents.AGENTS, path
      assert path[3:] == [velora_agents.STEP, "ratio"], path
    else:
      assert path[0] in ("compile", "import"), path


def test_every_fact_reads_a_figure_the_hlo_section_writes(capsys):
  args = argparse.Namespace(hlo_n=64, batch=32, action_dim=6, repeats=1)
  reported = goals.facts(hlo_report.run(args, []))
  assert reported and all(f["measured"] is not None for f in reported), [f["fact"] for f in reported]
  capsys.readouterr()


def _sheet(kind, limit):
  return [{"text": "speed", "value": ["a", "b"], kind: limit, "format": "{:.2f}x"}]


@pytest.mark.parametrize(
  "kind, limit, value, status",
  [
    ("at_least", 3.0, 3.0, "PASS"),
    ("at_least", 3.0, 2.99, "FAIL"),
    ("at_most", 1.25, 1.25, "PASS"),
    ("at_most", 1.25, 1.26, "FAIL"),
    ("below", 0.5, 0.49, "PASS"),
    ("below", 0.5, 0.5, "FAIL"),
  ],
)
def test_a_figure_is_graded_against_its_limit(kind, limit, value, status):
  [g] = goals.grade({"a": {"b": value}}, _sheet(kind, limit))
  assert g["status"] == status and g["measured"] == value and g["shown"] == f"{value:.2f}x"
  # What a reader needs to quote the figure with its goal.
  assert (g["value"], g["comparison"], g["limit"]) == (["a", "b"], kind, limit)


@pytest.mark.parametrize("results", [{}, {"a": {}}, {"a": 3.0}, {"a": {"b": "fast"}}, {"a": {"b": {"c": 1}}}])
def test_a_figure_the_results_lack_is_not_measured(results):
  [g] = goals.grade(results, _sheet("at_least", 3.0))
  assert (g["status"], g["measured"], g["shown"]) == ("n/a", None, "not measured")


def test_the_report_counts_failed_goals_and_lists_facts_ungraded(capsys):
  sheet = [*_sheet("at_least", 3.0), {"text": "size", "value": ["n"], "at_most": 8, "format": "{:d}"}]
  facts = [
    {"text": "loops", "value": ["hlo", "loops"], "format": "{:d}"},
    {"text": "gone", "value": ["x"], "format": ""},
  ]
  results = {"a": {"b": 2.0}, "hlo": {"loops": 13}}
  goals.print_report(goals.grade(results, sheet), goals.facts(results, facts), only_measured=True)
  out = capsys.readouterr().out
  assert "[FAIL] speed: 2.00x" in out and "1 of 1 goals FAIL" in out
  assert "size" not in out and "gone" not in out  # Not measured: left out.
  assert out.endswith("(information, not graded):\n  loops: 13\n")  # No verdict.


def test_results_md_shows_the_goals_and_the_measured_facts():
  results = {"a": {"b": 4.0}, "hlo": {"loops": 13}}
  results["goals"] = goals.grade(results, _sheet("at_least", 3.0))
  results["facts"] = goals.facts(results, [{"text": "loops", "value": ["hlo", "loops"], "format": "{:d} loops"}])
  md = "\n".join(goals.markdown(results))
  assert "| speed | 4.00x | PASS |" in md and "| loops | 13 loops |" in md
  results["facts"] = goals.facts({}, [{"text": "loops", "value": ["hlo", "loops"], "format": "{:d}"}])
  assert "Facts" not in "\n".join(goals.markdown(results))


def test_a_goal_without_exactly_one_comparison_is_refused(tmp_path):
  sheet = tmp_path / "goals.toml"
  sheet.write_text('[[goal]]\ntext = "t"\nvalue = ["a"]\nformat = "{}"\nat_least = 1.0\nat_most = 2.0\n')
  with pytest.raises(ValueError, match="needs text, value, format and exactly one of"):
    goals.load(sheet)


def test_goals_script_grades_a_results_file(tmp_path, monkeypatch, capsys):
  sheet = tmp_path / "goals.toml"
  sheet.write_text(
    '[[goal]]\ntext = "import time"\nvalue = ["import", "added_s"]\nbelow = 0.2\nformat = "{:.3f} s"\n'
    '[[goal]]\ntext = "speed"\nvalue = ["speed"]\nat_least = 3.0\nformat = "{:.1f}x"\n'
    '[[fact]]\ntext = "loops"\nvalue = ["hlo", "loops"]\nformat = "{:d}"\n'
  )
  monkeypatch.setattr(goals, "SHEET", sheet)
  path = tmp_path / "results.json"
  path.write_text(json.dumps({"import": {"added_s": 0.05}, "hlo": {"loops": 7}}))
  assert goals.main([str(path)]) == 0
  out = capsys.readouterr().out
  assert "[PASS] import time: 0.050 s" in out and "[ n/a] speed: not measured" in out and "loops: 7" in out
  with pytest.raises(SystemExit) as e:
    goals.main([str(tmp_path / "missing.json")])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "argument results" in err and "missing.json" in err
