"""Differential tests: entropy_jax.compat against the real Velora 0.2.0 (torch, CPU), and Velora state_dicts.

Both implementations get identical float32 inputs for 300 steps; the loss (before
each step) and log_alpha (after each step) must agree within 2e-6 relative at
every step. The full cartesian product of the settings is too slow for CI, so
the configurations are a pairwise covering design (every pair of values of the
small factors appears together at least once, and every action_dim 1..18 once
per module kind); `test_design_covers_every_pair` checks that.

Floating point. Velora averages elementwise, `-(log_alpha * (lp + t)).mean()`;
entropy_jax reduces the batch first, `-log_alpha * (mean(lp) + t)`. Both are
float32, so they differ by a few ulps of the magnitudes involved. A relative
comparison is meaningful only where the compared values are not near zero
through cancellation, so the inputs are chosen (not the tolerance widened):
  * continuous inputs keep `|H - target| >= 1` at every step (H the batch
    entropy), so the gradient never cancels and its sign never changes;
  * log_alpha then moves monotonically away from its start, and a start of
    log(0.2) = -1.61 is only driven further from 0 ("fall"), never across
    it. From log(1) = 0 both directions are used: log_alpha leaves 0 at the
    first step and never comes back.
  * with Velora's discrete target `0.98 * log(1/A) < 0`, `H - target >= 0.98 log A`
    never cancels (A = 1 gives exactly 0 in both, and they must agree exactly).
The tolerance follows what is measured: the worst relative difference over all
configurations is about 1.5e-6 (AdamW, whose float32 decay factor PyTorch
rounds), so 2e-6 holds with little room, while optax's float32 Adam bias
correction, 1.3e-5 off for small step counts, lands about 8e-6 away and fails
it (`test_the_tolerance_tells_optax_adam_from_pytorchs`).
"""

import itertools

import jax
import numpy as np
import optax
import pytest

from entropy_jax.compat import EntropyModule, EntropyModuleDiscrete
from entropy_jax.targets import discrete_target, velora_discrete_target

torch = pytest.importorskip("torch")  # The parity extra.
velora_modules = pytest.importorskip("velora.models.nf.modules")
EntropyParameters = pytest.importorskip("velora.models.config").EntropyParameters
create_model = pytest.importorskip("pydantic").create_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


STEPS = 300
RTOL = 2e-6
OPTIMIZERS = ("Adam", "AdamW", "SGD", "RMSprop")

CONTINUOUS_FACTORS = {
  "batch": (1, 256),
  "initial_alpha": (1.0, 0.2),
  "lr": (3e-4, 1e-2),
  "optim": OPTIMIZERS,
  "lp_shape": ("[B]", "[B, 1]"),
  "direction": ("fall", "rise"),  # alpha falls (H > target) or rises.
}
DISCRETE_FACTORS = {
  "batch": (1, 256),
  "initial_alpha": (1.0, 0.2),
  "lr": (3e-4, 1e-2),
  "optim": OPTIMIZERS,
}


def _allowed(row):
  # log_alpha must not cross 0 (see the module docstring): from log(0.2) < 0
  # only "fall" moves away from 0.
  return not (row.get("initial_alpha") == 0.2 and row.get("direction") == "rise")


def _pairs(row, names):
  return {((a, row[a]), (b, row[b])) for a, b in itertools.combinations(names, 2)}


# The factors that change what XLA compiles (input shape, optimizer and lr are
# static); initial_alpha, direction and (for the continuous module) action_dim
# do not. Reusing compiled settings keeps this file inside its CI time budget.
COMPILE_KEY = ("batch", "lp_shape", "optim", "lr")


