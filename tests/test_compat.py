"""Tests of entropy_jax.compat, the Velora-compatible classes: closed-form
values, the loss/step protocol, trace counts, non-finite input, torch tensors
and devices, config and state_dicts. The comparison with the real Velora is
in test_compat_velora.py."""

import dataclasses
import math
import pickle
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from _trees import assert_bit_identical as assert_state_equal
from hypothesis import given, settings
from hypothesis import strategies as st

from entropy_jax import _compat_calls
from entropy_jax.checkpoint import CheckpointError
from entropy_jax.compat import (
  EntropyModule,
  EntropyModuleDiscrete,
  EntropyParameters,
  LossMismatchError,
  NonFiniteLossError,
)

USABLE = r"must be positive and lie in the usable range \[1\.646e-38, 1\.652e\+38\]"
F32 = r"must be finite and representable in float32"


def step(module, *args, **kwargs):
  loss = module.compute_loss(*args, **kwargs)
  module.gradient_step(loss)
  return loss


# ----------------------------------------------------------------------------
# Construction.


@pytest.mark.parametrize("cls", [EntropyModule, EntropyModuleDiscrete])
def test_constructor_validation(cls):
  name = cls.__name__
  for bad in (0, -3):
    with pytest.raises(ValueError, match=f"{name}: `action_dim` must be a positive int; got {bad}"):
      cls(bad)
  for bad in (2.0, True, "2", None):
    with pytest.raises(TypeError, match=r"action_dim.*positive int"):
      cls(bad)
  for bad in (0.0, -1.0, math.nan, math.inf, 1e39, 1e-39):
    with pytest.raises(ValueError, match=f"{name}: `initial_alpha` {USABLE}"):
      cls(2, initial_alpha=bad)
  for bad, message in (
    (0.0, "must be positive; got 0.0"),
    (-1.0, "must be positive; got -1.0"),
    (math.nan, F32),
    (math.inf, F32),
    (1e39, F32),
    (1e-40, F32),
  ):
    with pytest.raises(ValueError, match=f"{name}: `lr` {message}"):
      cls(2, lr=bad)
  for bad in (math.nan, 1e39, 1e-40):
    with pytest.raises(ValueError, match=f"{name}: `target_entropy` {F32}"):
      cls(2, target_entropy=bad)
  with pytest.raises(TypeError, match="`target_entropy` must be a real number; got 'high'"):
    cls(2, target_entropy="high")
  with pytest.raises(
    ValueError, match="unknown optimizer name 'Adamax'; known names are 'Adam', 'AdamW', 'SGD', 'RMSprop'"
  ):
    cls(2, optim="Adamax")
  with pytest.raises(TypeError, match=r"factory.*got GradientTransformation"):
    cls(2, optim=optax.adam(1e-3))  # an instance, not a factory
  with pytest.raises(TypeError, match="must return an optax GradientTransformation; got int"):
    cls(2, optim=lambda learning_rate: 3)


def test_default_targets_and_attributes():
  m = EntropyModule(6, initial_alpha=0.2, lr=1e-3)
  assert float(m.target) == -6.0
  assert (m.action_dim, m.initial_alpha, m.lr, m.device) == (6, 0.2, 1e-3, None)
  np.testing.assert_allclose(float(m.log_alpha), np.log(np.float32(0.2)), rtol=1e-7)
  np.testing.assert_allclose(float(m.alpha), 0.2, rtol=1e-7)
  assert m.state.log_alpha is m.log_alpha and m.optim is m.state.tx
  d = EntropyModuleDiscrete(6)
  np.testing.assert_allclose(float(d.target), 0.6 * np.log(6), rtol=1e-7)
  assert float(EntropyModuleDiscrete(1).target) == 0.0
  assert float(EntropyModule(3, target_entropy=-1.5).target) == -1.5
  assert float(EntropyModuleDiscrete(3, target_entropy=0.3).target) == np.float32(0.3)
  with pytest.raises(AttributeError):
    m.lr = 1.0  # read-only: the optimizer was built with the old lr


