"""The HLO reader of `benchmarks/hlo_report.py`, on a hand-written module.

The figures it reads from a real compiled update are graded by the goal
sheet (`python -m benchmarks.run`); here the reader itself is checked
against counts made by hand, independent of what any XLA version emits.
"""

from __future__ import annotations

from benchmarks import hlo_report

# One [8, 4] input read by two kernels, one of which builds an [8, 4]
# temporary; a fusion and a copy writing [8] arrays.
HLO = """HloModule example

%fused (a: f32[8,4], b: f32[8]) -> f32[8] {
  %a = f32[8,4]{1,0} parameter(0)
  %b = f32[8]{0} parameter(1)
  ROOT %r = f32[8]{0} reduce(%a, %b)
}

ENTRY %main (p0: f32[8,4], p1: f32[8]) -> (f32[8], f32[8], f32[8,4]) {
  %p0 = f32[8,4]{1,0} parameter(0)
  %p1 = f32[8]{0} parameter(1)
  %fusion = f32[8]{0} fusion(f32[8,4]{1,0} %p0, f32[8]{0} %p1), kind=kLoop, calls=%fused
  %copy = f32[8]{0} copy(f32[8]{0} %p1)
  %tmp = f32[8,4]{1,0} fusion(f32[8,4]{1,0} %p0), kind=kLoop, calls=%fused
  ROOT %tuple = (f32[8]{0}, f32[8]{0}, f32[8,4]{1,0}) tuple(%fusion, %copy, %tmp)
}
"""


def test_entry_reads_only_the_entry_computation():
  names = [line.split(" =")[0] for line in hlo_report.entry(HLO)]
  assert names == ["%p0", "%p1", "%fusion", "%copy", "%tmp", "ROOT %tuple"]
  assert hlo_report.kernels(hlo_report.entry(HLO)) == 3


def test_n_loops_lists_the_kernels_writing_an_n_array_and_the_n_arrays_they_read():
  assert hlo_report.n_loops(HLO, 8) == [
    {"name": "%fusion", "kind": "fusion", "n_operands": 1},
    {"name": "%copy", "kind": "copy", "n_operands": 1},
  ]


def test_nb_report_finds_every_reader_of_the_input_and_every_temporary():
  report = hlo_report.nb_report(HLO, 8, 4)
  assert report["nb_readers"] == ["%fusion", "%tmp"]
  assert report["nb_temporaries"] == ["%tmp"]
  # Reads: fusion 128 + 32, copy 32, tmp 128; writes: 32 + 32 + 128.
  assert report["read_bytes"] == 320 and report["written_bytes"] == 192


def test_describe_counts_what_the_goal_sheet_grades():
  d = hlo_report.describe(HLO, 8, 4)
  assert (d["n_loops"], d["copies"], d["n_operands_read"], d["wide_loops"]) == (2, 1, 2, 0)
  # (320 + 192 - 8 * 4 * 4) bytes over 8 members.
  assert d["bytes_per_member_besides_log_probs"] == 48.0
