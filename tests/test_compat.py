"""Tests of entropy_jax.compat, the Velora-compatible classes, from NumPy and JAX: closed-form
values, the loss/step protocol, modules sharing settings, non-finite input and config. What a PyTorch user
does with them (torch tensors in and out, devices, checkpoints, pickling, threads) is in
test_compat_torch.py; the comparison with the real Velora, and Velora's own agents run with
these classes, in test_compat_velora.py and test_compat_velora_agents.py."""

import dataclasses
import math
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _trees import assert_bit_identical as assert_state_equal
from hypothesis import given, settings
from hypothesis import strategies as st

import entropy_jax as ej
from entropy_jax import compat
from entropy_jax.compat import (
  EntropyModule,
  EntropyModuleDiscrete,
  EntropyParameters,
  LossMismatchError,
  NonFiniteLossError,
)


def step(module, *args, **kwargs):
  loss = module.compute_loss(*args, **kwargs)
  module.gradient_step(loss)
  return loss


# ----------------------------------------------------------------------------
# Construction.


def named(cls, argument, value):  # A message that names the class, the argument and the value that came.
  return f"^{cls.__name__}: .*`{argument}`.*got {re.escape(repr(value))}"


@pytest.mark.parametrize("cls", [EntropyModule, EntropyModuleDiscrete])
def test_constructor_validation(cls):
  for bad in (0, -3):
    with pytest.raises(ValueError, match=named(cls, "action_dim", bad)):
      cls(bad)
  for bad in (2.0, True, "2", None):
    with pytest.raises(TypeError, match=named(cls, "action_dim", bad)):
      cls(bad)
  # initial_alpha and the target: the core's checks, named by the module.
  for bad in (0.0, -1.0, math.nan, math.inf, 1e39, 1e-39):
    with pytest.raises(ValueError, match=named(cls, "initial_alpha", bad)):
      cls(2, initial_alpha=bad)
  for bad in (math.nan, 1e39):
    with pytest.raises(ValueError, match=named(cls, "target", bad)):
      cls(2, target_entropy=bad)
  with pytest.raises(TypeError, match=named(cls, "target", "high")):
    cls(2, target_entropy="high")
  for bad in (0.0, -1.0, math.nan, math.inf, 1e39):
    with pytest.raises(ValueError, match=named(cls, "lr", bad)):
      cls(2, lr=bad)
  with pytest.raises(ValueError, match=rf"^{cls.__name__}: `lr` must have shape \(\).*got shape \(2,\)"):
    cls(2, lr=[1e-3, 1e-3])
  for bad in (True, "1e-3"):
    with pytest.raises(TypeError, match=named(cls, "lr", bad)):
      cls(2, lr=bad)
  with pytest.raises(ValueError, match=r"unknown optimizer 'Adamax'; known: \['Adam', 'AdamW', 'SGD', 'RMSprop'\]"):
    cls(2, optim="Adamax")
  for bad in (optax.adam(1e-3), 3, lambda learning_rate: 3):  # an instance, not a factory; a factory of no optimizer
    with pytest.raises(TypeError, match=r"`optim` must be \['Adam', 'AdamW', 'SGD', 'RMSprop'\] or an optax factory"):
      cls(2, optim=bad)


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


def test_optimizer_names_torch_classes_and_factories():
  # A name, or the torch.optim class of that name (recognised by its module, torch not imported), or a factory.
  names = compat.NAMED_OPTIMIZERS
  assert names == {"Adam": ej.adam, "AdamW": ej.optimizers.adamw, "SGD": optax.sgd, "RMSprop": ej.optimizers.rmsprop}
  torch_like = type("RMSprop", (), {"__module__": "torch.optim.rmsprop"})
  assert repr(EntropyModule(2, optim=torch_like)) == repr(EntropyModule(2, optim="RMSprop"))
  assert "optim=adam," in repr(EntropyModule(2, optim=optax.adam))  # optax's Adam is not PyTorch's to the bit
  with pytest.raises(ValueError, match="unknown optimizer 'LBFGS'"):
    EntropyModule(2, optim=type("LBFGS", (), {"__module__": "torch.optim.lbfgs"}))
  # Equal settings give the same transformation (a static field of the state: the compiled update is shared).
  assert EntropyModule(2, optim="AdamW", lr=1e-3).optim is EntropyModuleDiscrete(3, optim="AdamW", lr=1e-3).optim
  assert EntropyModule(2, optim="AdamW", lr=1e-3).optim is not EntropyModule(2, optim="AdamW", lr=1e-2).optim
  assert EntropyModule(2, optim="SGD", lr=0.5).optim is EntropyModule(2, optim=optax.sgd, lr=0.5).optim


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
  with pytest.raises(ValueError, match=r"^EntropyModuleDiscrete.compute_loss: `probs` must be \[B, 4\].*\(3, 5\)"):
    m.compute_loss(p, jnp.log(p))
  with pytest.raises(ValueError, match=r"`probs` must be \[B, 4\].*got shape \(\)"):
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
  message = "gradient_step: expected the loss the latest compute_loss returned in this thread.*The state is unchanged"
  with pytest.raises(LossMismatchError, match=message):
    m.gradient_step(jnp.float32(1.0))  # nothing pending
  loss = m.compute_loss(lp)
  before = jax.tree.map(np.asarray, m.state)
  for bad in (loss * 2, loss + 0, other.compute_loss(lp), float(loss), np.asarray(loss)):
    with pytest.raises(LossMismatchError, match=message):
      m.gradient_step(bad)
    assert_state_equal(m.state, before)
  # The pending loss still works after the rejections; then it is spent.
  m.gradient_step(loss)
  assert int(m.state.step) == 1
  after = jax.tree.map(np.asarray, m.state)
  with pytest.raises(LossMismatchError, match=message):
    m.gradient_step(loss)
  assert_state_equal(m.state, after)
  # A loss superseded by a later compute_loss.
  old = m.compute_loss(lp)
  new = m.compute_loss(lp)
  with pytest.raises(LossMismatchError, match=message):
    m.gradient_step(old)
  assert_state_equal(m.state, after)
  m.gradient_step(new)
  assert int(m.state.step) == 2


