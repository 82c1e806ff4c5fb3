"""What the scripts around the agents share (examples/reporting.py): tables and plots.

The table's cells and the per-member report against the history they come
from; the plots as real PNG files, written from a history and from a saved
`.npz` through the module's command line.
"""

import os

import numpy as np
import pytest

from examples import reporting

pytest.importorskip("matplotlib")  # the `examples` extra
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def history():
  t, n = 6, 3
  return {
    "steps": np.repeat(np.arange(t)[:, None] * 100, n, 1),
    "return": np.linspace(-1000, -150, t * n).reshape(t, n),
    "alpha": np.geomspace(1.0, 0.05, t * n).reshape(t, n),
    "entropy": np.linspace(1.0, -1.0, t * n).reshape(t, n),
    "target": np.full((t, n), -1.0),
    "alpha_lr": np.full((t, n), 1e-3),
  }


def _assert_png(path):
  assert os.path.getsize(path) > 10_000
  with open(path, "rb") as f:
    assert f.read(8) == PNG


def test_print_table_formats_floats_and_aligns(capsys):
  text = reporting.print_table(["member", "alpha"], [[0, 0.123456], [1, 2.0]])
  assert text.splitlines()[2].split() == ["0", "0.123"]
  assert "alpha" in capsys.readouterr().out and len(text.splitlines()) == 4


def test_report_and_result_line_read_the_last_row(history, capsys):
  rows = reporting.report(history)
  assert [r[0] for r in rows] == [0, 1, 2]
  np.testing.assert_allclose([r[1] for r in rows], history["return"][-1])
  np.testing.assert_allclose([r[2] for r in rows], history["alpha"][-1])
  line = reporting.print_population_result(history, -200.0, 500, 1.0, extra=["alpha_lr"])
  # Final returns -250, -200, -150: two members at or above -200.
  assert line.startswith("2/3 members at mean return >= -200")
  assert "alpha_lr" in capsys.readouterr().out


def test_plots_are_pngs(history, tmp_path):
  paths = reporting.plot_history(history, str(tmp_path), "test", bar=-200.0)
  paths.append(
    reporting.plot_groups(
      history["steps"][:, 0],
      [("return", {"a": history["return"]}, False)],
      colors={"a": "tab:blue"},
      labels={"a": "a"},
      title="t",
      path=str(tmp_path / "g.png"),
      dashed={"a": history["target"][:, 0]},
    )
  )
  for p in paths:
    _assert_png(p)
  assert reporting.member_labels(history)[1] == "1: target -1.00, lr 1.0e-03"


def test_command_line_plots_a_saved_history(history, tmp_path):
  np.savez(tmp_path / "history.npz", **history)
  paths = reporting.main([str(tmp_path / "history.npz"), "--out", str(tmp_path / "plots"), "--bar", "-200"])
  assert [os.path.basename(p) for p in paths] == ["return.png", "alpha.png", "entropy.png"]
  for p in paths:
    _assert_png(p)
