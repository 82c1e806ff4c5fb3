"""What a PyTorch user does with entropy_jax.compat's classes: torch tensors in and out, devices, writes into
what the module hands out, checkpoints through torch.save, pickle and np.savez, pickling and copying the
module, sharing it between threads, inference mode, meta tensors and low-precision dtypes. Velora's own
state_dicts, from the real torch optimizers, are in test_compat_velora.py."""

import copy
import io
import pickle
import sys
import threading

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _trees import assert_bit_identical as assert_state_equal

from entropy_jax.checkpoint import CheckpointError
from entropy_jax.compat import EntropyModule, EntropyModuleDiscrete, LossMismatchError

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.usefixtures("one_torch_thread")

LP = np.linspace(-3.0, 0.0, 8).astype(np.float32)


def step(module, *args, **kwargs):
  loss = module.compute_loss(*args, **kwargs)
  module.gradient_step(loss)
  return loss


def batches(n, seed=0):
  rng = np.random.default_rng(seed)
  return [rng.normal(-1.0, 1.0, size=(8,)).astype(np.float32) for _ in range(n)]


def copied(state):  # The state's arrays, copied to the host.
  return [np.array(x) for x in jax.tree.leaves(state)]


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
  for bad in ("cuda:0", "gpu:0", "cuda", "cpu:8", "banana", 0):
    with pytest.raises(ValueError, match=f"`device` {bad!r} is not a device of this JAX; it has"):
      EntropyModule(2, device=bad)
  assert EntropyModule(2, device=torch.device("cpu", 3)).state.log_alpha.devices() == {cpus[3]}
  assert EntropyModule(2, device=torch.device("cpu")).state.log_alpha.devices() == {cpus[0]}


def test_torch_tensors_are_accepted_as_velora_takes_them():
  lp = LP
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
  # A non-contiguous tensor too.
  wide = torch.tensor(np.stack([lp, lp], 1))
  e = EntropyModule(2, lr=1e-2)
  step(e, wide[:, 0])
  assert_state_equal(a.state, e.state)


def test_torch_in_torch_out_from_the_first_torch_tensor():
  # A bare module gives JAX arrays until compute_loss sees a torch tensor, then torch tensors.
  lp = LP
  m, ref = EntropyModule(2, lr=1e-2), EntropyModule(2, lr=1e-2)
  step(ref, lp)
  assert isinstance(m.alpha, jax.Array) and isinstance(m.compute_loss(lp), jax.Array)
  loss = m.compute_loss(torch.from_numpy(lp))
  assert isinstance(loss, torch.Tensor) and float(loss) == loss.item() == float(ref.compute_loss(lp) * 0 + loss.item())
  assert loss.detach().item() == loss.item()
  m.gradient_step(loss)  # The loss compute_loss returned, a tensor.
  assert_state_equal(m.state, ref.state)
  for name in ("alpha", "log_alpha", "target"):
    got = getattr(m, name)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.shape == ()
    assert got.item() == float(getattr(ref, name))
  # Arithmetic with the caller's tensors, as Velora's agents do: `alpha * log_probs`.
  np.testing.assert_array_equal((m.alpha * torch.from_numpy(lp)).numpy(), np.float32(m.alpha.item()) * lp)
  # NumPy inputs stay welcome; the outputs stay torch.
  assert isinstance(m.compute_loss(lp), torch.Tensor)


def test_torch_optimizer_class_or_device_makes_a_module_serve_torch_from_the_start():
  for kwargs in ({"optim": torch.optim.Adam}, {"device": torch.device("cpu")}):
    m = EntropyModuleDiscrete(3, **kwargs)
    assert all(isinstance(x, torch.Tensor) for x in (m.alpha, m.log_alpha, m.target))
    p = np.full((4, 3), 1 / 3, np.float32)
    assert isinstance(m.compute_loss(p, np.log(p)), torch.Tensor)
  assert isinstance(EntropyModule(2, optim="Adam", device="cpu").alpha, jax.Array)


def test_unsupported_input_types_name_the_type_and_what_is_accepted():
  m = EntropyModule(2)
  accepted = "must be a NumPy array, a JAX array or a torch tensor; got <class"
  for bad, kind in (([-1.0, -2.0], "list"), ("x", "str"), (None, "NoneType")):
    with pytest.raises(TypeError, match=f"`log_probs` {accepted} '{kind}'>"):
      m.compute_loss(bad)
  d = EntropyModuleDiscrete(2)
  p = np.full((3, 2), 0.5, np.float32)
  with pytest.raises(
    TypeError, match=r"`mask` must be a NumPy array, a JAX array or a torch tensor; got <class 'list'>"
  ):
    d.compute_loss(p, np.log(p), mask=[[True, True]] * 3)
  assert int(m.state.step) == 0