def test_repr_names_the_optimizer():
  assert repr(EntropyModule(2)) == (
    "EntropyModule(action_dim=2, initial_alpha=1.0, optim=Adam, lr=0.0003, device=None)"
  )
  assert repr(EntropyModuleDiscrete(4, initial_alpha=0.2, optim="RMSprop", lr=0.01, device="cpu")) == (
    "EntropyModuleDiscrete(action_dim=4, initial_alpha=0.2, optim=RMSprop, lr=0.01, device=cpu)"
  )
  for name in ("Adam", "AdamW", "SGD", "RMSprop"):
    assert f"optim={name}," in repr(EntropyModule(2, optim=name))
  assert "optim=SGD," in repr(EntropyModule(2, optim=optax.sgd))
  assert "optim=lion," in repr(EntropyModule(2, optim=optax.lion))


# ----------------------------------------------------------------------------
# Losses and steps: closed forms.


def test_continuous_loss_and_step_closed_form():
  # mean(lp) = -2, target = -2: d loss / d log_alpha = -(mean + target) = 4.
  m = EntropyModule(2, initial_alpha=0.5, optim="SGD", lr=0.5)
  lp = jnp.array([-1.0, -2.0, -3.0, -2.0, -1.0, -2.0, -3.0, -2.0])
  loss = m.compute_loss(lp)
  assert isinstance(loss, jax.Array) and loss.shape == () and loss.dtype == jnp.float32
  np.testing.assert_allclose(float(loss), -np.log(0.5) * -4.0, rtol=1e-6)
  m.gradient_step(loss)
  np.testing.assert_allclose(float(m.log_alpha), np.log(0.5) - 0.5 * 4.0, rtol=1e-6)
  assert int(m.state.step) == 1 and int(m.state.skipped) == 0
  # [B, 1] is the same as [B].
  m2 = EntropyModule(2, initial_alpha=0.5, optim="SGD", lr=0.5)
  assert float(m2.compute_loss(lp[:, None])) == float(loss)


def test_discrete_loss_mask_and_per_state_target():
  # Row 0: uniform over 4 valid actions; row 1: uniform over 2 (actions 2, 3 masked).
  probs = jnp.array([[0.25] * 4, [0.5, 0.5, 0.0, 0.0]])
  log_probs = jnp.log(probs)  # -inf where p = 0: 0 * -inf counts as 0
  mask = jnp.array([[True] * 4, [True, True, False, False]])
  h = np.array([np.log(4), np.log(2)])
  m = EntropyModuleDiscrete(4, optim="SGD", lr=0.5)
  # Default target with a mask: per state 0.6 * log(n_valid).
  loss = m.compute_loss(probs, log_probs, mask=mask)
  np.testing.assert_allclose(float(loss), 0.0, atol=0)  # log_alpha = 0
  m.gradient_step(loss)
  grad = np.mean(h - 0.6 * h)
  np.testing.assert_allclose(float(m.log_alpha), -0.5 * grad, rtol=1e-5)
  # An explicit target applies to every state, mask or not.
  e = EntropyModuleDiscrete(4, optim="SGD", lr=0.5, target_entropy=1.0)
  step(e, probs, log_probs, mask=mask)
  np.testing.assert_allclose(float(e.log_alpha), -0.5 * np.mean(h - 1.0), rtol=1e-5)
  # Without a mask: the module's target 0.6 log 4 for every state;
  # loss = log_alpha * (mean_b H_b - target).
  d = EntropyModuleDiscrete(4, initial_alpha=2.0)
  got = d.compute_loss(probs, log_probs)
  np.testing.assert_allclose(float(got), np.log(2.0) * (np.mean(h) - 0.6 * np.log(4.0)), rtol=1e-6)


def test_discrete_action_dim_must_match():
  m = EntropyModuleDiscrete(4)
  p = jnp.full((3, 5), 0.2)
  with pytest.raises(ValueError, match=r"shape \[B, 4\] \(action_dim=4\); got shape \(3, 5\)"):
    m.compute_loss(p, jnp.log(p))
  with pytest.raises(ValueError, match=r"got shape \(\)"):
    m.compute_loss(jnp.float32(1.0), jnp.float32(0.0))
  with pytest.raises(ValueError, match=r"same shape \[B, A\]; got \(3, 4\) and \(3, 1\)"):
    m.compute_loss(jnp.full((3, 4), 0.25), jnp.zeros((3, 1)))
  with pytest.raises(ValueError, match=r"\[B\] or \[B, 1\]; got shape \(3, 2\)"):
    EntropyModule(2).compute_loss(jnp.zeros((3, 2)))
  # The core's trace-time checks reach the user unchanged; nothing is stepped.
  c = EntropyModule(2)
  with pytest.raises(TypeError, match="floating-point array; got dtype int32"):
    c.compute_loss(jnp.zeros((3,), jnp.int32))
  with pytest.raises(ValueError, match=r"empty batch \(shape \(0,\)\)"):
    c.compute_loss(jnp.zeros((0,)))
  with pytest.raises(ValueError, match=r"empty batch"):
    m.compute_loss(jnp.zeros((0, 4)), jnp.zeros((0, 4)))
  assert int(c.state.step) == 0 and int(m.state.step) == 0