def covering_design(factors, n_rows):
  """Greedy pairwise covering of `factors`, extended to `n_rows` distinct rows.

  Each row covers as many uncovered pairs as it can; ties (and the rows after
  every pair is covered) prefer settings already compiled.
  """
  names = list(factors)
  candidates = [dict(zip(names, values)) for values in itertools.product(*factors.values())]
  candidates = [c for c in candidates if _allowed(c)]
  uncovered = set().union(*(_pairs(c, names) for c in candidates))

  def key(c):
    return tuple(c.get(k) for k in COMPILE_KEY)

  rows, compiled = [], set()
  while uncovered or len(rows) < n_rows:
    unused = [c for c in candidates if c not in rows]
    best = max(unused, key=lambda c: (len(_pairs(c, names) & uncovered), key(c) in compiled))
    rows.append(best)
    compiled.add(key(best))
    uncovered -= _pairs(best, names)
  return rows


# Continuous: every action_dim 1..18 (it only sets the target).
CONTINUOUS_ROWS = [dict(row, action_dim=a) for a, row in zip(range(1, 19), covering_design(CONTINUOUS_FACTORS, 18))]
# Discrete: action_dim is the width of [B, A], a new compile each; 10 values
# from 1 to 18 (with 14, where torch's and XLA's log differ by one ulp).
DISCRETE_ACTION_DIMS = (1, 2, 3, 4, 6, 9, 11, 14, 16, 18)
DISCRETE_ROWS = [
  dict(row, action_dim=a)
  for a, row in zip(DISCRETE_ACTION_DIMS, covering_design(DISCRETE_FACTORS, len(DISCRETE_ACTION_DIMS)))
]


def _id(row):
  return "-".join(f"{k}={v}" for k, v in row.items())


def test_design_covers_every_pair():
  assert sorted(r["action_dim"] for r in CONTINUOUS_ROWS) == list(range(1, 19))
  assert min(DISCRETE_ACTION_DIMS) == 1 and max(DISCRETE_ACTION_DIMS) == 18
  for factors, rows in ((CONTINUOUS_FACTORS, CONTINUOUS_ROWS), (DISCRETE_FACTORS, DISCRETE_ROWS)):
    names = list(factors)
    covered = set().union(*(_pairs(r, names) for r in rows))
    for a, b in itertools.combinations(names, 2):
      for va in factors[a]:
        for vb in factors[b]:
          if _allowed({a: va, b: vb}):
            assert ((a, va), (b, vb)) in covered, (a, va, b, vb)


def _continuous_inputs(row, seed):
  """[STEPS, B] or [STEPS, B, 1] float32 log-probs with |H - target| in [1, 3]."""
  rng = np.random.default_rng(seed)
  a, b = row["action_dim"], row["batch"]
  sign = 1.0 if row["direction"] == "fall" else -1.0
  gap = sign * (1.5 + rng.uniform(0.0, 1.0, size=(STEPS, 1)))  # H - target per step
  # mean(lp) = -H = -(target + gap) = a - gap; the noise moves it by <= 0.5.
  lp = (a - gap) + rng.uniform(-0.5, 0.5, size=(STEPS, b))
  lp = lp.astype(np.float32)
  return lp[..., None] if row["lp_shape"] == "[B, 1]" else lp


def _discrete_inputs(row, seed):
  rng = np.random.default_rng(seed)
  a, b = row["action_dim"], row["batch"]
  logits = rng.normal(0.0, 2.0, size=(STEPS, b, a))
  logits -= logits.max(axis=-1, keepdims=True)
  log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
  return np.exp(log_probs).astype(np.float32), log_probs.astype(np.float32)


def _run(velora_module, ours, step_inputs):
  """Steps both modules in lockstep; returns [STEPS] losses and log_alphas of each."""
  out = np.zeros((4, STEPS))
  for t, args in enumerate(step_inputs):
    v_loss = velora_module.compute_loss(*(torch.from_numpy(x) for x in args))
    velora_module.gradient_step(v_loss)
    o_loss = ours.compute_loss(*args)
    ours.gradient_step(o_loss)
    out[:, t] = (v_loss.item(), velora_module.log_alpha.item(), float(o_loss), float(ours.log_alpha))
  return out


