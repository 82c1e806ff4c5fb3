"""The packed form of a pytree (entropy_jax._packing): one flat buffer per
dtype, exact for every dtype."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _trees import assert_bit_identical

import entropy_jax as ej
from entropy_jax import _packing


def _tree():
  return {
    "f32": jnp.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45], jnp.float32),
    "bf16": jnp.array([1.5, -2.25], jnp.bfloat16),
    "i32": jnp.array([2**31 - 1, -(2**31)], jnp.int32),
    "matrix": jnp.arange(6, dtype=jnp.float32).reshape(2, 3),
    "u8": jnp.array([0, 255], jnp.uint8),
    "bool": jnp.array([True, False, True]),
    "scalar": jnp.float32(-3.5),
    "empty": jnp.zeros((0, 2), jnp.float32),
  }


def test_round_trip_is_bit_exact_for_every_dtype():
  tree = _tree()
  layout = _packing.layout_of(tree)
  buffers = jax.jit(_packing.pack, static_argnums=0)(layout, tree)
  # Leaves sort by key: bf16, bool, empty, f32, i32, matrix, scalar, u8.
  assert layout.groups == ("bfloat16", "bool", "float32", "int32", "uint8")
  assert [b.shape for b in buffers] == [(2,), (3,), (0 + 6 + 6 + 1,), (2,), (2,)]
  assert [b.dtype.name for b in buffers] == list(layout.groups)
  back = jax.jit(_packing.unpack, static_argnums=0)(layout, buffers)
  assert jax.tree.structure(back) == jax.tree.structure(tree)
  for name in tree:
    assert back[name].dtype == tree[name].dtype and back[name].shape == tree[name].shape, name
  assert_bit_identical(back, tree)


def test_buffers_hold_the_leaves_of_each_dtype_in_leaf_order():
  tree = (jnp.float32(1.0), jnp.int32(-1), jnp.array([2.0, 3.0], jnp.float32), jnp.int32(7))
  f32, i32 = _packing.pack(_packing.layout_of(tree), tree)
  np.testing.assert_array_equal(f32, np.array([1.0, 2.0, 3.0], np.float32))
  np.testing.assert_array_equal(i32, np.array([-1, 7], np.int32))


def test_entropy_state_round_trip_after_a_step():
  state = ej.init_entropy_state(
    -3.0, initial_alpha=0.3, optimizer=optax.inject_hyperparams(optax.adam)(learning_rate=0.1)
  )
  state, _ = ej.continuous_update(state, jnp.linspace(-5.0, 1.0, 16))
  layout = _packing.layout_of(state)
  assert layout.groups == ("float32", "int32")
  back = _packing.unpack(layout, _packing.pack(layout, state))
  assert isinstance(back, ej.EntropyState)
  assert back.tx is state.tx
  assert_bit_identical(back, state)


def test_mismatches_are_named():
  tree = (jnp.float32(0.0), jnp.int32(0))
  layout = _packing.layout_of(tree)
  with pytest.raises(
    ValueError,
    match=r"unpack: expected buffers of shapes \[\(1,\), \(1,\)\] and dtypes"
    r" \['float32', 'int32'\]; got shapes \[\(1,\), \(2,\)\]",
  ):
    _packing.unpack(layout, (jnp.zeros(1), jnp.zeros(2, jnp.int32)))
  with pytest.raises(ValueError, match=r"got shapes \[\(1,\), \(1,\)\] and dtypes \['float32', 'float32'\]"):
    _packing.unpack(layout, (jnp.zeros(1), jnp.zeros(1)))
  with pytest.raises(ValueError, match=r"pack: expected leaves \[\(\(\), 'float32'\), \(\(\), 'int32'\)\]"):
    _packing.pack(layout, (jnp.float32(0.0), jnp.float32(0.0)))


def test_float64_under_x64():
  with jax.enable_x64(True):
    tree = (jnp.array([np.pi, -1e300], jnp.float64), jnp.array(2**40, jnp.int64))
    layout = _packing.layout_of(tree)
    assert layout.buffer_sizes == (2, 1)
    assert_bit_identical(_packing.unpack(layout, _packing.pack(layout, tree)), tree)


def test_locate_finds_each_leaf_in_its_buffer():
  tree = (jnp.float32(1.0), jnp.int32(-1), jnp.array([2.0, 3.0], jnp.float32), jnp.int32(7), jnp.float32(4.0))
  layout = _packing.layout_of(tree)
  buffers = _packing.pack(layout, tree)
  for i, leaf in enumerate(tree):
    buffer, start = _packing.locate(layout, i)
    flat = np.ravel(leaf)
    np.testing.assert_array_equal(np.asarray(buffers[buffer])[start : start + flat.size], flat)
  assert [_packing.locate(layout, i) for i in range(5)] == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 3)]