# ----------------------------------------------------------------------------
# The loss / gradient_step protocol.


def test_gradient_step_rejects_any_other_loss_and_changes_nothing():
  m = EntropyModule(2, lr=1e-2)
  other = EntropyModule(2, lr=1e-2)
  lp = jnp.linspace(-3.0, 0.0, 8)
  with pytest.raises(LossMismatchError, match="no compute_loss call is pending"):
    m.gradient_step(jnp.float32(1.0))
  loss = m.compute_loss(lp)
  before = jax.tree.map(np.asarray, m.state)
  cases = [
    (loss * 2, "not returned by this module's compute_loss.*loss \\* 2"),
    (loss + 0, "not returned by this module's compute_loss"),
    (other.compute_loss(lp), "not returned by this module's compute_loss"),
    (float(loss), "expected the jax.Array returned.*got float"),
    (np.asarray(loss), "got ndarray"),
  ]
  for bad, message in cases:
    with pytest.raises(LossMismatchError, match=message):
      m.gradient_step(bad)
    assert_state_equal(m.state, before)
  # The pending loss still works after the rejections; then it is spent.
  m.gradient_step(loss)
  assert int(m.state.step) == 1
  after = jax.tree.map(np.asarray, m.state)
  with pytest.raises(LossMismatchError, match="already applied by gradient_step"):
    m.gradient_step(loss)
  assert_state_equal(m.state, after)
  # A loss superseded by a later compute_loss.
  old = m.compute_loss(lp)
  new = m.compute_loss(lp)
  with pytest.raises(LossMismatchError, match="superseded by a later compute_loss"):
    m.gradient_step(old)
  assert_state_equal(m.state, after)
  m.gradient_step(new)
  assert int(m.state.step) == 2


def test_no_recompiles_across_steps_and_modules():
  lp = jnp.linspace(-4.0, -1.0, 8)
  probs = jax.nn.softmax(jnp.arange(12.0).reshape(4, 3))
  fns = (_compat_calls.continuous_update.update, _compat_calls.discrete_update.update)
  c = EntropyModule(3, optim="RMSprop", lr=1e-2)
  d = EntropyModuleDiscrete(3, optim="RMSprop", lr=1e-2)
  step(c, lp)
  step(d, probs, jnp.log(probs))
  sizes = [f._cache_size() for f in fns]
  for _ in range(100):
    step(c, lp)
    step(d, probs, jnp.log(probs))
  # A second module with the same settings reuses the compiled calls too.
  c2 = EntropyModule(3, optim="RMSprop", lr=1e-2, initial_alpha=0.3, target_entropy=-1.0)
  for _ in range(10):
    step(c2, lp + 1.0)
  assert [f._cache_size() for f in fns] == sizes
  assert int(c.state.step) == 101 and int(d.state.step) == 101