def _assert_agree(out, row):
  v_loss, v_log_alpha, o_loss, o_log_alpha = out
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(o_loss, v_loss, rtol=RTOL, atol=0, err_msg=f"loss, {_id(row)}")
  np.testing.assert_allclose(o_log_alpha, v_log_alpha, rtol=RTOL, atol=0, err_msg=f"log_alpha, {_id(row)}")


@pytest.mark.parametrize("row", CONTINUOUS_ROWS, ids=_id)
def test_continuous_matches_velora(row):
  torch.manual_seed(0)
  kwargs = dict(initial_alpha=row["initial_alpha"], lr=row["lr"])
  velora_module = velora_modules.EntropyModule(row["action_dim"], optim=getattr(torch.optim, row["optim"]), **kwargs)
  ours = EntropyModule(row["action_dim"], optim=row["optim"], **kwargs)
  assert ours.config().model_dump() == velora_module.config().model_dump()
  lp = _continuous_inputs(row, seed=row["action_dim"])
  out = _run(velora_module, ours, [(x,) for x in lp])
  _assert_agree(out, row)
  # The inputs did what the design says: log_alpha moved away from its start.
  moved = out[3, -1] - np.log(np.float32(row["initial_alpha"]))
  assert (moved < 0) == (row["direction"] == "fall") and abs(moved) > 0


@pytest.mark.parametrize("row", DISCRETE_ROWS, ids=_id)
def test_discrete_matches_velora(row):
  a = row["action_dim"]
  kwargs = dict(initial_alpha=row["initial_alpha"], lr=row["lr"])
  velora_module = velora_modules.EntropyModuleDiscrete(a, optim=getattr(torch.optim, row["optim"]), **kwargs)
  ours = EntropyModuleDiscrete(a, optim=row["optim"], target_entropy=velora_discrete_target(a), **kwargs)
  # Velora's target is 0.98 * logf(float32(1/A)) in torch; ours uses XLA's log,
  # and the two logs differ by one ulp for some A (e.g. A = 14).
  np.testing.assert_array_max_ulp(np.float32(ours.target), np.float32(velora_module.target.item()), maxulp=1)
  probs, log_probs = _discrete_inputs(row, seed=100 + a)
  out = _run(velora_module, ours, list(zip(probs, log_probs)))
  _assert_agree(out, row)


@pytest.mark.parametrize("action_dim", [2, 6, 18])
def test_velora_default_discrete_target_is_negative_ours_is_positive(action_dim):
  velora_module = velora_modules.EntropyModuleDiscrete(action_dim)
  ours = EntropyModuleDiscrete(action_dim)
  # Velora 0.2.0: 0.98 * log(1/A) < 0, below the entropy of every policy.
  assert velora_module.target.item() < 0
  np.testing.assert_allclose(velora_module.target.item(), 0.98 * np.log(1 / action_dim), rtol=1e-6)
  # Ours: +0.6 * log(A), the measured default (0.98 is the paper's; both positive).
  assert float(ours.target) > 0
  np.testing.assert_allclose(float(ours.target), 0.6 * np.log(action_dim), rtol=1e-6)
  assert float(ours.target) == pytest.approx(discrete_target(action_dim))
  # The consequence: on a deterministic-looking policy (entropy ~ 0.05 nats,
  # far below any sensible target) Velora still lowers alpha; ours raises it.
  probs = np.full((8, action_dim), 0.01 / (action_dim - 1), np.float32)
  probs[:, 0] = 0.99
  log_probs = np.log(probs)
  v_loss = velora_module.compute_loss(torch.from_numpy(probs), torch.from_numpy(log_probs))
  velora_module.gradient_step(v_loss)
  ours.gradient_step(ours.compute_loss(probs, log_probs))
  assert velora_module.alpha.item() < 1.0 < float(ours.alpha)