# ----------------------------------------------------------------------------
# Checkpoints.


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

  settings = "not this class's state_dict\\(\\) or settings; \\(got, expected\\): "
  cases = [
    ("not a dict", TypeError, "expected a dict from state_dict\\(\\); got str"),
    ({}, ValueError, settings + "\\{'format': \\(None, 'entropy_jax.compat'\\)"),
    (edited(version=1), ValueError, settings + "\\{'version': \\(1, 3\\)\\}"),
    (
      EntropyModuleDiscrete(2, lr=1e-2).state_dict(),
      ValueError,
      settings + "\\{'kind': \\('EntropyModuleDiscrete', 'EntropyModule'\\)\\}",
    ),
    (edited(action_dim=3), ValueError, settings + "\\{'action_dim': \\(3, 2\\)\\}"),
    (edited(optim="SGD"), ValueError, settings + "\\{'optim': \\('SGD', 'Adam'\\)\\}"),
    (edited(lr=3e-4), ValueError, settings + "\\{'lr': \\(0.0003, 0.01\\)\\}"),
    # The state itself: the checkpoint module's rules, and its error.
    (edited(state=None), CheckpointError, "version"),
    (edited(state={**payload, "leaves": payload["leaves"][:-1]}), CheckpointError, "expected 9 arrays"),
    (edited(state={**payload, "signature": payload["signature"][1:]}), CheckpointError, "structure mismatch"),
    (edited_leaf(".log_alpha", np.float64(0.5)), CheckpointError, r"leaf \.log_alpha should be float32\[\]"),
    (edited_leaf(".step", np.zeros((2,), np.int32)), CheckpointError, r"leaf \.step should be int32\[\]"),
    (edited_leaf(".target", "high"), CheckpointError, r"leaf \.target should be float32\[\]"),
    (edited_leaf(".log_alpha", np.float32(np.nan)), CheckpointError, r"`state\.log_alpha` must .*got nan"),
    (edited_leaf(".target", np.float32(np.inf)), CheckpointError, r"`state\.target` must be finite.*got inf"),
  ]
  for bad, error, message in cases:  # Each names the method, then what is wrong.
    with pytest.raises(error, match=r"^EntropyModule\.load_state_dict: .*" + message):
      m.load_state_dict(bad)
    assert_state_equal(m.state, before)
  m.gradient_step(pending)  # Failed loads did not touch the pending loss.
  # A successful load supersedes a pending loss.
  pending = m.compute_loss(lp)
  m.load_state_dict(good)
  with pytest.raises(LossMismatchError):
    m.gradient_step(pending)


def round_trip(saved, how):
  """`saved` after torch.save and torch.load with its defaults (weights_only=True), pickle, or np.savez."""
  buffer = io.BytesIO()
  if how == "torch.load":
    torch.save(saved, buffer)
    return torch.load(io.BytesIO(buffer.getvalue()))
  if how == "pickle":
    return pickle.loads(pickle.dumps(saved))
  np.savez(buffer, *saved["state"]["leaves"])
  with np.load(io.BytesIO(buffer.getvalue())) as z:
    return {**saved, "state": {**saved["state"], "leaves": [z[f"arr_{i}"] for i in range(len(z.files))]}}


@pytest.mark.parametrize("optim", ["Adam", "AdamW", "SGD", "RMSprop"])
@pytest.mark.parametrize("how", ["torch.load", "pickle", "np.savez"])
def test_a_state_dict_survives_its_round_trip_and_continues_bit_for_bit(optim, how):
  serving = getattr(torch.optim, optim) if how == "torch.load" else optim  # torch.optim's class: serving torch
  straight = EntropyModule(2, initial_alpha=0.7, optim=serving, lr=1e-2)
  for lp in batches(5):
    step(straight, lp)
  saved, scratch = straight.state_dict(), straight.state_dict()
  kind = torch.Tensor if how == "torch.load" else np.ndarray
  assert all(type(leaf) is kind for leaf in saved["state"]["leaves"])
  for leaf in scratch["state"]["leaves"]:  # New arrays, the caller's to write into: the module stays as it was.
    leaf[...] = 7
  saved = round_trip(saved, how)
  assert (saved["format"], saved["version"], saved["kind"]) == ("entropy_jax.compat", 3, "EntropyModule")
  resumed = EntropyModule(2, initial_alpha=0.7, optim=serving, lr=1e-2)
  resumed.load_state_dict(saved)
  assert_state_equal(resumed.state, straight.state)
  assert int(resumed.state.step) == 5 and float(resumed.alpha) == float(straight.alpha)
  for lp in batches(5, seed=1):
    assert float(step(straight, lp)) == float(step(resumed, lp))
  assert_state_equal(resumed.state, straight.state)