def test_modules_sharing_settings_step_as_if_alone():
  # Modules with equal settings share one transformation (so one compiled update); stepped in turns, with a load
  # between, each ends where it ends stepped alone.
  lp, probs = jnp.linspace(-4.0, -1.0, 8), jax.nn.softmax(jnp.arange(12.0).reshape(4, 3))
  inputs = ((lp,), (lp + 1.0,), (probs, jnp.log(probs)))
  kinds = (
    (EntropyModule, {}),
    (EntropyModule, {"initial_alpha": 0.3, "target_entropy": -1.0}),
    (EntropyModuleDiscrete, {}),
  )
  shared, alone = ([cls(3, optim="RMSprop", lr=1e-2, **kwargs) for cls, kwargs in kinds] for _ in range(2))
  assert shared[0].optim is shared[1].optim is shared[2].optim
  for i in range(20):
    for m, x in zip(shared, inputs):
      step(m, *x)
    if i == 9:
      shared[0].load_state_dict(shared[0].state_dict())
  for a, b, x in zip(shared, alone, inputs):
    for _ in range(20):
      step(b, *x)
    assert_state_equal(a.state, b.state)


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
  # Anything but a state like the module's: another type, optimizer, leaf dtype or shape.
  for bad in (
    {},
    EntropyModule(2, optim="SGD").state,
    b.state.replace(log_alpha=jnp.int32(0)),
    b.state.replace(target=jnp.zeros(3)),
  ):
    with pytest.raises(ValueError, match=r"^EntropyModule\.state: expected an EntropyState like this one's"):
      b.state = bad
  # Replacing the state supersedes a pending loss.
  loss = b.compute_loss(lp)
  b.state = a.state
  with pytest.raises(LossMismatchError):
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
  with pytest.raises(NonFiniteLossError, match=r"NaN/Inf values per input: \{'log_probs': 2\}.*The state is unchanged"):
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
  # The count includes log(0) = -inf where p = 0, as the message says.
  with pytest.raises(
    NonFiniteLossError, match=r"\{'probs': 1, 'log_probs': 1\} \(-inf is fine in log_probs where probs"
  ):
    d.compute_loss(probs.at[1, 1].set(jnp.nan), log_probs)
  with pytest.raises(NonFiniteLossError, match=r"\{'probs': 0, 'log_probs': 2\}"):
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
    NonFiniteLossError, match=r"\{'log_probs': 0\} .*with none, the step overflowed the optimizer's state"
  ):
    m.compute_loss(jnp.array([-1e10]))
  assert_state_equal(m.state, before)


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
# Config.


def test_config():
  cfg = EntropyModuleDiscrete(4, initial_alpha=0.2, lr=1e-3).config()
  assert isinstance(cfg, EntropyParameters)
  assert (cfg.lr, cfg.initial_alpha, cfg.target) == (1e-3, 0.2, float(np.float32(0.6 * np.log(4))))
  # A read-only mapping of the three, as Velora's pydantic models take it.
  assert dict(cfg) == cfg.model_dump() == {"lr": 1e-3, "initial_alpha": 0.2, "target": cfg.target}
  assert EntropyModule(2).config().model_dump() == {"lr": 0.0003, "initial_alpha": 1.0, "target": -2.0}
  with pytest.raises(dataclasses.FrozenInstanceError):
    cfg.lr = 1.0
  with pytest.raises(KeyError):
    cfg["alpha"]


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
  except ValueError as e:  # A rejected argument: the message names it and the value.
    bad = {"initial_alpha": alpha, "lr": lr, "target": target}
    assert any(f"`{name}`" in str(e) and repr(value) in str(e) for name, value in bad.items()), e
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
