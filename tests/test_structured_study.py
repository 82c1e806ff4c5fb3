"""The structured-temperature study, end to end on a small budget, and its plots.

`main` runs once per module on a tiny Reacher-misc task with a temperature per
branch and with one shared temperature. The tests then read what it wrote: the
designs start from the same seeds, a shared temperature is one alpha in every
branch while per-branch temperatures move apart, each design kept its targets,
and the figures and `results.json` exist. The plots are also drawn from
synthetic histories with NaN rows (no finished episode yet).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

for _module in ("gymnax", "flashbax", "distrax"):  # The examples extra.
  pytest.importorskip(_module)

from examples import structured_study as study  # noqa: E402
from examples.sac_multidiscrete import Config  # noqa: E402

BINS = 5
REACHER = study.Task(
  "Reacher-misc",
  Config(env_name="Reacher-misc", bins=BINS, hidden=(16,), batch_size=32, buffer_size=4_000, learning_starts=400),
  2_000,
  400,
  2,
)
DESIGNS = ["branch_0.6", "shared_0.6", "branch_0.9"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
  folder = str(tmp_path_factory.mktemp("structured"))
  with pytest.MonkeyPatch.context() as mp:
    mp.setitem(study.TASKS, "reacher", REACHER)
    study.main(["--tasks", "reacher", "--designs", *DESIGNS, "--out", folder, "--hybrid-seeds", "0"])
  return folder


def _history(out, design):
  with np.load(os.path.join(out, f"Reacher-misc_{design}.npz")) as f:
    return dict(f)


@pytest.mark.slow
def test_designs_share_seeds_and_keep_their_targets(out):
  histories = {d: _history(out, d) for d in DESIGNS}
  # Seed i starts from the same environments and random warm-up under every design.
  for d in DESIGNS[1:]:
    np.testing.assert_array_equal(histories[d]["return"][0], histories[DESIGNS[0]]["return"][0])
  for d, h in histories.items():
    ratio = study.DESIGNS[d].ratio
    np.testing.assert_allclose(h["target"], 2 * ratio * math.log(BINS), rtol=1e-6)  # summed over the 2 branches
    assert h["alpha"].shape == (REACHER.steps // REACHER.chunk - 1 + 1, REACHER.seeds, 2)
  # A shared temperature is the same alpha in both branches; per-branch ones move apart.
  shared = histories["shared_0.6"]["alpha"]
  np.testing.assert_array_equal(shared[..., 0], shared[..., 1])
  per_branch = histories["branch_0.6"]["alpha"]
  assert np.all(per_branch[0, :, 0] == per_branch[0, :, 1])
  assert np.any(per_branch[-1, :, 0] != per_branch[-1, :, 1]), per_branch[-1]


@pytest.mark.slow
def test_alpha_follows_each_branch_gap(out):
  # Over a chunk where a branch's entropy stayed below its target 0.9 log n, that branch's alpha rose.
  h = _history(out, "branch_0.9")
  gap = h["entropy"][1:] - 0.9 * math.log(BINS)
  moved = np.diff(np.log(h["alpha"]), axis=0)
  assert np.all(np.sign(moved[gap < -0.05]) > 0), (moved, gap)


@pytest.mark.slow
def test_results_json_and_figures(out):
  with open(os.path.join(out, "results.json")) as f:
    results = json.load(f)["results"]["Reacher-misc"]
  assert set(results) == set(DESIGNS)
  for d, s in results.items():
    assert s["seeds"] == REACHER.seeds and len(s["final_alpha_per_branch_median"]) == 2
    np.testing.assert_allclose(s["final_return_mean"], np.mean(_history(out, d)["return"][-1]), rtol=1e-6)
  with open(os.path.join(out, "Reacher-misc.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plots_accept_rows_without_episodes(tmp_path):
  t, s = 4, 3
  steps = np.tile(np.arange(t)[:, None] * 1_000, (1, s))
  ret = np.vstack([np.full((1, s), np.nan), np.ones((t - 1, s))])
  h = {"steps": steps, "return": ret, "alpha": np.full((t, s, 2), 0.1), "entropy": np.ones((t, s, 2))}
  paths = [
    study.plot_task(REACHER, {"branch_0.6": h, "shared_0.6": h}, str(tmp_path / "task.png")),
    study.plot_hybrid({"per_part": h, "shared": h}, str(tmp_path / "hybrid.png")),
  ]
  for path in paths:
    with open(path, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
