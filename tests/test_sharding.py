"""Populations sharded over 8 virtual CPU devices (entropy_jax.sharding).

Run with XLA_FLAGS=--xla_force_host_platform_device_count=8 (tests/conftest.py
and the Makefile set it). Every sharded update must give, bit for bit, what one
device computes for the same members; keep its outputs member-sharded and
static fields untouched; and compile to a program with no cross-device
communication.

"What one device computes" is the same jitted `vmap(update)` run on device 0,
one block of `N / 8` members at a time: the per-device program. Run on all
`N` members at once, XLA:CPU may sum a row of the batch in another order (its
reduction code depends on the array's shape: `jnp.sum(x, -1)` of a
`[256, 16]` float32 array differs in the last bits from the same rows summed
as eight `[32, 16]` blocks, sharding or not), so that comparison holds to
float32 rounding, not bit for bit; `test_sharded_update_matches_whole_population_run`
checks it.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _trees import assert_bit_identical
from jax.sharding import NamedSharding, PartitionSpec

from benchmarks import hlo_report
from entropy_jax import sharding
from entropy_jax.state import init_entropy_state, init_population
from entropy_jax.update import apply_gradients, continuous_update, discrete_update

DEVICES = 8
N, B, A = 32, 8, 5
STEPS = 3

_MISSING = (
  f"entropy_jax sharding tests need {DEVICES} devices; jax sees"
  f" {jax.device_count()} ({jax.devices()[0].platform}). Run them with"
  f" XLA_FLAGS=--xla_force_host_platform_device_count={DEVICES} set before jax"
  f" starts (tests/conftest.py and `make test` do); XLA_FLAGS is now"
  f" {os.environ.get('XLA_FLAGS')!r}."
)


@pytest.fixture(scope="module")
def mesh():
  # tests/conftest.py and `make test` ask for 8 virtual CPU devices: fewer is an error.
  assert jax.device_count() >= DEVICES, _MISSING
  return sharding.population_mesh(jax.devices()[:DEVICES])


def test_the_suite_sees_the_devices_xla_flags_asks_for():
  # tests/conftest.py asks for them before jax starts; no sharding test is ever skipped.
  assert f"--xla_force_host_platform_device_count={DEVICES}" in os.environ.get("XLA_FLAGS", "")
  assert jax.device_count() >= DEVICES, _MISSING


# ----------------------------------------------------------------------------
# Inputs.


TX = optax.inject_hyperparams(optax.adam)(learning_rate=3e-4)  # one object: equal static fields


def _population(loss_form="log", seed=0):
  rng = np.random.default_rng(seed)
  return init_population(
    jnp.asarray(rng.uniform(-3.0, 1.5, N), jnp.float32),
    initial_alpha=jnp.asarray(rng.uniform(0.05, 2.0, N), jnp.float32),
    optimizer=TX,
    min_alpha=1e-3,
    max_alpha=10.0,
    loss_form=loss_form,
    learning_rate=jnp.asarray(rng.uniform(1e-3, 0.3, N), jnp.float32),
  )


def _ramp(step, start, end):
  return start + (end - start) * jnp.minimum(step / 4.0, 1.0)


def _scheduled_population():
  """Members with their own schedule parameters, stacked by hand."""
  tx = optax.sgd(0.05)  # one object: static fields must be equal to stack
  members = [
    init_entropy_state(
      jax.tree_util.Partial(_ramp, jnp.float32(-i / 4.0), jnp.float32(-1.0 - i)),
      initial_alpha=0.1 + 0.05 * i,
      optimizer=tx,
    )
    for i in range(N)
  ]
  return jax.tree.map(lambda *xs: jnp.stack(xs), *members)


def _continuous_case():
  rng = np.random.default_rng(1)
  log_probs = rng.normal(-1.0, 2.0, (N, B)).astype(np.float32)
  log_probs[3, 2] = np.nan  # member 3 skips every step
  weights = rng.uniform(0.0, 2.0, (N, B)).astype(np.float32)
  args = (jnp.asarray(log_probs),)
  return continuous_update, _population(), args, {"weights": jnp.asarray(weights)}


MASKED_DISCRETE = functools.partial(discrete_update, masked_target_ratio=0.98)


def _discrete_case():
  rng = np.random.default_rng(2)
  logits = rng.normal(0.0, 2.0, (N, B, A)).astype(np.float32)
  mask = rng.uniform(size=(N, B, A)) > 0.3
  mask[..., 0] = True
  logits = np.where(mask, logits, -np.inf)
  log_probs = jax.nn.log_softmax(jnp.asarray(logits), axis=-1)
  args = (jnp.exp(log_probs), log_probs)
  return MASKED_DISCRETE, _population(loss_form="alpha"), args, {"mask": jnp.asarray(mask)}


def _gradient_case():
  rng = np.random.default_rng(3)
  grads = rng.normal(0.0, 1.0, N).astype(np.float32)
  grads[5] = np.inf
  return apply_gradients, _population(), (jnp.asarray(grads),), {}


def _schedule_case():
  grads = jnp.linspace(-1.0, 1.0, N, dtype=jnp.float32)
  return apply_gradients, _scheduled_population(), (grads,), {}


CASES = {
  "continuous": _continuous_case,
  "discrete": _discrete_case,
  "apply_gradients": _gradient_case,
  "schedule": _schedule_case,
}
MAKERS = {"jit": sharding.sharded_update, "shard_map": sharding.shard_mapped_update}


@functools.cache
def _update(maker, fn, mesh):
  """One compiled update per (maker, fn, mesh), shared by the tests."""
  return MAKERS[maker](fn, mesh)


@functools.cache
def _batched(fn):
  return jax.jit(jax.vmap(lambda s, a, k: fn(s, *a, **k)))


def _run(update, state, args, kwargs, steps=STEPS):
  out = None
  for _ in range(steps):
    out = update(state, *args, **kwargs)
    state = out[0] if isinstance(out, tuple) else out
  return out


def _single_device(fn, state, args, kwargs, blocks=DEVICES, steps=STEPS):
  """`steps` updates by jit(vmap(fn)) on one device, `N / blocks` members at a time."""
  device = jax.devices()[0]  # the mesh's first device
  batched = _batched(fn)
  size = N // blocks
  outs = []
  for i in range(blocks):
    block = jax.tree.map(lambda x, i=i: x[i * size : (i + 1) * size], (state, args, kwargs))
    block = jax.device_put(block, device)
    outs.append(_run(lambda s, *a, **k: batched(s, a, k), *block, steps=steps))
  return jax.tree.map(lambda *xs: jnp.concatenate(xs), *outs)


# ----------------------------------------------------------------------------
# Placement.


def test_shard_population_splits_every_leaf_along_members(mesh):
  pop = _population()
  sharded = sharding.shard_population(pop, mesh)
  expected = NamedSharding(mesh, PartitionSpec("members"))
  assert sharding.member_sharding(mesh) == expected
  assert sharded.tx is pop.tx and sharded.loss_form == pop.loss_form
  leaves = jax.tree.leaves(sharded)
  assert len(leaves) == len(jax.tree.leaves(pop)) > 10
  for leaf, original in zip(leaves, jax.tree.leaves(pop)):
    assert leaf.sharding == expected
    shards = leaf.addressable_shards
    assert sorted(s.device.id for s in shards) == sorted(d.id for d in mesh.devices.flat)
    for s in shards:
      assert s.data.shape == (N // DEVICES,)
      np.testing.assert_array_equal(np.asarray(s.data), np.asarray(original)[s.index])


def test_batches_shard_on_their_member_axis_only(mesh):
  batch = jnp.arange(N * B * A, dtype=jnp.float32).reshape(N, B, A)
  sharded = sharding.shard_population(batch, mesh)
  for s in sharded.addressable_shards:
    assert s.data.shape == (N // DEVICES, B, A)
    np.testing.assert_array_equal(np.asarray(s.data), np.asarray(batch)[s.index])


def test_reshard_from_eight_devices_to_four(mesh):
  pop = sharding.shard_population(_population(), mesh)
  mesh4 = sharding.population_mesh(jax.devices()[:4])
  moved = sharding.shard_population(pop, mesh4)
  assert_bit_identical(moved, pop)
  for leaf in jax.tree.leaves(moved):
    assert leaf.sharding == sharding.member_sharding(mesh4)
    assert {s.data.shape for s in leaf.addressable_shards} == {(N // 4,)}


# ----------------------------------------------------------------------------
# Updates: bitwise equal to one device, sharded, no communication.


@pytest.mark.parametrize("maker", sorted(MAKERS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_sharded_update_equals_single_device_bitwise(mesh, case, maker):
  fn, pop, args, kwargs = CASES[case]()
  expected = _single_device(fn, pop, args, kwargs)

  update = _update(maker, fn, mesh)
  s_pop, s_args, s_kwargs = sharding.shard_population((pop, args, kwargs), mesh)
  got = _run(update, s_pop, s_args, s_kwargs)
  assert_bit_identical(got, expected)

  state = got[0] if isinstance(got, tuple) else got
  assert state.tx is pop.tx and state.loss_form == pop.loss_form
  assert np.all(np.asarray(state.step) + np.asarray(state.skipped) == STEPS)
  assert not np.array_equal(np.asarray(state.log_alpha), np.asarray(pop.log_alpha))
  member = sharding.member_sharding(mesh)
  for leaf in jax.tree.leaves(got):
    assert leaf.sharding.is_equivalent_to(member, leaf.ndim), leaf.sharding

  hlo = update.lower(s_pop, *s_args, **s_kwargs).compile().as_text()
  assert hlo_report.collectives(hlo) == []


@pytest.mark.parametrize("case", ["continuous"])
def test_sharded_update_matches_whole_population_run(mesh, case):
  # Against jit(vmap) over all N members on one device: the batch means may be
  # summed in another order (see the module docstring), so float leaves agree
  # to float32 rounding of a B-term sum; counters and untouched leaves exactly.
  fn, pop, args, kwargs = CASES[case]()
  expected = _single_device(fn, pop, args, kwargs, blocks=1)
  got = _run(_update("jit", fn, mesh), *sharding.shard_population((pop, args, kwargs), mesh))
  for path, g, e in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(got), jax.tree.leaves(expected)):
    g, e = np.asarray(g), np.asarray(e)
    assert g.dtype == e.dtype and g.shape == e.shape
    if np.issubdtype(g.dtype, np.integer):
      np.testing.assert_array_equal(g, e, err_msg=jax.tree_util.keystr(path[0]))
    else:
      np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6, err_msg=jax.tree_util.keystr(path[0]))


def test_updates_skip_the_non_finite_members_only(mesh):
  # The NaN of member 3 (continuous) and the inf gradient of member 5 stay
  # with their members when the population is split over devices.
  fn, pop, (log_probs,), kwargs = _continuous_case()
  state, metrics = _update("jit", fn, mesh)(*sharding.shard_population((pop, log_probs), mesh), **kwargs)
  np.testing.assert_array_equal(np.asarray(state.skipped), np.eye(N, dtype=np.int32)[3])
  np.testing.assert_array_equal(np.isnan(np.asarray(metrics["loss"])), np.eye(N, dtype=bool)[3])
  np.testing.assert_array_equal(np.asarray(state.log_alpha)[3], np.asarray(pop.log_alpha)[3])
  fn, pop, (grads,), _ = _gradient_case()
  state = _update("shard_map", fn, mesh)(*sharding.shard_population((pop, grads), mesh))
  np.testing.assert_array_equal(np.asarray(state.skipped), np.eye(N, dtype=np.int32)[5])


def test_unsharded_inputs_are_placed_by_the_update(mesh):
  fn, pop, args, kwargs = _continuous_case()
  state, metrics = _update("jit", fn, mesh)(pop, *args, **kwargs)
  one_step = _single_device(fn, pop, args, kwargs, steps=1)
  assert_bit_identical((state, metrics), one_step)
  for leaf in jax.tree.leaves((state, metrics)):
    assert leaf.sharding == sharding.member_sharding(mesh)


# ----------------------------------------------------------------------------
# Errors name what was expected and what was received.


def test_population_that_does_not_divide_the_mesh_is_rejected(mesh):
  pop = init_population(-1.0, size=N + 2)
  with pytest.raises(ValueError, match=r"N=34 members .* 8 devices .* N=40"):
    sharding.shard_population(pop, mesh)
  with pytest.raises(ValueError, match=r"N=34 members .* 8 devices"):
    sharding.sharded_update(apply_gradients, mesh)(pop, jnp.zeros(N + 2))


def test_leaves_must_share_a_leading_member_axis(mesh):
  pop = init_population(-1.0, size=N)
  with pytest.raises(ValueError, match=r"leading sizes \[16, 32\]"):
    sharding.shard_population((pop, jnp.zeros((16, B))), mesh)
  single = init_entropy_state(-1.0)
  with pytest.raises(ValueError, match=r"leading member axis \[N, \.\.\.\]; got leaves of shape \[\(\)\]"):
    sharding.shard_population(single, mesh)
  with pytest.raises(ValueError, match=r"leading sizes"):
    sharding.shard_mapped_update(apply_gradients, mesh)(pop, jnp.zeros(16))


def test_unknown_mesh_axis_is_rejected(mesh):
  with pytest.raises(ValueError, match=r"axis 'batch' is not in the mesh; its axes are \('members',\)"):
    sharding.member_sharding(mesh, "batch")
  with pytest.raises(ValueError, match=r"axis 'batch'"):
    sharding.shard_mapped_update(apply_gradients, mesh, axis_name="batch")
  with pytest.raises(ValueError, match=r"`devices` is empty"):
    sharding.population_mesh([])


# ----------------------------------------------------------------------------
# Checkpoints: saved from 8 devices, restored onto 4.


def test_checkpoint_saved_on_eight_devices_restores_onto_four(mesh, tmp_path):
  from entropy_jax.checkpoint import restore_checkpoint, save_checkpoint

  fn, pop, args, kwargs = _continuous_case()
  s_args, s_kwargs = sharding.shard_population((args, kwargs), mesh)
  trained, _ = _run(_update("jit", fn, mesh), sharding.shard_population(pop, mesh), s_args, s_kwargs)
  path = save_checkpoint(tmp_path / "population.ckpt", trained)

  # Restore into an abstract population that carries the 4-device sharding:
  # nothing is built on the devices before the file is read.
  mesh4 = sharding.population_mesh(jax.devices()[:4])
  member4 = sharding.member_sharding(mesh4)
  abstract = jax.eval_shape(lambda: _population())
  like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=member4), abstract)
  restored = restore_checkpoint(path, like)

  assert_bit_identical(restored, trained)
  assert restored.tx is like.tx and restored.loss_form == trained.loss_form
  for leaf in jax.tree.leaves(restored):
    assert leaf.sharding == member4
    assert {s.data.shape for s in leaf.addressable_shards} == {(N // 4,)}

  # Training goes on, on 4 devices, exactly as one device runs 4 blocks of N/4.
  args4, kwargs4 = sharding.shard_population((args, kwargs), mesh4)
  resumed = _run(_update("jit", fn, mesh4), restored, args4, kwargs4)
  host = jax.device_put(trained, jax.devices()[0])  # one device
  assert_bit_identical(resumed, _single_device(fn, host, args, kwargs, blocks=4))
  assert np.all(np.asarray(resumed[0].step + resumed[0].skipped) == 2 * STEPS)


def test_the_device_flag_is_added_to_existing_xla_flags():
  # tests/conftest.py keeps a user's own XLA options and adds the device count.
  conftest = os.path.join(os.path.dirname(os.path.abspath(__file__)), "conftest.py")
  code = f"import os, runpy; runpy.run_path({conftest!r}); print(os.environ['XLA_FLAGS'])"
  for before, after in (
    ("--xla_cpu_use_thunk_runtime=true", "--xla_cpu_use_thunk_runtime=true --xla_force_host_platform_device_count=8"),
    ("", "--xla_force_host_platform_device_count=8"),
    ("--xla_force_host_platform_device_count=4", "--xla_force_host_platform_device_count=4"),
  ):
    env = dict(os.environ, XLA_FLAGS=before)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == after