# ----------------------------------------------------------------------------
# What the module hands out is the caller's to write into.


def test_writes_into_alpha_log_alpha_target_and_state_dicts_do_not_reach_the_module():
  m, twin = (
    EntropyModule(2, initial_alpha=0.5, optim=torch.optim.Adam, lr=1e-2),
    EntropyModule(2, initial_alpha=0.5, lr=1e-2),
  )
  step(m, torch.from_numpy(LP))
  step(twin, LP)
  saved, before = m.state_dict(), copied(m.state)
  m.log_alpha.add_(1.0)
  m.target.fill_(0.0)
  m.alpha.mul_(2.0)
  for leaf in saved["state"]["leaves"]:
    leaf.fill_(7)
  assert m.alpha is not m.alpha and m.log_alpha is not m.log_alpha  # A new tensor per read, as Velora's.
  assert_state_equal(copied(m.state), before)
  for name in ("alpha", "log_alpha", "target"):
    assert getattr(m, name).item() == float(getattr(twin, name))
  # A dict loaded, then written into: the module keeps its own copy.
  fresh, other = m.state_dict(), EntropyModule(2, optim=torch.optim.Adam, lr=1e-2)
  other.load_state_dict(fresh)
  for leaf in fresh["state"]["leaves"]:
    leaf.fill_(7)
  assert_state_equal(copied(other.state), before)
  for lp in batches(3):  # Both continue as the twin that nobody wrote into.
    step(m, torch.from_numpy(lp))
    step(other, lp)
    step(twin, lp)
  assert_state_equal(m.state, twin.state)
  assert_state_equal(other.state, twin.state)


# ----------------------------------------------------------------------------
# Pickling and copying the module.


def module_level_factory(learning_rate):
  return optax.sgd(learning_rate)


@pytest.mark.parametrize("serving", ["numpy", "torch"])
@pytest.mark.parametrize("how", ["pickle", "deepcopy", "torch.save"])
def test_a_module_pickles_and_copies_and_the_copy_continues_bit_for_bit(serving, how):
  optim = torch.optim.RMSprop if serving == "torch" else module_level_factory  # A module-level factory pickles.
  kwargs = dict(initial_alpha=0.3, optim=optim, lr=1e-2, target_entropy=0.5, device=jax.devices("cpu")[1])
  m = EntropyModuleDiscrete(3, **kwargs)
  probs = np.full((4, 3), 1 / 3, np.float32)
  step(m, probs, np.log(probs))
  if how == "pickle":
    twin = pickle.loads(pickle.dumps(m))
  elif how == "deepcopy":
    twin = copy.deepcopy(m)
  else:  # torch.save(agent) pickles the module; loading whole objects needs weights_only=False.
    buffer = io.BytesIO()
    torch.save(m, buffer)
    twin = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
  assert repr(twin) == repr(m) and float(twin.target) == 0.5
  assert isinstance(twin.alpha, torch.Tensor) == (serving == "torch")
  assert_state_equal(copied(twin.state), copied(m.state))
  before = copied(m.state)
  step(twin, probs, np.log(probs))  # The copy updates on its own.
  assert_state_equal(copied(m.state), before)
  step(m, probs, np.log(probs))
  assert_state_equal(copied(twin.state), copied(m.state))
  assert twin.state.log_alpha.devices() == {jax.devices("cpu")[1]}