def test_velora_state_dict_loses_log_alpha_ours_keeps_it():
  lp = np.full((16,), -5.0, np.float32)  # H = 5 > target -2: alpha falls.
  velora_module = velora_modules.EntropyModule(2, initial_alpha=0.5, lr=1e-2)
  ours = EntropyModule(2, initial_alpha=0.5, lr=1e-2)
  for _ in range(20):
    velora_module.gradient_step(velora_module.compute_loss(torch.from_numpy(lp)))
    ours.gradient_step(ours.compute_loss(lp))
  trained = velora_module.log_alpha.item()
  np.testing.assert_allclose(float(ours.log_alpha), trained, rtol=RTOL)
  assert trained < np.log(0.5) - 0.1

  velora_reloaded = velora_modules.EntropyModule(2, initial_alpha=0.5, lr=1e-2)
  velora_reloaded.load_state_dict(velora_module.state_dict())
  ours_reloaded = EntropyModule(2, initial_alpha=0.5, lr=1e-2)
  ours_reloaded.load_state_dict(ours.state_dict())
  # Velora: back at initial_alpha, the 20 steps are lost.
  assert velora_reloaded.log_alpha.item() == pytest.approx(np.log(0.5))
  # Ours: bit-identical log_alpha, and the next step continues identically.
  assert float(ours_reloaded.log_alpha) == float(ours.log_alpha)
  ours.gradient_step(ours.compute_loss(lp))
  ours_reloaded.gradient_step(ours_reloaded.compute_loss(lp))
  assert float(ours_reloaded.log_alpha) == float(ours.log_alpha)


def test_torch_optimizer_class_is_accepted_as_velora_users_pass_it():
  for torch_cls in (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, torch.optim.RMSprop):
    by_class = EntropyModule(3, optim=torch_cls, lr=1e-2)
    by_name = EntropyModule(3, optim=torch_cls.__name__, lr=1e-2)
    assert repr(by_class) == repr(velora_modules.EntropyModule(3, optim=torch_cls, lr=1e-2))
    # The class maps to the named optimizer: the very same transformation.
    assert by_class.optim is by_name.optim
  with pytest.raises(ValueError, match=r"unknown optimizer 'LBFGS'; known: \['Adam', 'AdamW', 'SGD', 'RMSprop'\]"):
    EntropyModule(3, optim=torch.optim.LBFGS)


def test_repr_and_config_match_velora():
  for device in (None, "cpu"):
    for cls, vcls in (
      (EntropyModule, velora_modules.EntropyModule),
      (EntropyModuleDiscrete, velora_modules.EntropyModuleDiscrete),
    ):
      v = vcls(2, initial_alpha=0.2, lr=1e-3, device=device)
      o = cls(2, initial_alpha=0.2, lr=1e-3, device=device)
      assert repr(o) == repr(v)
  v = velora_modules.EntropyModule(2)
  o = EntropyModule(2)
  assert repr(o) == "EntropyModule(action_dim=2, initial_alpha=1.0, optim=Adam, lr=0.0003, device=None)"
  assert o.config().model_dump() == v.config().model_dump()
  # Velora's pydantic model takes ours as it takes its own.
  assert EntropyParameters.model_validate(o.config()) == v.config()
  # As a field of Velora's models (ModelDetails, which the agents build, is tested in test_compat_velora_agents.py).
  holder = create_model("Holder", entropy=(EntropyParameters, ...))(entropy=EntropyModuleDiscrete(3).config())
  assert holder.entropy == EntropyParameters(lr=3e-4, initial_alpha=1.0, target=float(np.float32(0.6 * np.log(3))))


def test_the_tolerance_tells_optax_adam_from_pytorchs():
  # The same comparison with optax.adam in place of the PyTorch-accurate Adam
  # must exceed the tolerance: the test would catch that regression.
  row = dict(CONTINUOUS_ROWS[0], optim="Adam", lr=1e-2, batch=256, initial_alpha=1.0, direction="fall")
  velora_module = velora_modules.EntropyModule(row["action_dim"], optim=torch.optim.Adam, lr=1e-2)
  ours = EntropyModule(row["action_dim"], optim=optax.adam, lr=1e-2)
  out = _run(velora_module, ours, [(x,) for x in _continuous_inputs(row, seed=0)])
  worst = np.max(np.abs(out[3] / out[1] - 1))
  assert worst > RTOL, worst


