"""The headline figures (docs/headline.py): one source for the README and the docs.

The README's and the benchmarks page's tables equal what the generator renders
from the committed `benchmarks/results/results.json`. The rendering itself is
checked on small made-up results graded by `benchmarks.goals`: a figure is
read from the results, a figure with a goal shows the goal and the run's
verdict, a FAIL is marked FAIL, a comparison in our disfavour is worded as
slower, and every compat-class method gets its row.
"""

import copy
import importlib.util
import pathlib

import pytest

from benchmarks import goals

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("headline", ROOT / "docs" / "headline.py")
headline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(headline)

SCAN = "inside lax.scan (10 updates per call), per update"
NUMPY = "compat class, NumPy inputs"
DEFAULT = "vmap(apply_gradients(grad(continuous_loss))), entropy_jax.adam (default)"
SHEET = [
  {"text": "numpy, continuous", "value": ["single", "continuous", NUMPY, "speedup_vs_velora"], "at_least": 3.0},
  {"text": "numpy, discrete", "value": ["single", "discrete", NUMPY, "speedup_vs_velora"], "at_least": 3.0},
  {"text": "NeuroFlow step", "value": ["agents", "async", "NeuroFlow", "training step", "ratio"], "at_most": 1.0},
  {"text": "floor", "value": ["population", "sizes", "64", DEFAULT, "x_floor"], "at_most": 1.25},
  {"text": "import", "value": ["import", "added_s"], "below": 0.2},
]


def _results(continuous=4.0, discrete=0.8, neuroflow=1.047, floor=1.5, sheet=SHEET):
  """Made-up results of a run, graded against `sheet`."""
  single = {
    kind: {SCAN: {"seconds_per_update": 2e-6, "speedup_vs_velora": 100.0}, NUMPY: {"speedup_vs_velora": speedup}}
    for kind, speedup in (("continuous", continuous), ("discrete", discrete))
  }
  step = {"NeuroFlowCT": 0.98, "NeuroFlow": neuroflow}
  results = {
    "machine": {"date_utc": "2030-01-02T03:04:05", "cpus_usable": 2, "cpu": "Test", "versions": {"jax": "9.9"}},
    "single": single,
    "sac": {"members": 4, "entropy_update_share": 0.002},
    "agents": {c: {n: {"training step": {"ratio": r}} for n, r in step.items()} for c in ("async", "sync")},
    "population": {
      "sizes": {
        "64": {
          DEFAULT: {"x_floor": floor, "x_faster_than_velora_loop": 700.0},
          headline.VELORA_LOOP: {"seconds": 1.0},
        }
      }
    },
    "compile": {"continuous": {"first_call_s": 0.3}},
    "import": {"added_s": 0.05},
  }
  results["goals"] = goals.grade(results, [{**g, "format": "{}"} for g in sheet])
  return results


def _table(results):
  return {m: (r, g, v) for m, r, g, v in headline.rows(results)}


@pytest.mark.parametrize("path", headline.TARGETS, ids=lambda p: p.name)
def test_quoted_tables_equal_the_generated_one(path):
  assert headline.block(path.read_text()) == headline.render(headline.load()), (
    f"{path.name}: run `python docs/headline.py` to render the table from the committed results"
  )


def test_a_figure_with_a_goal_shows_the_goal_and_the_runs_verdict():
  table = _table(_results())
  assert table[f"one continuous update called from Python: {NUMPY}, against Velora's module"] == (
    "4.0x faster",
    "at least 3x faster",
    "PASS",
  )
  floor = table["64 members x 256 log-probabilities, one update"]
  assert floor[0].startswith("1.50x the memory-bound") and floor[1:] == ("at most 1.25x the floor", "FAIL")
  assert table["`import entropy_jax` on top of jax, optax, flax, chex"] == ("0.05 s", "under 0.2 s", "PASS")
  assert "| at most 1.25x the floor | FAIL |" in headline.render(_results())


def test_a_comparison_in_our_disfavour_is_worded_slower_and_fails_its_goal():
  table = _table(_results(discrete=0.8, neuroflow=1.047))
  assert table[f"one discrete update called from Python: {NUMPY}, against Velora's module"] == (
    "1.2x slower",
    "at least 3x faster",
    "FAIL",
  )
  step = "a whole training step of Velora's {} with the compat classes, against Velora's modules"
  assert table[step.format("NeuroFlow")] == ("4.7% slower", "no slower", "FAIL")
  # A figure of the same measurement without a goal gets its own row, with no verdict.
  assert table[step.format("NeuroFlowCT")] == ("2.0% faster", headline.NONE, "")
  assert "slower" not in "".join(r for r, _, _ in _table(_results(discrete=3.5, neuroflow=0.99)).values())


def test_figures_without_goals_share_a_row_without_a_verdict():
  table = _table(_results(sheet=[]))
  assert table[f"one update called from Python: {NUMPY}, against Velora's module"] == (
    "4.0x faster continuous; 1.2x slower discrete",
    headline.NONE,
    "",
  )
  assert table["64 members vmapped against a loop over Velora modules"] == ("700x faster", headline.NONE, "")
  assert all(v == "" for _, _, v in table.values())


def test_figures_come_from_the_results():
  results = _results()
  results["single"]["continuous"][NUMPY]["speedup_vs_velora"] = 3.25
  results["sac"]["entropy_update_share"] = 0.5
  table = _table(results)
  assert table[f"one continuous update called from Python: {NUMPY}, against Velora's module"][0] == "3.2x faster"
  assert table["the temperature update in a SAC training step of 4 agents"][0] == "50.00% of the step"


def test_every_compat_method_gets_a_row():
  results = _results()
  more = copy.deepcopy(results)
  for kind in ("continuous", "discrete"):
    more["single"][kind]["compat class, torch tensors"] = {"seconds_per_update": 1e-5, "speedup_vs_velora": 20.0}
  table = _table(more)
  row = "one update called from Python: compat class, torch tensors, against Velora's module"
  assert table[row] == ("20.0x faster continuous; 20.0x faster discrete", headline.NONE, "")
  assert len(table) == len(_table(results)) + 1


def test_check_reports_a_stale_file(tmp_path, monkeypatch):
  stale = tmp_path / "README.md"
  stale.write_text(f"intro\n{headline.BEGIN}\nold\n{headline.END}\nrest\n")
  monkeypatch.setattr(headline, "TARGETS", (stale,))
  monkeypatch.setattr(headline, "ROOT", tmp_path)
  monkeypatch.setattr(headline, "load", _results)
  assert headline.main(["--check"]) == 1
  assert headline.main([]) == 0
  assert headline.main(["--check"]) == 0
  assert headline.block(stale.read_text()) == headline.render(_results())
  assert stale.read_text().startswith("intro\n") and stale.read_text().endswith("\nrest\n")