def test_state_can_round_trip_through_jitted_code():
  from entropy_jax.update import continuous_update

  a, b = EntropyModule(2, lr=1e-2), EntropyModule(2, lr=1e-2)
  lp = jnp.linspace(-3.0, 0.0, 8)
  update = jax.jit(continuous_update)
  for _ in range(3):
    step(a, lp)
    b.state = update(b.state, lp)[0]
  assert_state_equal(a.state, b.state)
  # alpha / log_alpha / target follow the state, however it was set.
  for m in (a, b):
    assert float(m.alpha) == float(m.state.alpha) != 1.0
    assert m.log_alpha is m.state.log_alpha and m.target is m.state.target
  with pytest.raises(TypeError, match="expected an EntropyState; got dict"):
    b.state = {}
  with pytest.raises(ValueError, match="structure"):
    b.state = EntropyModule(2, optim="SGD").state
  # Same structure, another leaf shape or dtype: the packed buffer would not fit.
  with pytest.raises(ValueError, match=r"leaf shapes and dtypes .*\(\(\), 'int32'\)"):
    b.state = b.state.replace(log_alpha=jnp.int32(0))
  with pytest.raises(ValueError, match=r"leaf shapes and dtypes .*\(\(3,\), 'float32'\)"):
    b.state = b.state.replace(target=jnp.zeros(3))
  # Replacing the state supersedes a pending loss.
  loss = b.compute_loss(lp)
  b.state = a.state
  with pytest.raises(LossMismatchError, match="state was replaced"):
    b.gradient_step(loss)


# ----------------------------------------------------------------------------
# Non-finite input: a clear error, the state bit-identical.


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_log_probs_raise_and_change_nothing(bad):
  m = EntropyModule(2, lr=1e-2)
  lp = jnp.linspace(-3.0, 0.0, 8)
  step(m, lp)
  before = jax.tree.map(np.asarray, m.state)
  pending = m.compute_loss(lp)
  with pytest.raises(NonFiniteLossError, match=r"`log_probs` has 2 NaN/Inf of 8 values.*state is unchanged \(step 1"):
    m.compute_loss(lp.at[2:4].set(bad))
  assert_state_equal(m.state, before)
  m.gradient_step(pending)  # The failed call did not disturb the pending loss.
  assert int(m.state.step) == 2 and int(m.state.skipped) == 0


def test_non_finite_discrete_inputs_raise_but_zero_probability_actions_are_fine():
  d = EntropyModuleDiscrete(3, lr=1e-2)
  probs = jnp.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
  log_probs = jnp.log(probs)  # -inf for the p = 0 action: a valid input
  step(d, probs, log_probs)
  assert np.isfinite(float(d.log_alpha)) and int(d.state.step) == 1
  before = jax.tree.map(np.asarray, d.state)
  with pytest.raises(NonFiniteLossError, match="`probs` has 1 NaN/Inf of 6 values; `log_probs` has 0"):
    d.compute_loss(probs.at[1, 1].set(jnp.nan), log_probs)
  with pytest.raises(NonFiniteLossError, match="`log_probs` has 1 NaN/Inf"):
    d.compute_loss(probs, log_probs.at[1, 0].set(-jnp.inf))  # p = 0.2 with log p = -inf
  assert_state_equal(d.state, before)


def test_a_step_beyond_alphas_range_stops_at_its_edge():
  # A finite gradient (1e3) whose SGD step (lr 1e38) would leave float32's
  # range: the step is taken and stops at the edge, as at any bound.
  m = EntropyModule(1, optim="SGD", lr=1e38, target_entropy=0.0)
  step(m, jnp.array([-1e3]))
  assert float(m.log_alpha) == -87.0 and int(m.state.skipped) == 0 and int(m.state.step) == 1


def test_an_optimizer_state_that_overflows_raises_and_changes_nothing():
  # A factory whose statistic overflows float32 on a finite gradient: the
  # core skips that step, and the module says why.
  def overflowing(learning_rate):
    return optax.GradientTransformation(
      lambda params: jnp.float32(0.0),
      lambda updates, state, params=None: (-learning_rate * updates, state + updates * 1e30),
    )

  m = EntropyModule(1, optim=overflowing, lr=1e-2, target_entropy=0.0)
  before = jax.tree.map(np.asarray, m.state)
  with pytest.raises(
    NonFiniteLossError, match=r"the gradient 10000000000\.0 with lr 0\.01 would make the optimizer's state non-finite"
  ):
    m.compute_loss(jnp.array([-1e10]))
  assert_state_equal(m.state, before)


# ----------------------------------------------------------------------------
# Devices.


