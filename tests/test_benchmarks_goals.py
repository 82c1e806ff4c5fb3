"""The goal sheet (`benchmarks/goals.toml`) and its grading."""

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
    elif path[0] == "hlo":
      assert g.get("structure") is True, path
    elif path[0] == velora_agents.NAME:
      assert path[1] in velora_agents.CONFIGS and path[2] in velora_agents.AGENTS, path
      assert path[3:] == [velora_agents.STEP, "ratio"], path
    else:
      assert path[0] in ("compile", "import"), path


def test_every_structure_goal_reads_a_figure_the_hlo_section_writes(capsys):
  # Whether the figures meet the goals depends on the XLA version; that they
  # are measured does not.
  args = argparse.Namespace(hlo_n=64, batch=32, action_dim=6, repeats=1)
  graded = [g for g in goals.grade(hlo_report.run(args, [])) if g["structure"]]
  assert len(graded) == sum(bool(g.get("structure")) for g in goals.load()) >= 9
  assert all(g["status"] in ("PASS", "FAIL") for g in graded), [g["goal"] for g in graded if g["status"] == "n/a"]
  capsys.readouterr()


def test_a_failed_structure_goal_is_flagged_and_sets_the_exit_status(capsys):
  sheet = [
    {"text": "loops", "value": ["hlo", "n"], "at_most": 3, "format": "{:d}", "structure": True},
    {"text": "speed", "value": ["t"], "at_least": 2.0, "format": "{:.1f}x"},
  ]
  assert goals.print_goals(goals.grade({"hlo": {"n": 3}, "t": 1.0}, sheet)) == 0
  assert "REGRESSION (timing; check the machine's load): speed: 1.0x, expected >= 2" in capsys.readouterr().out
  assert goals.print_goals(goals.grade({"hlo": {"n": 4}, "t": 3.0}, sheet)) == 1
  assert "REGRESSION (structure of the compiled update): loops: 4, expected <= 3" in capsys.readouterr().out


def _status(results, start):
  [g] = [g for g in goals.grade(results) if g["goal"].startswith(start)]
  return g["status"], g["shown"]


def _population(n, method, key, value):
  return {"population": {"sizes": {str(n): {method: {key: value}}}}}


@pytest.mark.parametrize("value, status", [(3.0, "PASS"), (2.99, "FAIL")])
def test_compat_speedup_is_at_least_3x(value, status):
  results = {"single": {"continuous": {single_update.COMPAT: {"speedup_vs_velora": value}}}}
  assert _status(results, "compat class, continuous")[0] == status
  assert _status(results, "compat class, discrete") == ("n/a", "not measured")


@pytest.mark.parametrize("n, limit", [(16384, 2.0), (131072, 1.25)])
def test_the_population_goals_are_at_most_their_limit_times_the_floor(n, limit):
  text = f"N={n}, vmap(apply_gradients(grad(continuous_loss))), default optimizer"
  assert _status(_population(n, population.DEFAULT, "x_floor", limit), text) == ("PASS", f"{limit:.2f}x")
  assert _status(_population(n, population.DEFAULT, "x_floor", limit + 0.01), text)[0] == "FAIL"
  # Another method's ratio at that size does not count.
  assert _status(_population(n, population.OPTAX, "x_floor", 1.0), text)[0] == "n/a"


def test_velora_loop_compile_and_import_goals():
  results = {
    "population": {
      "sizes": {
        "1024": {
          population.FUSED: {"x_faster_than_velora_loop": 499.0},
          population.DEFAULT: {"x_faster_than_velora_loop": 500.0},
        }
      }
    },
    "compile": {"continuous": {"first_call_s": 0.49}, "discrete": {"first_call_s": 0.5}},
    "import": {"added_s": 0.2},
  }
  assert _status(results, "N=1024, vmap(continuous_update)")[0] == "FAIL"
  assert _status(results, "N=1024, vmap(apply_gradients")[0] == "PASS"
  assert _status(results, "first call (trace + compile + run) of jit(continuous_update)") == ("PASS", "0.490 s")
  assert _status(results, "first call (trace + compile + run) of jit(discrete_update)")[0] == "FAIL"
  assert _status(results, "first call (trace + compile + run) of jit(vmap")[0] == "n/a"
  assert _status(results, "import entropy_jax adds")[0] == "FAIL"


def test_a_goal_without_exactly_one_comparison_is_refused(tmp_path):
  sheet = tmp_path / "goals.toml"
  sheet.write_text('[[goal]]\ntext = "t"\nvalue = ["a"]\nformat = "{}"\nat_least = 1.0\nat_most = 2.0\n')
  with pytest.raises(ValueError, match="needs text, value, format and exactly one of"):
    goals.load(sheet)


def test_goals_script_grades_a_results_file(tmp_path, capsys):
  path = tmp_path / "results.json"
  path.write_text(json.dumps({"import": {"added_s": 0.05}}))
  assert goals.main([str(path)]) == 0
  out = capsys.readouterr().out
  assert "[PASS] import entropy_jax adds under 0.2 s to import jax, optax, flax, chex: 0.050 s" in out
  assert "[ n/a] compat class, continuous" in out
  with pytest.raises(SystemExit) as e:
    goals.main([str(tmp_path / "missing.json")])
  assert e.value.code == 2
  assert "cannot read" in capsys.readouterr().err
