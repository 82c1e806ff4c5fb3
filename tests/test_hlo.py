"""The same update steps to the same bits in every program that runs it.

XLA compiles the same update differently in different programs (alone, under
`vmap`, in `lax.scan`, in the compat classes' call), and contracts multiplies
and adds into fused multiply-adds as each program's fusions allow. The
default optimizer is written so that no such choice changes a result (see
`entropy_jax.optimizers.scale_by_adam`): a member of a population, a scanned
run and a compat module follow a single state bit for bit. (How many loops,
copies and bytes the compiled update costs is a performance figure, reported
by `python -m benchmarks.hlo_report`, not a property tested here.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import entropy_jax as ej

STEPS = 400


def _bits(tree):
  return [np.asarray(x).tobytes() for x in jax.tree.leaves(tree)]


def _log_probs(steps=STEPS):
  return np.random.default_rng(1).normal(-1.0, 2.0, size=(steps, 16)).astype(np.float32)


def test_the_default_optimizer_steps_to_the_same_bits_alone_vmapped_and_scanned():
  lps = _log_probs()
  single, pop = ej.init_entropy_state(-2.0), ej.init_population(-2.0, size=3)
  update, vmapped = jax.jit(ej.continuous_update), jax.jit(jax.vmap(ej.continuous_update))
  for lp in lps:
    single, _ = update(single, lp)
    pop, _ = vmapped(pop, jnp.tile(lp, (3, 1)))
    for member in range(3):
      assert _bits(jax.tree.map(lambda x, m=member: x[m], pop)) == _bits(single)
  scanned, _ = jax.jit(lambda s, xs: jax.lax.scan(lambda s, x: (ej.continuous_update(s, x)[0], None), s, xs))(
    ej.init_entropy_state(-2.0), lps
  )
  assert _bits(scanned) == _bits(single)
  assert int(single.step) == STEPS and float(single.log_alpha) != 0.0


def test_the_continuous_update_steps_to_the_same_bits_in_the_compat_class():
  state, module = ej.init_entropy_state(-2.0), ej.EntropyModule(2)
  update = jax.jit(ej.continuous_update)
  for lp in _log_probs():
    state, _ = update(state, lp)
    module.gradient_step(module.compute_loss(lp))
    assert _bits(module.state) == _bits(state)


def test_the_discrete_update_steps_to_the_same_bits_in_the_compat_class():
  logits = np.random.default_rng(2).normal(size=(200, 16, 4)).astype(np.float32)
  probs, log_probs = np.asarray(jax.nn.softmax(logits)), np.asarray(jax.nn.log_softmax(logits))
  state, module = ej.init_entropy_state(ej.discrete_target(4)), ej.EntropyModuleDiscrete(4)
  update = jax.jit(ej.discrete_update)
  for p, lp in zip(probs, log_probs):
    state, _ = update(state, p, lp)
    module.gradient_step(module.compute_loss(p, lp))
    assert _bits(module.state) == _bits(state)