def test_devices():
  cpus = jax.devices("cpu")
  assert len(cpus) == 8  # tests/conftest.py asks for 8 virtual CPU devices
  m = EntropyModule(2, device="cpu:1")
  lp = jnp.linspace(-3.0, 0.0, 8)
  for _ in range(3):
    loss = step(m, lp)
  assert {cpus[1]} == loss.devices()
  assert all(x.devices() == {cpus[1]} for x in jax.tree.leaves(m.state))
  assert repr(m).endswith("device=cpu:1)")
  assert EntropyModule(2, device=cpus[2]).log_alpha.devices() == {cpus[2]}
  assert EntropyModule(2, device="cpu").log_alpha.devices() == {cpus[0]}
  assert EntropyModule(2, device=torch.device("cpu", 3)).log_alpha.devices() == {cpus[3]}
  assert EntropyModule(2, device=torch.device("cpu")).log_alpha.devices() == {cpus[0]}
  for gpu in ("cuda:0", "gpu:0", "cuda"):
    with pytest.raises(ValueError, match=f"device '{gpu}' is not available: this JAX has no gpu backend"):
      EntropyModule(2, device=gpu)
  with pytest.raises(ValueError, match=r"'cpu:8' is not available: there are 8 cpu devices"):
    EntropyModule(2, device="cpu:8")
  with pytest.raises(ValueError, match="cannot parse device 'banana'"):
    EntropyModule(2, device="banana")
  with pytest.raises(
    TypeError, match=r"`device` must be None, a jax\.Device, a torch\.device or a string.*got 0 of type int"
  ):
    EntropyModule(2, device=0)


# ----------------------------------------------------------------------------
# Config.


def test_config():
  cfg = EntropyModuleDiscrete(4, initial_alpha=0.2, lr=1e-3).config()
  assert isinstance(cfg, EntropyParameters)
  assert cfg.model_dump() == {"lr": 1e-3, "initial_alpha": 0.2, "target": float(np.float32(0.6 * np.log(4)))}
  assert EntropyModule(2).config().model_dump_json() == '{"lr":0.0003,"initial_alpha":1.0,"target":-2.0}'
  assert EntropyParameters.model_validate_json(cfg.model_dump_json()) == cfg
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.lr = 1.0
  with pytest.raises(ValueError, match="keys \\['initial_alpha', 'lr', 'target'\\]"):
    EntropyParameters.model_validate_json('{"lr": 1.0}')


# ----------------------------------------------------------------------------
# Checkpoints.


@pytest.mark.parametrize("optim", ["Adam", "AdamW", "SGD", "RMSprop"])
def test_state_dict_reload_continues_bit_identically(optim):
  rng = np.random.default_rng(0)
  batches = [rng.normal(-1.0, 1.0, size=(8,)).astype(np.float32) for _ in range(10)]
  straight = EntropyModule(2, initial_alpha=0.7, optim=optim, lr=1e-2)
  for lp in batches[:5]:
    step(straight, lp)
  saved = pickle.loads(pickle.dumps(straight.state_dict()))
  assert (saved["format"], saved["version"], saved["kind"]) == ("entropy_jax.compat", 2, "EntropyModule")
  resumed = EntropyModule(2, initial_alpha=0.7, optim=optim, lr=1e-2)
  resumed.load_state_dict(saved)
  assert_state_equal(resumed.state, straight.state)
  assert int(resumed.state.step) == 5
  assert float(resumed.alpha) == float(straight.alpha)
  for lp in batches[5:]:
    a, b = step(straight, lp), step(resumed, lp)
    assert float(a) == float(b)
  assert_state_equal(resumed.state, straight.state)


def test_state_dict_keeps_target_and_skipped_and_places_on_device():
  d = EntropyModuleDiscrete(3, target_entropy=0.5, device="cpu:2")
  d.state = d.state.replace(skipped=jnp.int32(4))
  fresh = EntropyModuleDiscrete(3, device="cpu:1")  # default target 0.6 log 3
  fresh.load_state_dict(d.state_dict())
  assert float(fresh.target) == 0.5 and int(fresh.state.skipped) == 4
  assert fresh.log_alpha.devices() == {jax.devices("cpu")[1]}


