"""The one timing harness of the benchmarks (`benchmarks/_timing.py`)."""

from __future__ import annotations

import pytest

from benchmarks import _timing


def test_interleaved_rotates_the_order_and_reports_per_call_seconds():
  log = []
  fns = {name: (lambda name=name: log.append(name)) for name in "abc"}
  timings = _timing.interleaved(fns, repeats=3, min_time=0.0, warmup=0)
  assert log[-9:] == list("abcbcacab")
  assert set(timings) == set("abc")
  for t in timings.values():
    assert t.repeats == 3 and t.inner == 1
    assert 0 < t.minimum <= t.median <= t.maximum


def test_calibrate_grows_inner_until_a_sample_lasts_min_time():
  calls = []
  inner = _timing.calibrate(lambda: calls.append(1), min_time=1e-3)
  assert inner > 1  # An append lasts far less than a millisecond.
  assert _timing.calibrate(lambda: None, min_time=10.0, max_inner=64) == 64


def test_interleaved_rejects_zero_repeats():
  with pytest.raises(ValueError, match="`repeats` must be >= 1; got 0"):
    _timing.interleaved({"a": lambda: None}, repeats=0, min_time=0.0)


def test_timing_waits_on_a_synchronizing_callable():
  # PyTorch work queued on a GPU is waited for by calling what the method returns.
  calls = []
  t = _timing.interleaved({"sync": lambda: lambda: calls.append(1)}, repeats=2, min_time=1e-4, warmup=1)
  assert t["sync"].repeats == 2
  # One wait per warm-up call, per calibration sample and per timed sample: never none.
  assert len(calls) >= 1 + 1 + 2


def test_threaded_carries_the_state_from_call_to_call():
  step = _timing.threaded(lambda s, a: s + a, 0, 2)
  assert [step(), step(), step()] == [2, 4, 6]
  with_metrics = _timing.threaded(lambda s: (s * 2, "metrics"), 1, carry=True)
  assert [with_metrics(), with_metrics()] == [2, 4]
