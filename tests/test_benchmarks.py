"""Smoke tests of the benchmark tool itself (benchmarks/run.py), not of speed.

Nothing here asserts a timing: the runs use tiny sizes and one repeat, and the
tests check that the tool parses its flags, refuses bad ones with a message,
skips a population too large for its memory budget, carries on without Velora,
writes its JSON / markdown / PNG, and grades goals correctly.
"""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import _timing  # noqa: E402
import run  # noqa: E402

TINY = ["--repeats", "1", "--min-time", "1e-4", "--batch", "8", "--scan-k", "3", "--loop-max-n", "2"]


# --- Flags. ---


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--repeats", "0"], "expected a positive integer; got 0"),
        (["--max-n", "many"], "expected a positive integer; got 'many'"),
        (["--sizes", "16,x"], "expected a positive integer; got 'x'"),
        (["--sections", "single,warp"], "unknown section(s) ['warp']"),
        (["--min-time", "nan"], "expected a positive number; got 'nan'"),
        (["--warm-cache-repeats", "-1"], "expected an integer >= 0; got -1"),
        (["--compile-targets", "continuous,gpu"], "unknown compile target(s) ['gpu']"),
    ],
)
def test_bad_flags_exit_2_with_a_message(argv, message, capsys):
  with pytest.raises(SystemExit) as e:
    run.parse_args(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert message in err
  assert "--help" in err


def test_help_lists_the_options(capsys):
  with pytest.raises(SystemExit) as e:
    run.parse_args(["--help"])
  assert e.value.code == 0
  out = capsys.readouterr().out
  for flag in ("--quick", "--max-n", "--repeats", "--out", "--sizes", "--sections", "--memory-budget-gb"):
    assert flag in out


def test_sizes_follow_max_n(capsys):
  assert run.parse_args([]).sizes == [1, 16, 256, 1024, 16384, 131072]
  assert run.parse_args(["--quick"]).sizes == [1, 16, 256, 1024, 16384]
  assert run.parse_args(["--max-n", "1048576"]).sizes[-2:] == [131072, 1048576]
  assert run.parse_args(["--max-n", "300"]).sizes == [1, 16, 256]
  assert run.parse_args(["--sizes", "64,8,8", "--max-n", "32"]).sizes == [8]
  assert "[64] exceed --max-n 32" in capsys.readouterr().out


def test_population_bytes_counts_the_log_probs_twice_and_the_state():
  assert run.population_bytes(1, 256) == 2 * 256 * 4 + 32 * 4
  assert run.population_bytes(131072, 256) == 2 * 131072 * 256 * 4 + 32 * 131072 * 4


# --- The timer. ---


def test_interleaved_rotates_the_order_and_reports_per_call_seconds():
  log = []
  fns = {name: (lambda name=name: log.append(name)) for name in "abc"}
  timings = _timing.interleaved(fns, repeats=3, min_time=0.0, warmup=0)
  assert log[-9:] == list("abc" "bca" "cab")
  assert set(timings) == set("abc")
  for t in timings.values():
    assert t.repeats == 3 and t.inner == 1
    assert 0 < t.minimum <= t.median <= t.maximum


def test_interleaved_rejects_zero_repeats():
  with pytest.raises(ValueError, match="`repeats` must be >= 1; got 0"):
    _timing.interleaved({"a": lambda: None}, repeats=0, min_time=0.0)


# --- Goals. ---


def _goal(results, prefix):
  [g] = [g for g in run.goals(results) if g["goal"].startswith(prefix)]
  return g["status"]


@pytest.mark.parametrize("speedup, status", [(8.0, "PASS"), (7.99, "FAIL")])
def test_goal_compat_speedup_threshold(speedup, status):
  results = {"single": {"continuous": {"compat class": {"speedup_vs_velora": speedup}}}}
  assert _goal(results, "compat class, continuous") == status
  assert _goal(results, "compat class, discrete") == "n/a"


@pytest.mark.parametrize("x_floor, status", [(1.5, "PASS"), (1.51, "FAIL")])
def test_goal_population_floor_threshold(x_floor, status):
  results = {"population": {"sizes": {"16384": {run.VMAP_GRAD: {"x_floor": x_floor}}}}}
  assert _goal(results, f"N=16384 {run.VMAP_GRAD}") == status
  assert _goal(results, f"N=16384 {run.VMAP_FUSED}") == "n/a"


def test_goal_velora_loop_ratio_and_compile_and_import():
  results = {
      "population": {"sizes": {"1024": {run.VMAP_FUSED: {"seconds": 1.0}, run.LOOP_VELORA: {"seconds": 499.0}}}},
      "compile": {"continuous": {"first_call_s": 0.49}, "discrete": {"first_call_s": 0.5}},
      "import": {"added_s": 0.2},
  }
  assert _goal(results, f"N=1024 {run.VMAP_FUSED}") == "FAIL"
  assert _goal(results, f"N=1024 {run.VMAP_GRAD}") == "n/a"
  assert _goal(results, "first call (trace + compile + run) of jit(continuous_update)") == "PASS"
  assert _goal(results, "first call (trace + compile + run) of jit(discrete_update)") == "FAIL"
  assert _goal(results, "import entropy_jax adds") == "FAIL"


# --- Whole runs at tiny sizes. ---


def test_tiny_run_writes_results_extrapolates_loops_and_skips_a_population_over_budget(tmp_path, capsys):
  # Budget 10 kB: N=4 needs 2*4*8*4 + 32*4*4 = 768 bytes, N=512 needs 98,304.
  rc = run.main(["--sections", "single,population", "--sizes", "1,4,512", "--memory-budget-gb", "1e-5",
                 "--out", str(tmp_path)] + TINY + ["--loop-max-n", "1"])
  assert rc == 0
  out = capsys.readouterr().out
  assert "N=512: needs about 0.00 GB" in out and "skipped, the other sizes still run" in out
  results = json.loads((tmp_path / "results.json").read_text())
  assert set(results["machine"]["versions"]) >= {"jax", "jaxlib", "optax", "torch", "velora"}
  assert results["machine"]["backend"] in ("cpu", "gpu", "tpu", "cuda", "rocm")
  assert results["machine"]["command"].startswith("benchmarks/run.py --sections single,population --sizes 1,4,512")

  for kind in ("continuous", "discrete"):
    rows = results["single"][kind]
    assert set(rows) == {"Velora 0.2.0 (PyTorch CPU)", "compat class", "jax.jit(fused update)", run.DONATED,
                         "lax.scan over 3 updates", run.LEAVES, run.TRIVIAL}
    assert rows["Velora 0.2.0 (PyTorch CPU)"]["speedup_vs_velora"] == 1.0
    scan = rows["lax.scan over 3 updates"]
    assert scan["seconds_per_update"] == pytest.approx(scan["timing"]["median"] / 3)

  sizes = results["population"]["sizes"]
  assert list(sizes) == ["1", "4"]
  assert list(results["population"]["skipped"]) == ["512"]
  for n, row in sizes.items():
    assert set(row) == {run.FLOOR, run.VMAP_GRAD, run.VMAP_FUSED, run.LOOP_VELORA, run.LOOP_COMPAT}
    assert row[run.FLOOR]["x_floor"] == 1.0
    for r in row.values():
      assert r["gb_per_s"] == pytest.approx(int(n) * 8 * 4 / r["seconds"] / 1e9)
  # --loop-max-n 1: at N=4 the loops are the N=1 per-member cost times 4, and marked so.
  for loop in (run.LOOP_VELORA, run.LOOP_COMPAT):
    assert sizes["1"][loop]["measured"] and sizes["1"][loop]["extrapolated_from_n"] is None
    assert not sizes["4"][loop]["measured"] and sizes["4"][loop]["extrapolated_from_n"] == 1
    assert sizes["4"][loop]["seconds"] == pytest.approx(4 * sizes["1"][loop]["seconds"])
    assert sizes["4"][loop]["x_floor"] == pytest.approx(sizes["4"][loop]["seconds"] / sizes["4"][run.FLOOR]["seconds"])

  md = (tmp_path / "results.md").read_text()
  assert "## Population scaling" in md and "## Goals" in md and "skipped: N=512" in md
  assert "| 4 | loop over Velora modules |" in md
  # The per-member column is the whole population's time over N.
  floor4 = sizes["4"][run.FLOOR]["seconds"]
  assert f"| 4 | {run.FLOOR} | {run._fmt_time(floor4)} | {run._fmt_time(floor4 / 4)} |" in md
  assert (tmp_path / "population.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_velora_the_jax_parts_still_run(tmp_path, monkeypatch, capsys):
  # Velora made unimportable, as if not installed.
  for name in [m for m in sys.modules if m == "velora" or m.startswith("velora.")] + ["velora"]:
    monkeypatch.setitem(sys.modules, name, None)
  rc = run.main(["--sections", "population", "--sizes", "1", "--out", str(tmp_path), "--no-plot"] + TINY)
  assert rc == 0
  out = capsys.readouterr().out
  assert "Velora 0.2.0 could not be imported (ModuleNotFoundError:" in out
  assert "the rest still runs" in out and "pip install --no-deps velora==0.2.0" in out
  results = json.loads((tmp_path / "results.json").read_text())
  row = results["population"]["sizes"]["1"]
  assert set(row) == {run.FLOOR, run.VMAP_GRAD, run.VMAP_FUSED, run.LOOP_COMPAT}
  assert "Velora 0.2.0 could not be imported" in results["notes"][0]
  status = {g["goal"]: g["status"] for g in results["goals"]}
  assert status[f"N=1024 {run.VMAP_FUSED}: >= 500x faster than looping Velora modules"] == "n/a"


def test_fresh_process_section(tmp_path):
  # One fresh process without a cache, one filling a cache, one loading from it.
  rc = run.main(["--sections", "fresh", "--fresh-repeats", "1", "--warm-cache-repeats", "1", "--max-n", "4",
                 "--compile-targets", "population", "--out", str(tmp_path)] + TINY)
  assert rc == 0
  results = json.loads((tmp_path / "results.json").read_text())
  assert set(results["compile"]) == {"population"}
  for which in ("population",):
    c = results["compile"][which]
    assert c["first_call_s"] > c["steady_call_s"] > 0 and c["trivial_first_call_s"] > 0
    assert len(c["samples"]) == 1 and len(c["warm_cache_samples"]) == 1
    assert c["warm_cache_first_call_s"] > 0
  assert results["compile"]["population"]["n"] == 4
  assert results["import"]["baseline_s"] > 0 and results["import"]["added_s"] > 0
  assert "population" not in results  # Not run, so no plot either.
  assert not (tmp_path / "population.png").exists()


# --- The HLO check behind the population goal (no timing). ---


def test_vmapped_updates_read_the_log_probs_once_and_build_no_n_by_b_temporary():
  import jax
  import jax.numpy as jnp

  import entropy_jax as ej
  import hlo_report

  n, b = 64, 32
  pop = ej.init_population(-6.0, size=n)
  x = jnp.zeros((n, b), jnp.float32)
  forms = [
      jax.vmap(lambda s, lp: ej.apply_gradients(s, jax.grad(ej.continuous_loss)(s.log_alpha, lp, s.target))),
      jax.vmap(ej.continuous_update),
  ]
  for fn in forms:
    report = hlo_report.nb_report(jax.jit(fn).lower(pop, x).compile().as_text(), n, b)
    assert len(report["nb_readers"]) == 1, report
    assert report["nb_temporaries"] == [], report


def test_hlo_report_sees_an_n_by_b_temporary_when_there_is_one():
  import jax
  import jax.numpy as jnp

  import hlo_report

  x = jnp.zeros((8, 4), jnp.float32)
  # Two outputs of the full shape: the parser must flag them and both readers.
  hlo = jax.jit(lambda v: (jnp.exp(v), v * 3.0)).lower(x).compile().as_text()
  report = hlo_report.nb_report(hlo, 8, 4)
  assert len(report["nb_temporaries"]) == 2 and len(report["nb_readers"]) == 2, report
  # Each of the two elementwise kernels reads the 8x4 float32 input and writes 8x4.
  assert report["read_bytes"] == 2 * 8 * 4 * 4 and report["written_bytes"] == 2 * 8 * 4 * 4, report


def test_timing_waits_on_a_synchronizing_callable():
  # PyTorch work queued on a GPU is waited for by calling what the method returns.
  calls = []
  t = _timing.interleaved({"sync": lambda: (lambda: calls.append(1))}, repeats=2, min_time=1e-4, warmup=1)
  assert t["sync"].repeats == 2
  # One wait per warm-up call, per calibration sample and per timed sample: never none.
  assert len(calls) >= 1 + 1 + 2


def test_optimizer_cost_script_reports_ratios_to_the_floor(capsys):
  import optimizer_cost

  ratios = optimizer_cost.main(["--n", "8", "--batch", "4", "--repeats", "1", "--min-time", "0.001"])
  assert ratios["floor: jnp.sum"] == 1.0
  assert set(ratios) == {"floor: jnp.sum", "the gradient alone (no step)",
                         "Adam's bias correction alone ([N] pows)",
                         "optax.adam(3e-4) (the default)",
                         "compat Adam (-expm1 bias correction)", "optax.sgd(3e-4)"}
  assert all(r > 0 for r in ratios.values())
  assert "N = 8 x 4 log_probs" in capsys.readouterr().out
  with pytest.raises(SystemExit):
    optimizer_cost.main(["--n", "0"])
