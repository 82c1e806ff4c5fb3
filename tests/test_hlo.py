"""The optimized HLO of the vmapped population update, read with
`benchmarks/hlo_report.py` (structure only; no timing).

Under `vmap`, XLA's CPU backend writes each `[N]` output array in a loop of
its own. `apply_gradients` computes its skip verdict once, in the loop that
writes the `skipped` counter, and every other field's loop reads it back,
instead of each recomputing the finiteness checks from all their inputs.
These tests hold the number of `[N]` loops and of `[N]` arrays they read
where that brings them, and that the `[N, B]` log_probs are read once.

XLA compiles the same update differently in different programs (alone, under
`vmap`, in `lax.scan`, through the compat classes), and contracts
multiplies and adds into fused multiply-adds as each program's fusions allow;
the last tests hold that the default optimizer steps to the same bits in all
of them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import entropy_jax as ej
from benchmarks import hlo_report, population
from benchmarks._forms import MINIMAL
from entropy_jax.compat import EntropyModule, EntropyModuleDiscrete

N, B = 64, 32


@pytest.fixture(scope="module")
def forms():
  return {
    name: hlo_report.describe(fn.lower(*args).compile().as_text(), N, B)
    for name, (fn, args) in hlo_report.population_forms(N, B, action_dim=6).items()
  }


def test_every_population_update_reads_the_log_probs_once_and_builds_no_n_by_b_array(forms):
  assert len(forms) == 6
  for name, d in forms.items():
    assert len(d["nb_readers"]) == 1, (name, d)
    assert d["nb_temporaries"] == [], (name, d)


def test_the_default_update_computes_its_skip_verdict_once(forms):
  d = forms[population.DEFAULT]
  # One loop per output field (nine, three of them copies of the fields that
  # do not change: target and bounds), the row reduction, Adam's moments and
  # the clamped log_alpha.
  assert d["n_loops"] <= 13 and d["copies"] == 3, d
  wide = [lp for lp in d["loops"] if lp["n_operands"] > 4]
  # The clamped new log_alpha (Adam's step, the bounds) and the verdict read
  # more than four [N] arrays; every other loop reads at most four.
  assert len(wide) <= 2, d["loops"]
  assert d["n_operands_read"] <= 41, d
  assert d["bytes_per_member_besides_log_probs"] <= 220, d


def test_a_donated_state_copies_no_field_that_does_not_change(forms):
  # As in a training loop that donates its state to the jitted step: target
  # and bounds pass through in place. The one copy is the old skipped
  # counter, which the other fields' loops compare the new one with after it
  # has been written in place.
  d = forms[population.DEFAULT_DONATED]
  assert d["n_loops"] <= 11 and d["copies"] <= 1, d


def test_the_minimal_form_is_six_loops(forms):
  # The reference the population benchmark times beside the library.
  d = forms[MINIMAL]
  assert d["n_loops"] == 6 and d["copies"] == 0, d


def test_n_loops_counts_copies_and_the_arrays_each_loop_reads():
  x = [jnp.zeros(16) + i for i in range(5)]

  def checks_per_output(a, b, c, d, e):
    ok = jnp.isfinite(a * b) & jnp.isfinite(c) & jnp.isfinite(d)
    return jnp.where(ok, a, e), jnp.where(ok, b * 2, e), jnp.where(ok, c + 1, e), d

  loops = hlo_report.n_loops(jax.jit(checks_per_output).lower(*x).compile().as_text(), 16)
  assert sorted(lp["kind"] for lp in loops) == ["copy", "fusion", "fusion", "fusion"]
  # Each of the three selects recomputes the check from the four inputs, and reads its own.
  assert sorted(lp["n_operands"] for lp in loops) == [1, 5, 5, 5]


def test_hlo_report_sees_an_n_by_b_temporary_when_there_is_one():
  x = jnp.zeros((8, 4), jnp.float32)
  # Two outputs of the full shape: the parser must flag them and both readers.
  hlo = jax.jit(lambda v: (jnp.exp(v), v * 3.0)).lower(x).compile().as_text()
  report = hlo_report.nb_report(hlo, 8, 4)
  assert len(report["nb_temporaries"]) == 2 and len(report["nb_readers"]) == 2, report
  # Each of the two elementwise kernels reads the 8x4 float32 input and writes 8x4.
  assert report["read_bytes"] == 2 * 8 * 4 * 4 and report["written_bytes"] == 2 * 8 * 4 * 4, report


def _bits(tree):
  return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def test_the_default_optimizer_steps_to_the_same_bits_in_every_program():
  steps = 400
  lps = np.random.default_rng(1).normal(-1.0, 2.0, size=(steps, 16)).astype(np.float32)
  single, pop, module = ej.init_entropy_state(-2.0), ej.init_population(-2.0, size=3), EntropyModule(2)
  update, vmapped = jax.jit(ej.continuous_update), jax.jit(jax.vmap(ej.continuous_update))
  for lp in lps:
    single, _ = update(single, lp)
    pop, _ = vmapped(pop, jnp.tile(lp, (3, 1)))
    module.gradient_step(module.compute_loss(lp))
    assert _bits(jax.tree.map(lambda x: x[1], pop)) == _bits(single)
    assert _bits(module.state) == _bits(single)
  scanned, _ = jax.jit(lambda s, xs: jax.lax.scan(lambda s, x: (ej.continuous_update(s, x)[0], None), s, xs))(
    ej.init_entropy_state(-2.0), lps
  )
  assert _bits(scanned) == _bits(single)
  assert int(single.step) == steps and float(single.log_alpha) != 0.0


def test_the_discrete_update_steps_to_the_same_bits_in_the_compat_class():
  logits = np.random.default_rng(2).normal(size=(200, 16, 4)).astype(np.float32)
  probs, log_probs = np.asarray(jax.nn.softmax(logits)), np.asarray(jax.nn.log_softmax(logits))
  state, module = ej.init_entropy_state(ej.discrete_target(4)), EntropyModuleDiscrete(4)
  update = jax.jit(ej.discrete_update)
  for p, lp in zip(probs, log_probs):
    state, _ = update(state, p, lp)
    module.gradient_step(module.compute_loss(p, lp))
    assert _bits(module.state) == _bits(state)
