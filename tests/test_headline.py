"""The headline figures (docs/headline.py): one source for the README and the docs.

The README's and the benchmarks page's tables must equal what the generator
renders from the committed `benchmarks/results/results.json`; the generator
must read its figures from the results (a changed result changes the table)
and give every compat-class method of the results its own row.
"""

import copy
import importlib.util
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("headline", ROOT / "docs" / "headline.py")
headline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(headline)


@pytest.fixture(scope="module")
def results():
  return headline.load()


@pytest.mark.parametrize("path", headline.TARGETS, ids=lambda p: p.name)
def test_quoted_tables_equal_the_generated_one(path, results):
  assert headline.block(path.read_text()) == headline.render(results), (
    f"{path.name}: run `python docs/headline.py` to render the table from the committed results"
  )


def test_figures_come_from_the_results(results):
  changed = copy.deepcopy(results)
  changed["single"]["continuous"]["compat class, NumPy inputs"]["speedup_vs_velora"] = 3.25
  changed["sac"]["entropy_update_share"] = 0.5
  table = dict(headline.rows(changed))
  row = "compat class, NumPy inputs against Velora's module, one update called from Python"
  assert table[row].startswith("3.2x faster")
  assert table["the temperature update in a SAC training step of 8 agents"] == "50.00% of the step"


def test_every_compat_method_gets_a_row(results):
  more = copy.deepcopy(results)
  for kind in ("continuous", "discrete"):
    more["single"][kind]["compat class, torch tensors"] = {"seconds_per_update": 1e-5, "speedup_vs_velora": 20.0}
  names = [m for m, _ in headline.rows(more)]
  assert "compat class, torch tensors against Velora's module, one update called from Python" in names
  assert len(names) == len(headline.rows(results)) + 1


def test_check_reports_a_stale_file(tmp_path, monkeypatch, results):
  stale = tmp_path / "README.md"
  stale.write_text(f"intro\n{headline.BEGIN}\nold\n{headline.END}\nrest\n")
  monkeypatch.setattr(headline, "TARGETS", (stale,))
  monkeypatch.setattr(headline, "ROOT", tmp_path)
  assert headline.main(["--check"]) == 1
  assert headline.main([]) == 0
  assert headline.block(stale.read_text()) == headline.render(results)
  assert stale.read_text().startswith("intro\n") and stale.read_text().endswith("\nrest\n")
