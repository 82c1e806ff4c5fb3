"""Tests of entropy_jax.targets: the default targets and Velora's (defective) discrete one."""

import math
import re

import jax.numpy as jnp
import numpy as np
import pytest

import entropy_jax as ej


def test_continuous_target():
  assert ej.continuous_target(1) == -1.0 and ej.continuous_target(6) == -6.0


@pytest.mark.parametrize("a", [2, 3, 6, 18])
def test_discrete_target_is_the_measured_ratio_and_positive(a):
  expected = pytest.approx(0.6 * math.log(a))
  assert ej.discrete_target(a) == expected == pytest.approx(ej.DISCRETE_TARGET_RATIO * math.log(a))
  assert ej.discrete_target(a) > 0
  assert ej.discrete_target(a, ej.PAPER_DISCRETE_TARGET_RATIO) == pytest.approx(0.98 * math.log(a))
  assert ej.discrete_target(a, ratio=0.5) == pytest.approx(0.5 * math.log(a))


@pytest.mark.parametrize("a", [2, 3, 6, 18])
def test_velora_target_is_negative_mirror(a):
  # Velora 0.2.0: 0.98 * log(1 / A) -- below any categorical entropy (>= 0).
  assert ej.velora_discrete_target(a) == pytest.approx(-0.98 * math.log(a), rel=1e-6)
  assert ej.velora_discrete_target(a) < 0


@pytest.mark.parametrize(
  "bad, err, message",
  [
    (0, ValueError, r"`action_dim` must be a positive int; got 0"),
    (-3, ValueError, r"`action_dim` must be a positive int; got -3"),
    (2.0, TypeError, r"`action_dim` must be a positive int; got 2\.0 of type float"),
    (True, TypeError, r"`action_dim` must be a positive int; got True of type bool"),
    ("4", TypeError, r"`action_dim` must be a positive int; got '4' of type str"),
  ],
)
def test_action_dim_validation(bad, err, message):
  for fn in (ej.continuous_target, ej.discrete_target, ej.velora_discrete_target):
    with pytest.raises(err, match=f"{fn.__name__}: {message}"):
      fn(bad)


@pytest.mark.parametrize("ratio", [float("nan"), float("inf"), 1e39])
def test_ratio_must_be_finite_in_float32(ratio):
  with pytest.raises(ValueError, match=rf"^discrete_target: `ratio` .*got {re.escape(repr(ratio))}"):
    ej.discrete_target(4, ratio)


def test_masked_target_counts_valid_actions():
  mask = jnp.array([[True, True, True, True], [True, False, True, False], [False, False, True, False]])
  np.testing.assert_allclose(ej.masked_discrete_target(mask), 0.6 * np.log([4.0, 2.0, 1.0]), rtol=1e-6)
  expected = [0.9 * math.log(4), 0.9 * math.log(2), 0.0]
  np.testing.assert_allclose(ej.masked_discrete_target(mask, 0.9), expected, rtol=1e-6)
  with pytest.raises(ValueError, match=r"^masked_discrete_target: `mask` .*got float32"):
    ej.masked_discrete_target(jnp.ones((2, 2)))