@pytest.mark.parametrize("optim", ["Adam", "AdamW", "RMSprop"])
def test_a_velora_state_dict_loads_and_both_continue_alike(optim):
  # Velora's state_dict holds the torch optimizer's state: its step count and moments carry
  # over; log_alpha is not in it, so Velora's reloaded module and ours both start from initial_alpha.
  lp = _continuous_inputs(dict(CONTINUOUS_ROWS[0], action_dim=2, batch=16, direction="fall"), seed=3)
  kwargs = dict(initial_alpha=0.5, lr=1e-2)
  trained = velora_modules.EntropyModule(2, optim=getattr(torch.optim, optim), **kwargs)
  for x in lp[:20]:
    trained.gradient_step(trained.compute_loss(torch.from_numpy(x)))
  saved = trained.state_dict()
  velora_reloaded = velora_modules.EntropyModule(2, optim=getattr(torch.optim, optim), **kwargs)
  velora_reloaded.load_state_dict(saved)
  ours = EntropyModule(2, optim=optim, **kwargs)
  with pytest.warns(UserWarning, match="holds no log_alpha; this module keeps its own"):
    ours.load_state_dict(saved)
  torch_state = saved["entropy_optim"]["state"][0]
  opt_state = ours.state.opt_state[0]
  assert int(ours.state.step) == int(torch_state["step"].item()) == 20
  if optim != "RMSprop":
    assert int(opt_state.count) == 20
    assert float(opt_state.mu) == torch_state["exp_avg"].item()
    assert float(opt_state.nu) == torch_state["exp_avg_sq"].item()
  else:
    assert float(opt_state.nu) == torch_state["square_avg"].item()
  out = _run(velora_reloaded, ours, [(x,) for x in lp[20:120]])
  _assert_agree(out[:, :100], {"optim": optim})


def torch_optimizer_state(optim, steps=5, lr=1e-2, **settings):
  """`{"entropy_optim": ...}` as a Velora module writes it: the torch optimizer of its one parameter,
  `log_alpha`, after `steps` of Velora's continuous loss (target -2)."""
  log_alpha = torch.nn.Parameter(torch.tensor(0.5).log())
  optimizer = getattr(torch.optim, optim)([log_alpha], lr=lr, **settings)
  for x in _continuous_inputs(dict(action_dim=2, batch=8, direction="fall", lp_shape="[B]"), seed=1)[:steps]:
    optimizer.zero_grad()
    (-(log_alpha * (torch.from_numpy(x) - 2.0)).mean()).backward()
    optimizer.step()
  return {"entropy_optim": optimizer.state_dict()}


@pytest.mark.parametrize("optim", OPTIMIZERS)
def test_a_velora_state_dict_of_each_torch_optimizer_carries_its_count_and_moments_over(optim):
  saved = torch_optimizer_state(optim)
  torch_state = saved["entropy_optim"]["state"].get(0, {})  # SGD without momentum keeps nothing.
  ours = EntropyModule(2, initial_alpha=0.5, optim=optim, lr=1e-2)
  with pytest.warns(UserWarning, match="Velora's holds no log_alpha; this module keeps its own"):
    ours.load_state_dict(saved)
  assert float(ours.log_alpha) == np.log(np.float32(0.5))
  assert int(ours.state.step) == (5 if torch_state else 0)
  moments = {"Adam": ("exp_avg", "exp_avg_sq"), "AdamW": ("exp_avg", "exp_avg_sq"), "RMSprop": ("square_avg",)}
  fields = {"exp_avg": "mu", "exp_avg_sq": "nu", "square_avg": "nu"}
  for name in moments.get(optim, ()):
    assert float(getattr(ours.state.opt_state[0], fields[name])) == torch_state[name].item()
  if "exp_avg" in torch_state:
    assert int(ours.state.opt_state[0].count) == 5
  # A fresh torch optimizer has no state yet: a fresh optimizer state, step 0.
  with pytest.warns(UserWarning):
    ours.load_state_dict(torch_optimizer_state(optim, steps=0))
  assert int(ours.state.step) == 0 and all(float(x) == 0 for x in jax.tree.leaves(ours.state.opt_state))