def test_a_module_with_a_local_optax_factory_says_why_it_cannot_be_pickled():
  def local_factory(learning_rate):
    return optax.sgd(learning_rate)

  for optim, name in ((lambda learning_rate: optax.sgd(learning_rate), "<lambda>"), (local_factory, "local_factory")):
    m = EntropyModule(2, optim=optim)
    message = rf"^EntropyModule: cannot be pickled or copied: it keeps its optimizer by name, and .*{name}.* has none"
    for copy_it in (pickle.dumps, copy.deepcopy):
      with pytest.raises(TypeError, match=message):
        copy_it(m)
  assert pickle.loads(pickle.dumps(EntropyModule(2, optim=optax.lion))).optim is not None


# ----------------------------------------------------------------------------
# Threads.


@pytest.mark.parametrize("serving", ["numpy", "torch"])
def test_two_threads_sharing_a_module_lose_no_update(serving):
  interval = sys.getswitchinterval()
  sys.setswitchinterval(1e-6)  # Switch threads as often as Python can.
  shared = EntropyModule(2, optim=torch.optim.Adam if serving == "torch" else "Adam", lr=1e-2)
  lp = torch.from_numpy(LP) if serving == "torch" else LP
  n, errors, barrier = 200, [], threading.Barrier(2)

  def worker():
    barrier.wait()
    try:
      for _ in range(n):
        shared.gradient_step(shared.compute_loss(lp))
    except Exception as e:  # Reported below: any error at all fails the test.
      errors.append(e)

  threads = [threading.Thread(target=worker) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  sys.setswitchinterval(interval)
  assert errors == [] and int(shared.state.step) == 2 * n
  alone = EntropyModule(2, lr=1e-2)  # Every update counted: the same inputs, stepped 2n times in one thread.
  for _ in range(2 * n):
    step(alone, LP)
  assert_state_equal(shared.state, alone.state)


def test_a_loss_from_another_thread_or_before_a_load_does_not_step():
  m = EntropyModule(2, lr=1e-2)
  losses = []
  thread = threading.Thread(target=lambda: losses.append(m.compute_loss(LP)))
  thread.start()
  thread.join()
  with pytest.raises(LossMismatchError, match="in this thread"):
    m.gradient_step(losses[0])
  loss = m.compute_loss(LP)
  m.load_state_dict(m.state_dict())
  with pytest.raises(LossMismatchError, match="not from before a load"):
    m.gradient_step(loss)
  assert int(m.state.step) == 0


# ----------------------------------------------------------------------------
# Inference mode, meta tensors and dtypes.


def test_alpha_after_a_load_under_inference_mode_takes_part_in_backward():
  m = EntropyModule(2, optim=torch.optim.Adam, lr=1e-2)
  saved = m.state_dict()
  with torch.inference_mode():
    m.load_state_dict(saved)
    step(m, torch.from_numpy(LP))
  policy = torch.nn.Parameter(torch.from_numpy(LP.copy()))
  (m.alpha * policy).mean().backward()  # An actor loss, outside inference mode.
  np.testing.assert_array_equal(policy.grad.numpy(), np.full(8, m.alpha.item() / 8, np.float32))


def test_a_meta_tensor_gets_an_error_naming_the_argument():
  with pytest.raises(ValueError, match=r"EntropyModule\.compute_loss: `log_probs` is on torch's meta device"):
    EntropyModule(2).compute_loss(torch.empty(8, device="meta"))
  probs = torch.full((4, 3), 1 / 3)
  with pytest.raises(ValueError, match="`probs` is on torch's meta device, which holds no values"):
    EntropyModuleDiscrete(3).compute_loss(probs.to("meta"), probs.log())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16", "float64"])
def test_low_and_high_precision_tensors_work_as_jax_arrays_of_that_dtype(dtype):
  def as_jax(x):  # The same values as a JAX array of that dtype (float64: NumPy's, as JAX holds no float64).
    return x.numpy() if dtype == "float64" else jnp.asarray(x.float().numpy()).astype(dtype)

  lp = torch.from_numpy(LP).to(getattr(torch, dtype))
  a, b = EntropyModule(2, lr=1e-2), EntropyModule(2, lr=1e-2)
  assert float(step(a, lp)) == float(step(b, as_jax(lp)))
  assert_state_equal(a.state, b.state)
  probs = torch.softmax(torch.arange(12.0).reshape(4, 3), -1).to(getattr(torch, dtype))
  c, d = EntropyModuleDiscrete(3, lr=1e-2), EntropyModuleDiscrete(3, lr=1e-2)
  step(c, probs, probs.log())
  step(d, as_jax(probs), as_jax(probs.log()))
  assert_state_equal(c.state, d.state)
