"""Whole benchmark runs at tiny sizes: the tool works end to end (no timing
is asserted). They write their JSON, markdown and plot, skip a population too
large for the memory budget, extrapolate the loops, carry on without Velora,
and run the SAC, optimizer, HLO and fresh-process sections."""

from __future__ import annotations

import json
import sys

import pytest

from benchmarks import _cli, population, run, sac, single_update
from benchmarks._forms import MINIMAL

pytestmark = pytest.mark.slow
TINY = ["--repeats", "1", "--min-time", "1e-4", "--batch", "8", "--scan-k", "3", "--loop-max-n", "2"]


def test_single_and_population_write_results_extrapolate_loops_and_skip_over_budget(tmp_path, capsys):
  pytest.importorskip("velora")  # the [parity] extra: the Velora rows
  pytest.importorskip("matplotlib")  # the [examples] extra: the plot
  # Budget 10 kB: N=4 needs 2*4*8*4 + 64*4*4 = 1,280 bytes, N=512 needs 163,840.
  rc = run.main(
    [
      "--sections",
      "single,population",
      "--sizes",
      "1,4,512",
      "--memory-budget-gb",
      "1e-5",
      "--out",
      str(tmp_path),
      *TINY,
      "--loop-max-n",
      "1",
    ]
  )
  assert rc == 0
  out = capsys.readouterr().out
  assert "N=512: needs about 0.00 GB" in out and "skipped, the other sizes still run" in out
  results = json.loads((tmp_path / "results.json").read_text())
  machine = results["machine"]
  assert set(machine["versions"]) >= {"jax", "jaxlib", "optax", "torch", "velora"}
  assert machine["date_utc"] and len(machine["loadavg_start"]) == 3 and len(machine["loadavg_end"]) == 3
  assert machine["command"].startswith("python -m benchmarks.run --sections single,population --sizes 1,4,512")
  # No path of the machine that ran it: --out is recorded by its name.
  assert str(tmp_path) not in (tmp_path / "results.json").read_text() + (tmp_path / "results.md").read_text()

  synchronous = [f"{name}, {single_update.SYNC_LABEL}" for name in (single_update.COMPAT, single_update.COMPAT_TORCH)]
  for kind in single_update.KINDS:
    rows = results["single"][kind]
    scan = single_update.scan_label(3)
    assert set(rows) == {
      single_update.VELORA_CPU,
      single_update.COMPAT,
      single_update.COMPAT_TORCH,
      single_update.JIT,
      single_update.TRIVIAL,
      scan,
      *synchronous,
    }
    assert rows[single_update.VELORA_CPU]["speedup_vs_velora"] == 1.0
    for name in synchronous:  # From a process of their own, against the Velora module timed there.
      row = rows[name]
      assert row["speedup_vs_velora"] == pytest.approx(row["velora_seconds_per_update"] / row["seconds_per_update"])
    assert rows[scan]["seconds_per_update"] == pytest.approx(rows[scan]["timing"]["median"] / 3)

  sizes = results["population"]["sizes"]
  assert list(sizes) == ["1", "4"] and list(results["population"]["skipped"]) == ["512"]
  methods = {
    population.FLOOR,
    population.DEFAULT,
    population.OPTAX,
    MINIMAL,
    population.FUSED,
    population.DEFAULT_DONATED,
    population.MINIMAL_DONATED,
    population.LOOP_VELORA,
    population.LOOP_COMPAT,
  }
  for n, row in sizes.items():
    assert set(row) == methods
    assert row[population.FLOOR]["x_floor"] == 1.0
    for r in row.values():
      assert r["gb_per_s"] == pytest.approx(int(n) * 8 * 4 / r["seconds"] / 1e9)
    assert row[population.DEFAULT]["x_faster_than_velora_loop"] == pytest.approx(
      row[population.LOOP_VELORA]["seconds"] / row[population.DEFAULT]["seconds"]
    )
  # --loop-max-n 1: at N=4 the loops are the N=1 per-member cost times 4, and marked so.
  for loop in (population.LOOP_VELORA, population.LOOP_COMPAT):
    assert sizes["1"][loop]["measured"] and sizes["1"][loop]["extrapolated_from_n"] is None
    assert not sizes["4"][loop]["measured"] and sizes["4"][loop]["extrapolated_from_n"] == 1
    assert sizes["4"][loop]["seconds"] == pytest.approx(4 * sizes["1"][loop]["seconds"])

  md = (tmp_path / "results.md").read_text()
  assert "## Population scaling" in md and "## Goals" in md and "skipped: N=512" in md
  assert "| 4 | loop over Velora modules |" in md and str(machine["loadavg_start"]) in md
  floor4 = sizes["4"][population.FLOOR]["seconds"]
  assert f"| 4 | {population.FLOOR} | {_cli.fmt_time(floor4)} | {_cli.fmt_time(floor4 / 4)} |" in md
  assert (tmp_path / "population.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  status = {g["goal"]: g["status"] for g in results["goals"]}
  assert set(status.values()) <= {"PASS", "FAIL", "n/a"}


def test_without_velora_the_jax_parts_still_run(tmp_path, monkeypatch, capsys):
  for name in [m for m in sys.modules if m == "velora" or m.startswith("velora.")] + ["velora"]:
    monkeypatch.setitem(sys.modules, name, None)  # As if not installed.
  rc = run.main(["--sections", "population", "--sizes", "1", "--out", str(tmp_path), "--no-plot", *TINY])
  assert rc == 0
  out = capsys.readouterr().out
  assert "Velora 0.2.0 could not be imported (ModuleNotFoundError:" in out
  assert "the rest still runs" in out and "pip install --no-deps velora==0.2.0" in out
  results = json.loads((tmp_path / "results.json").read_text())
  assert population.LOOP_VELORA not in results["population"]["sizes"]["1"]
  assert population.LOOP_COMPAT in results["population"]["sizes"]["1"]
  assert "Velora 0.2.0 could not be imported" in results["notes"][0]
  assert not (tmp_path / "population.png").exists()


def test_optimizer_hlo_and_fresh_process_sections(tmp_path):
  rc = run.main(
    [
      "--sections",
      "optimizer,hlo,compile",
      "--optimizer-n",
      "8",
      "--hlo-n",
      "8",
      "--fresh-repeats",
      "1",
      "--warm-cache-repeats",
      "1",
      "--compile-targets",
      "population",
      "--compile-n",
      "4",
      "--out",
      str(tmp_path),
      *TINY,
    ]
  )
  assert rc == 0
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["facts"] and all(f["measured"] is not None for f in results["facts"])
  rows = results["optimizer"]["rows"]
  assert rows["floor: jnp.sum"]["x_floor"] == 1.0 and len(rows) == 9
  assert all(r["x_floor"] > 0 for r in rows.values())
  forms = results["hlo"]["forms"]
  # What XLA emits is reported, not graded: each form has its figures.
  assert all(isinstance(d["nb_readers"], list) and d["n_loops"] > 0 for d in forms.values())
  assert set(results["compile"]) == {"population"} and results["compile"]["population"]["n"] == 4
  c = results["compile"]["population"]
  assert c["first_call_s"] > c["steady_call_s"] > 0 and c["warm_cache_first_call_s"] > 0
  assert len(c["samples"]) == 1 and len(c["warm_cache_samples"]) == 1
  assert results["import"]["baseline_s"] > 0 and results["import"]["added_s"] > 0
  md = (tmp_path / "results.md").read_text()
  assert "## The optimized HLO" in md and "## Optimizer cost" in md and "## Compile and import" in md
  assert "## Facts about the compiled update" in md


def test_sac_section_reports_throughput_and_the_entropy_updates_share(tmp_path, capsys):
  for module in ("gymnax", "flashbax", "distrax"):  # the [examples] extra: the SAC agent
    pytest.importorskip(module)
  assert sac.main(["--members", "2", "--steps", "2", "--repeats", "1", "--json", str(tmp_path / "sac.json")]) == 0
  r = json.loads((tmp_path / "sac.json").read_text())["sac"]
  assert r["members"] == 2 and r["steps_per_call"] == 2
  assert r["env_steps_per_s_population"] > 0 and r["env_steps_per_s_one_agent"] > 0
  assert r["entropy_update_share"] == pytest.approx(r["entropy_update_alone_s"] / r["train_step_s"])
  assert r["entropy_update_per_member_s"] == pytest.approx(r["entropy_update_alone_s"] / 2)
  assert "entropy update's share of a SAC training step" in capsys.readouterr().out