def test_load_state_dict_rejects_bad_dicts_and_changes_nothing():
  m = EntropyModule(2, lr=1e-2)
  lp = jnp.linspace(-3.0, 0.0, 8)
  step(m, lp)
  good = m.state_dict()
  pending = m.compute_loss(lp)
  before = jax.tree.map(np.asarray, m.state)

  def edited(**changes):
    return {**good, **changes}

  payload = good["state"]
  paths = [p for p, _, _ in payload["signature"]]

  def edited_leaf(path, value):
    leaves = list(payload["leaves"])
    leaves[paths.index(path)] = value
    return edited(state={**payload, "leaves": leaves})

  cases = [
    ("not a dict", TypeError, "expected a dict from state_dict\\(\\); got str"),
    ({"entropy_optim": {}}, ValueError, "not an entropy_jax state dict.*looks like a Velora state_dict"),
    ({}, ValueError, "not an entropy_jax state dict"),
    (edited(version=1), ValueError, "format version 1; this entropy_jax reads version 2"),
    (
      EntropyModuleDiscrete(2, lr=1e-2).state_dict(),
      ValueError,
      "from a 'EntropyModuleDiscrete'; this module is a 'EntropyModule'",
    ),
    (edited(action_dim=3), ValueError, "action_dim=3; this module has action_dim=2"),
    (edited(optim="SGD"), ValueError, "optim='SGD'; this module has optim='Adam'"),
    (edited(lr=3e-4), ValueError, "lr=0.0003; this module has lr=0.01"),
    # The state itself: the checkpoint module's rules, and its error.
    (edited(state=None), CheckpointError, "no format version in the payload"),
    (edited(state={**payload, "leaves": payload["leaves"][:-1]}), CheckpointError, "expected 9 arrays"),
    (
      edited(state={**payload, "signature": payload["signature"][1:]}),
      CheckpointError,
      "structure mismatch; leaves expected by `like` but not saved: \\['\\.log_alpha'\\]",
    ),
    (
      edited_leaf(".log_alpha", np.float64(0.5)),
      CheckpointError,
      r"leaf \.log_alpha should be float32\[\], got float64\[\]",
    ),
    (
      edited_leaf(".step", np.zeros((2,), np.int32)),
      CheckpointError,
      r"leaf \.step should be int32\[\], got int32\[2\]",
    ),
    (edited_leaf(".target", "high"), CheckpointError, r"leaf \.target should be float32\[\], got str"),
    (
      edited_leaf(".log_alpha", np.float32(np.nan)),
      CheckpointError,
      r"`state\.log_alpha` must lie in \[-87, 88\]; got nan",
    ),
    (edited_leaf(".target", np.float32(np.inf)), CheckpointError, r"`state\.target` must be finite"),
  ]
  for bad, error, message in cases:
    with pytest.raises(error, match=message):
      m.load_state_dict(bad)
    assert_state_equal(m.state, before)
  m.gradient_step(pending)  # Failed loads did not touch the pending loss.
  # A successful load supersedes a pending loss.
  pending = m.compute_loss(lp)
  m.load_state_dict(good)
  with pytest.raises(LossMismatchError, match="load_state_dict replaced the state"):
    m.gradient_step(pending)


def test_skip_detection_follows_a_state_with_earlier_skips():
  # The module compares the stepped state's `skipped` counter with the one it holds:
  # a state that arrives with earlier skips must not read as a fresh skip.
  m = EntropyModule(2, lr=1e-2)
  m.state = m.state.replace(skipped=jnp.int32(5))
  lp = jnp.linspace(-3.0, 0.0, 8)
  step(m, lp)
  assert int(m.state.skipped) == 5 and int(m.state.step) == 1
  before = m.state
  with pytest.raises(NonFiniteLossError):
    m.compute_loss(lp.at[0].set(jnp.nan))
  assert_state_equal(m.state, before)
  step(m, lp)
  assert int(m.state.skipped) == 5 and int(m.state.step) == 2


# ----------------------------------------------------------------------------
# What a Velora user passes: torch tensors, straight from a policy.