def with_state(saved, **fields):
  """`saved` with some per-parameter fields replaced (None: removed)."""
  state = {k: v for k, v in {**saved["entropy_optim"]["state"][0], **fields}.items() if v is not None}
  return {"entropy_optim": {**saved["entropy_optim"], "state": {0: state}}}


def test_a_velora_state_dict_another_optimizer_could_have_written_is_refused_and_changes_nothing():
  adam = torch_optimizer_state("Adam")
  cases = [
    (torch_optimizer_state("SGD"), r"param_groups has no betas; expected \(0\.9, 0\.999\) \(this module's Adam\)"),
    (torch_optimizer_state("AdamW"), r"param_groups has weight_decay=0\.01; expected 0 \(this module's Adam\)"),
    (torch_optimizer_state("RMSprop"), r"param_groups has no betas"),
    (torch_optimizer_state("Adam", betas=(0.5, 0.9)), r"betas=\(0\.5, 0\.9\); expected \(0\.9, 0\.999\)"),
    (torch_optimizer_state("Adam", amsgrad=True), r"amsgrad=True; expected False"),
    (torch_optimizer_state("Adam", eps=1e-6), r"eps=1e-06; expected 1e-08"),
    (torch_optimizer_state("Adam", maximize=True), r"maximize=True; expected False"),
    (torch_optimizer_state("Adam", lr=3e-4), r"param_groups has lr=0\.0003; expected 0\.01 \(this module's lr\)"),
    (
      with_state(adam, exp_avg_sq=torch.tensor(-1e-3)),
      r"exp_avg_sq is tensor\(-0\.001.*; expected a scalar, finite and >= 0",
    ),
    (
      with_state(adam, step=torch.tensor(2.5)),
      r"step is tensor\(2\.5.*; expected a scalar, a whole number >= 0",
    ),
    (with_state(adam, step=torch.tensor(-1.0)), r"step is tensor\(-1\..*; expected a scalar, a whole number"),
    (with_state(adam, exp_avg=torch.tensor(float("nan"))), r"exp_avg is tensor\(nan\); expected a scalar, finite\."),
    (with_state(adam, exp_avg=torch.zeros(2)), r"exp_avg is tensor\(\[0\., 0\.\]\); expected a scalar"),
    (with_state(adam, exp_avg=None), r"its fields are \['exp_avg_sq', 'step'\]; torch.optim.Adam keeps"),
    ({"entropy_optim": {**adam["entropy_optim"], "state": {0: {}, 1: {}}}}, "not a torch optimizer's state of one"),
  ]
  m = EntropyModule(2, initial_alpha=0.5, lr=1e-2)
  m.gradient_step(m.compute_loss(np.full(8, -1.0, np.float32)))
  before = jax.tree.map(np.array, m.state)
  for bad, message in cases:
    with pytest.raises(ValueError, match=r"^EntropyModule\.load_state_dict \(Velora's optimizer state\): .*" + message):
      m.load_state_dict(bad)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(m.state), jax.tree.leaves(before)))
  for optim, other in (("AdamW", "Adam"), ("SGD", "RMSprop"), ("RMSprop", "AdamW")):
    with pytest.raises(ValueError, match=f"this module's {optim}\\)"):
      EntropyModule(2, optim=optim, lr=1e-2).load_state_dict(torch_optimizer_state(other))
  with pytest.raises(
    ValueError, match=r"loads into a module with an optimizer of \['Adam', 'AdamW', 'SGD', 'RMSprop'\]; this one: lion"
  ):
    EntropyModule(2, optim=optax.lion, lr=1e-2).load_state_dict(adam)
