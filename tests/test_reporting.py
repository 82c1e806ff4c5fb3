"""What the scripts around the agents share (examples/reporting.py): tables and plots.

The table's cells and the per-member report against the history they come
from; the plots as PNG files that draw the history's curves, one per member or
per group, with every piece of text readable where the documentation shows
them; and the module's command line, which plots a saved `.npz`.
"""

import os
import struct

import numpy as np
import pytest

from examples import reporting

pytest.importorskip("matplotlib")  # the `examples` extra
import matplotlib.figure
import matplotlib.text

PNG = b"\x89PNG\r\n\x1a\n"
# The documentation's content column (furo: 46em at 17.6 px is 810 px; narrower windows show less).
DISPLAYED_WIDTH = 740
READABLE = 10.0  # px, the height of a font's em on the page


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


@pytest.fixture
def saved(monkeypatch):
  """`[(figure, path)]`: every figure the module writes, caught as matplotlib saves it."""
  caught, save = [], matplotlib.figure.Figure.savefig

  def savefig(fig, path, *args, **kwargs):
    caught.append((fig, path))
    return save(fig, path, *args, **kwargs)

  monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
  return caught


def _png_width(path):
  with open(path, "rb") as f:
    head = f.read(24)
  assert head[:8] == PNG and os.path.getsize(path) > 10_000
  return struct.unpack(">I", head[16:20])[0]


def _assert_readable(fig, path):
  """Every text of `fig` is at least READABLE px tall once the PNG is scaled to the documentation's width."""
  width = _png_width(path)
  scale = min(DISPLAYED_WIDTH, width) / width
  texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_visible() and t.get_text().strip()]
  assert texts
  for t in texts:
    px = t.get_fontsize() * fig.dpi / 72 * scale
    assert px >= READABLE, (os.path.basename(path), t.get_text(), px)


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


def test_a_saved_run_reads_back_as_its_history_and_finals(history, tmp_path):
  finals = {"greedy": np.array([1.0, 2.0, 3.0]), "seconds": 4.5}
  path = str(tmp_path / "run.npz")
  reporting.save_run(path, history, finals)
  loaded, read = reporting.load_run(path)
  assert set(loaded) == set(history) and set(read) == set(finals)
  for k in history:
    np.testing.assert_array_equal(loaded[k], history[k])
  np.testing.assert_array_equal(read["greedy"], finals["greedy"])
  assert read["seconds"] == 4.5


def test_return_summary_reads_the_last_row_and_the_mean_return_over_the_run():
  # Two seeds over steps 0, 100, 200: no episode yet (NaN, counted 0), then returns rising linearly.
  steps = np.repeat(np.array([0, 100, 200])[:, None], 2, 1)
  ret = np.array([[np.nan, np.nan], [0.0, 2.0], [4.0, 6.0]])
  figures, auc = reporting.return_summary({"steps": steps, "return": ret}, np.array([1.0, 3.0]))
  # Trapezoids over [0, 100] and [100, 200], divided by 200: (0 + r1) / 4 + (r1 + r2) / 4.
  np.testing.assert_allclose(auc, [1.0, 2.5])
  assert (figures["final_return_mean"], figures["final_return_std"]) == (5.0, 1.0)
  assert (figures["final_return_min"], figures["final_return_max"]) == (4.0, 6.0)
  assert (figures["auc_mean"], figures["auc_std"], figures["greedy_mean"]) == (1.75, 0.75, 2.0)


def test_history_plots_draw_each_member_and_are_readable(history, tmp_path, saved):
  paths = reporting.plot_history(history, str(tmp_path), "test", bar=-200.0)
  assert [os.path.basename(p) for p in paths] == ["return.png", "alpha.png", "entropy.png"]
  assert [p for _, p in saved] == paths
  labels = reporting.member_labels(history)
  assert labels[1] == "1: target -1.00, lr 1.0e-03"
  for (fig, path), name in zip(saved, ("return", "alpha", "entropy")):
    _assert_readable(fig, path)
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_legend().get_texts()] == labels
    curves = {line.get_label(): line.get_ydata() for line in ax.get_lines()}
    rows = slice(1, None) if name == "entropy" else slice(None)  # no entropy before the first update
    for i, label in enumerate(labels):
      np.testing.assert_array_equal(curves[label], history[name][rows, i])


def test_group_plot_draws_each_group_median_and_is_readable(history, tmp_path, saved):
  # Eight groups, as in the discrete target study: a two-row legend under three panels.
  groups = {f"rule {g}": history["return"] + 10 * g for g in range(8)}
  alphas = {g: history["alpha"] * (i + 1) for i, g in enumerate(groups)}
  panels = [("return", groups, False), ("alpha", alphas, True), ("entropy", groups, False)]
  path = reporting.plot_groups(
    history["steps"][:, 0],
    panels,
    colors={g: f"C{i}" for i, g in enumerate(groups)},
    labels={g: g.replace("rule", "a rule named") for g in groups},
    title="t",
    path=str(tmp_path / "g.png"),
    dashed={g: history["target"][:, 0] for g in groups},
  )
  ((fig, saved_path),) = saved
  assert saved_path == path
  _assert_readable(fig, path)
  assert [t.get_text() for t in fig.legends[0].get_texts()] == [f"a rule named {g}" for g in range(8)]
  medians = {line.get_label(): line.get_ydata() for line in fig.axes[0].get_lines()}
  for g, values in groups.items():
    np.testing.assert_array_equal(medians[g.replace("rule", "a rule named")], np.median(values, axis=1))


def test_command_line_plots_a_saved_history(history, tmp_path):
  np.savez(tmp_path / "history.npz", **history)
  paths = reporting.main([str(tmp_path / "history.npz"), "--out", str(tmp_path / "plots"), "--bar", "-200"])
  assert [os.path.basename(p) for p in paths] == ["return.png", "alpha.png", "entropy.png"]
  for p in paths:
    _png_width(p)