def test_torch_tensors_are_accepted_as_velora_takes_them():
  lp = np.linspace(-3.0, 0.0, 8).astype(np.float32)
  a, b = EntropyModule(2, lr=1e-2), EntropyModule(2, lr=1e-2)
  step(a, lp)
  policy_out = torch.tensor(lp, requires_grad=True) * 1.0  # a non-leaf tensor in a graph
  loss = b.compute_loss(policy_out[:, None])  # [B, 1], as Velora's policies give
  b.gradient_step(loss)
  assert_state_equal(a.state, b.state)
  assert policy_out.grad_fn is not None  # the caller's graph is left alone
  # Discrete: probs, log_probs and a bool mask as tensors.
  logits = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
  mask = torch.ones(5, 3, dtype=torch.bool)
  mask[:, 2] = False
  d_np, d_torch = EntropyModuleDiscrete(3, lr=1e-2), EntropyModuleDiscrete(3, lr=1e-2)
  probs, log_probs = torch.softmax(logits, -1), torch.log_softmax(logits, -1)
  step(d_np, probs.detach().numpy(), log_probs.detach().numpy(), mask=mask.numpy())
  step(d_torch, probs, log_probs, mask=mask)
  assert_state_equal(d_np.state, d_torch.state)
  # Other dtypes come through as they are (float64: accumulated as float32 would be).
  c = EntropyModule(2, lr=1e-2)
  step(c, torch.tensor(lp, dtype=torch.float64))
  np.testing.assert_allclose(float(c.log_alpha), float(a.log_alpha), rtol=1e-6)
  # A non-contiguous tensor too.
  wide = torch.tensor(np.stack([lp, lp], 1))
  e = EntropyModule(2, lr=1e-2)
  step(e, wide[:, 0])
  assert_state_equal(a.state, e.state)


def test_unsupported_input_types_name_the_type_and_what_is_accepted():
  m = EntropyModule(2)
  for bad, kind in (([-1.0, -2.0], "builtins.list"), ("x", "builtins.str"), (None, "builtins.NoneType")):
    with pytest.raises(
      TypeError, match=f"`log_probs` must be a NumPy array, a JAX array or a torch tensor; got {kind}"
    ):
      m.compute_loss(bad)
  d = EntropyModuleDiscrete(2)
  p = np.full((3, 2), 0.5, np.float32)
  with pytest.raises(
    TypeError, match=r"`mask` must be a NumPy array, a JAX array or a torch tensor; got builtins\.list"
  ):
    d.compute_loss(p, np.log(p), mask=[[True, True]] * 3)
  assert int(m.state.step) == 0


def test_the_library_never_imports_torch():
  code = (
    "import sys, numpy as np, entropy_jax as ej; m = ej.EntropyModule(2);"
    " m.gradient_step(m.compute_loss(np.zeros(4, np.float32)));"
    " assert 'torch' not in sys.modules, 'torch was imported'"
  )
  subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)


# ----------------------------------------------------------------------------
# Every constructor argument the classes accept gives a module that updates.

ANY_FLOAT = st.one_of(
  st.floats(), st.floats(width=32), st.sampled_from([0.0, 1e-38, 1e-39, 1e38, 2e38, 1e39, 1e-45, 3.4e38])
)


@settings(max_examples=80, deadline=None, derandomize=True)
@given(
  cls=st.sampled_from([EntropyModule, EntropyModuleDiscrete]),
  alpha=ANY_FLOAT,
  lr=ANY_FLOAT,
  target=st.none() | ANY_FLOAT,
)
def test_accepted_arguments_give_a_module_that_updates(cls, alpha, lr, target):
  try:
    m = cls(2, initial_alpha=alpha, lr=lr, target_entropy=target)
  except ValueError as e:
    assert "usable range" in str(e) or "representable in float32" in str(e) or "must be positive" in str(e)
    return
  t = float(m.target)
  if cls is EntropyModule:  # log_probs giving H = 0 or 2: |H - target| >= 1
    step(m, np.full(4, 0.0 if abs(t) >= 1 else -2.0, np.float32))
  else:  # a deterministic (H = 0) or uniform (H = log 2) policy: |H - target| >= 0.34
    p = np.array([[1.0, 0.0]] * 4, np.float32) if t >= 0.35 else np.full((4, 2), 0.5, np.float32)
    with np.errstate(divide="ignore"):  # log 0 = -inf, a valid input where p = 0
      step(m, p, np.log(p))
  assert int(m.state.step) == 1 and int(m.state.skipped) == 0
  old, new = float(np.log(np.float32(alpha))), float(m.log_alpha)
  assert -87.0 <= new <= 88.0 and math.isfinite(float(m.alpha))
  if lr >= 1e-4:  # Adam's first step, lr, is then more than an ulp of |log_alpha| <= 88
    assert new != old or new in (-87.0, 88.0)
