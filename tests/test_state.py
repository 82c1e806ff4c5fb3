"""Tests of entropy_jax.state: initialisation, validation, populations, pytree behaviour."""

import math

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from entropy_jax import EntropyState, init_entropy_state, init_population


def test_init_values_and_dtypes():
  s = init_entropy_state(-3.0, initial_alpha=0.2)
  np.testing.assert_allclose(s.log_alpha, math.log(0.2), rtol=1e-6)
  np.testing.assert_allclose(s.alpha, 0.2, rtol=1e-6)
  assert s.log_alpha.dtype == s.target.dtype == jnp.float32
  assert s.step.dtype == s.skipped.dtype == jnp.int32
  assert int(s.step) == int(s.skipped) == 0
  assert float(s.target) == -3.0
  assert s.log_alpha_min == -jnp.inf and s.log_alpha_max == jnp.inf
  assert s.target_schedule is None and s.loss_form == "log"


def test_init_under_x64_keeps_float32():
  with jax.enable_x64(True):
    s = init_entropy_state(-1.0)
    assert s.log_alpha.dtype == jnp.float32 and s.step.dtype == jnp.int32


def test_state_is_immutable_pytree_with_static_optimizer():
  tx = optax.sgd(0.1)
  s = init_entropy_state(-1.0, optimizer=tx)
  with pytest.raises(Exception):
    s.log_alpha = jnp.float32(1.0)
  leaves, treedef = jax.tree.flatten(s)
  assert all(isinstance(x, jax.Array) for x in leaves)
  assert jax.tree.unflatten(treedef, leaves).tx is tx
  assert s.replace(target=jnp.float32(2.0)).target == 2.0 and s.target == -1.0


@pytest.mark.parametrize(
    "kwargs, err, msg",
    [
        ({"initial_alpha": 0.0}, ValueError, "initial_alpha.*positive and finite.*0.0"),
        ({"initial_alpha": -1.0}, ValueError, "initial_alpha"),
        ({"initial_alpha": float("nan")}, ValueError, "initial_alpha.*nan"),
        ({"initial_alpha": float("inf")}, ValueError, "initial_alpha.*inf"),
        ({"optimizer": "adam"}, TypeError, "GradientTransformation; got str"),
        ({"loss_form": "exp"}, ValueError, "loss_form.*'exp'"),
        ({"min_alpha": 0.5, "max_alpha": 0.1}, ValueError, "min_alpha < max_alpha"),
        ({"min_alpha": 2.0}, ValueError, "outside the bounds"),
        ({"max_alpha": -1.0}, ValueError, "max_alpha.*positive"),
    ],
)
def test_init_validation(kwargs, err, msg):
  with pytest.raises(err, match=msg):
    init_entropy_state(-1.0, **kwargs)


@pytest.mark.parametrize("target", [float("nan"), float("inf")])
def test_init_rejects_non_finite_target(target):
  with pytest.raises(ValueError, match="target.*finite"):
    init_entropy_state(target)


def test_init_rejects_non_scalar_target():
  with pytest.raises(ValueError, match=r"target.*scalar; got shape \(2,\)"):
    init_entropy_state(jnp.array([1.0, 2.0]))


def test_bounds_are_log_space():
  s = init_entropy_state(-1.0, initial_alpha=0.5, min_alpha=0.01, max_alpha=10.0)
  np.testing.assert_allclose([s.log_alpha_min, s.log_alpha_max], np.log([0.01, 10.0]), rtol=1e-6)


def test_schedule_target_starts_at_schedule_zero():
  s = init_entropy_state(optax.linear_schedule(-1.0, -3.0, 100))
  assert float(s.target) == -1.0
  assert isinstance(s.target_schedule, jax.tree_util.Partial)


def test_population_per_member_values():
  tx = optax.inject_hyperparams(optax.adam)(learning_rate=3e-4)
  targets = jnp.array([-1.0, -2.0, -3.0])
  pop = init_population(targets, initial_alpha=jnp.array([1.0, 0.5, 0.2]), optimizer=tx,
                        learning_rate=jnp.array([1e-3, 1e-2, 1e-1]))
  np.testing.assert_array_equal(pop.target, targets)
  np.testing.assert_allclose(pop.alpha, [1.0, 0.5, 0.2], rtol=1e-6)
  np.testing.assert_allclose(pop.opt_state.hyperparams["learning_rate"], [1e-3, 1e-2, 1e-1])
  assert pop.step.shape == (3,)
  # Same thing as stacking individually built members.
  members = [init_entropy_state(float(t), initial_alpha=a, optimizer=tx) for t, a in zip(targets, [1.0, 0.5, 0.2])]
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *members)
  for got, want in zip(jax.tree.leaves(pop.replace(opt_state=stacked.opt_state)), jax.tree.leaves(stacked)):
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_population_errors():
  with pytest.raises(ValueError, match="size"):
    init_population(-1.0)
  with pytest.raises(ValueError, match="share N=2"):
    init_population(jnp.zeros(2), initial_alpha=jnp.ones(3))
  with pytest.raises(ValueError, match="inject_hyperparams"):
    init_population(jnp.zeros(2), optimizer=optax.adam(1e-3), learning_rate=0.1)
  with pytest.raises(ValueError, match="initial_alpha"):
    init_population(jnp.zeros(2), initial_alpha=jnp.array([1.0, -1.0]))


def test_population_scalar_broadcast():
  pop = init_population(-2.0, size=4)
  assert pop.log_alpha.shape == pop.target.shape == (4,)


def test_flax_serialization_round_trip():
  s = init_entropy_state(-1.0, initial_alpha=0.3)
  restored = flax.serialization.from_bytes(s, flax.serialization.to_bytes(s))
  assert isinstance(restored, EntropyState)
  for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(restored)):
    np.testing.assert_array_equal(a, b)
