"""The HLO reader of `benchmarks/hlo_report.py`, on known programs.

Loops, readers and bytes are read from a hand-written module and checked
against counts made by hand, independent of what any XLA version emits. The
collectives are read from a hand-written module and from programs compiled
over 8 devices, each built to need one kind of communication.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from benchmarks import hlo_report
from entropy_jax import sharding

DEVICES = 8

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


def test_describe_counts_the_loops_and_the_bytes_per_member():
  d = hlo_report.describe(HLO, 8, 4)
  assert (d["n_loops"], d["copies"], d["n_operands_read"], d["wide_loops"]) == (2, 1, 2, 0)
  # (320 + 192 - 8 * 4 * 4) bytes over 8 members.
  assert d["bytes_per_member_besides_log_probs"] == 48.0


ASYNC = """HloModule async

%add (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %sum = f32[] add(%a, %b)
}

ENTRY %main (p: f32[8]) -> f32[8] {
  %p = f32[8]{0} parameter(0)
  %all-reduce-start = f32[8]{0} all-reduce-start(f32[8]{0} %p), replica_groups={{0,1}}, to_apply=%add
  %all-reduce-done = f32[8]{0} all-reduce-done(f32[8]{0} %all-reduce-start)
  ROOT %copy = f32[8]{0} copy(f32[8]{0} %all-reduce-done)
}
"""


def test_collectives_reads_async_forms_by_opcode_not_by_operand_name():
  # The start and the done of one all-reduce; %copy only reads a value named after it.
  assert hlo_report.collectives(ASYNC) == ["all-reduce", "all-reduce"]
  assert hlo_report.collectives(HLO) == []


def test_collectives_finds_each_kind_in_compiled_programs():
  mesh = sharding.population_mesh(jax.devices()[:DEVICES])
  member = sharding.member_sharding(mesh)
  x = jax.device_put(jnp.arange(DEVICES * DEVICES, dtype=jnp.float32), member)

  def hlo(f, out=member):
    return jax.jit(f, in_shardings=member, out_shardings=out).lower(x).compile().as_text()

  assert "all-reduce" in hlo_report.collectives(hlo(lambda x: x - jnp.mean(x)))
  assert "all-gather" in hlo_report.collectives(hlo(lambda x: 2 * x, NamedSharding(mesh, PartitionSpec())))
  assert "collective-permute" in hlo_report.collectives(hlo(lambda x: jnp.roll(x, 1)))
  swap = jax.jit(
    jax.shard_map(
      lambda x: jax.lax.all_to_all(x.reshape(DEVICES, -1), "members", 0, 0).reshape(-1),
      mesh=mesh,
      in_specs=PartitionSpec("members"),
      out_specs=PartitionSpec("members"),
    )
  )
  assert hlo_report.collectives(swap.lower(x).compile().as_text()) == ["all-to-all"]
  assert hlo_report.collectives(hlo(lambda x: 2 * x)) == []
