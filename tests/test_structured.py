"""Tests of entropy_jax.structured: a temperature per branch of a structured action.

Closed forms for every kind of space (plain descriptions, gymnasium and gymnax
spaces): per-branch targets, entropies, losses, gradients (read from an SGD
step) and new log_alpha against a NumPy reference, in both loss forms and with
one shared temperature. A single branch is today's single-state update bit for
bit; stacked and padded branches, an agent axis and a population equal separate
states; the non-finite guard, bounds and schedules act per branch; wrong inputs
fail at trace time with messages naming what was expected and what came.
"""

import functools
import math
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _trees import assert_bit_identical, assert_trees_equal, member, stack
from hypothesis import given, settings
from hypothesis import strategies as st

import entropy_jax as ej
from entropy_jax import Categorical, Continuous, MultiCategorical

LR = 0.1
SGD = optax.sgd(LR)  # One instance: states built apart share their static fields.
DISCRETE_UPDATE = jax.jit(ej.discrete_update)
B = 8

PLAIN = {
  "box": Continuous(3),
  "discrete": Categorical(5),
  "multidiscrete": MultiCategorical((4, 4)),
  "ragged": MultiCategorical((2, 5, 3)),
  "tuple": (Continuous(2), Categorical(3)),
  "dict": {"arm": Continuous(2), "grip": Categorical(2), "heads": MultiCategorical((3, 4))},
}


def gymnasium_spaces():
  s = pytest.importorskip("gymnasium").spaces
  box = s.Box(-1.0, 1.0, (3,))
  return {
    "box": box,
    "discrete": s.Discrete(5),
    "multidiscrete": s.MultiDiscrete([4, 4]),
    "ragged": s.MultiDiscrete([2, 5, 3]),
    "tuple": s.Tuple((s.Box(-1.0, 1.0, (2,)), s.Discrete(3))),
    "dict": s.Dict({"grip": s.Discrete(2), "arm": s.Box(-1.0, 1.0, (2,)), "heads": s.MultiDiscrete([3, 4])}),
  }


def gymnax_spaces():
  s = pytest.importorskip("gymnax.environments.spaces")
  return {  # gymnax has no MultiDiscrete.
    "box": s.Box(-1.0, 1.0, (3,)),
    "discrete": s.Discrete(5),
    "tuple": s.Tuple([s.Box(-1.0, 1.0, (2,)), s.Discrete(3)]),
    "dict": s.Dict({"arm": s.Box(-1.0, 1.0, (2,)), "grip": s.Discrete(2), "heads": s.Tuple([s.Discrete(3)])}),
  }


def categorical(key, shape, mask=None):
  logits = 2.0 * jax.random.normal(key, shape)
  if mask is not None:
    logits = jnp.where(mask, logits, -jnp.inf)
  return jax.nn.softmax(logits), jax.nn.log_softmax(logits)


def make_inputs(structure, key, batch=B):
  """Random inputs mirroring `structure`: padded with 0 / -inf where branches are ragged."""
  leaves, treedef = jax.tree.flatten(structure)
  keys = jax.random.split(key, len(leaves))
  out = []
  for leaf, k in zip(leaves, keys):
    if isinstance(leaf, Continuous):
      out.append(2.0 * jax.random.normal(k, (batch,)) - leaf.dim)
    elif isinstance(leaf, Categorical):
      out.append(categorical(k, (batch, leaf.n)))
    else:
      out.append(categorical(k, (batch, len(leaf.nvec), max(leaf.nvec)), ej.branch_mask(leaf)))
  return treedef.unflatten(out)


def np_entropies(leaf, x):
  """Per-sample entropies in float64: `[B]`, or `[B, K]` for a MultiCategorical, 0 log 0 = 0."""
  if isinstance(leaf, Continuous):
    return -np.asarray(x, np.float64)
  p, lp = (np.asarray(a, np.float64) for a in x)
  return -np.sum(np.where(p > 0, p * np.where(p > 0, lp, 0.0), 0.0), axis=-1)


def np_target(leaf, ratio=0.6):
  if isinstance(leaf, Continuous):
    return -float(leaf.dim)
  return ratio * np.log(leaf.n if isinstance(leaf, Categorical) else np.asarray(leaf.nvec, np.float64))


def expected_step(h, target, w, log_alpha, form):
  """Hand-derived (entropy, loss, grad, new log_alpha) of one SGD step on `[B]` (or `[B, K]`) entropies."""
  w = np.ones(h.shape[0]) if w is None else np.asarray(w, np.float64)
  w = w.reshape((-1,) + (1,) * (h.ndim - 1))
  entropy = np.mean(w * h, axis=0)
  stat = np.mean(w * (h - target), axis=0)  # H - target, weighted.
  alpha = np.exp(log_alpha)
  loss = (log_alpha if form == "log" else alpha) * stat
  grad = stat if form == "log" else alpha * stat
  return entropy, loss, grad, log_alpha - LR * grad


def assert_close(got, want):
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2e-6, atol=2e-6)


def check_closed_form(structure, plain, form, shared, weights):
  initial_alpha = 2.0
  states = ej.init_structured_state(
    structure, shared=shared, initial_alpha=initial_alpha, optimizer=SGD, loss_form=form
  )
  inputs = make_inputs(plain, jax.random.key(3))
  update = jax.jit(functools.partial(ej.structured_update, structure, shared=shared))
  new, metrics = update(states, inputs, weights=weights)
  leaves, treedef = jax.tree.flatten(plain)
  flat_inputs = treedef.flatten_up_to(inputs)
  log_alpha = np.log(np.float32(initial_alpha)).astype(np.float64)
  if shared:
    h = sum(np_entropies(leaf, x).reshape(B, -1).sum(-1) for leaf, x in zip(leaves, flat_inputs))  # Joint: a sum.
    target = sum(np.sum(np_target(leaf)) for leaf in leaves)
    want = expected_step(h, target, weights, log_alpha, form)
    assert_close(new.target, target)
    for name, value in zip(("entropy", "loss"), want[:2]):
      assert_close(metrics[name], value)
    assert_close(new.log_alpha, want[3])
    branch = treedef.flatten_up_to(metrics["branch_entropy"])
    for leaf, x, got in zip(leaves, flat_inputs, branch):
      assert_close(got, expected_step(np_entropies(leaf, x), 0.0, weights, 0.0, "log")[0])
    return
  for leaf, x, s, m in zip(leaves, flat_inputs, treedef.flatten_up_to(new), treedef.flatten_up_to(metrics)):
    target = np_target(leaf)
    entropy, loss, _, new_log_alpha = expected_step(np_entropies(leaf, x), target, weights, log_alpha, form)
    assert_close(s.target, target)
    assert_close(m["target"], target)
    assert_close(m["entropy"], entropy)
    assert_close(m["loss"], loss)
    assert_close(s.log_alpha, new_log_alpha)  # = log_alpha - LR * grad: the gradient, read off an SGD step.
    assert np.shape(s.log_alpha) == np.shape(target)


@pytest.mark.parametrize("shared", [False, True], ids=["per_branch", "shared"])
@pytest.mark.parametrize("form", ["log", "alpha"])
@pytest.mark.parametrize("kind", sorted(PLAIN))
def test_closed_forms_plain(kind, form, shared):
  weights = None if kind != "dict" else jnp.linspace(0.5, 1.5, B)
  check_closed_form(PLAIN[kind], PLAIN[kind], form, shared, weights)


@pytest.mark.parametrize("spaces", [gymnasium_spaces, gymnax_spaces])
def test_spaces_read_as_plain_descriptions_and_update_alike(spaces):
  expected = {**PLAIN, "dict": {**PLAIN["dict"], "heads": (Categorical(3),)}} if spaces is gymnax_spaces else PLAIN
  for kind, space in spaces().items():
    assert ej.action_structure(space) == expected[kind], kind
    check_closed_form(space, expected[kind], "log", False, None)
  check_closed_form(spaces()["dict"], expected["dict"], "alpha", True, None)


def test_action_structure_plain_and_errors():
  assert ej.action_structure([Continuous(2), {"a": Categorical(2)}]) == (Continuous(2), {"a": Categorical(2)})
  assert MultiCategorical(np.array([[2, 3], [4, 5]])).nvec == (2, 3, 4, 5)
  with pytest.raises(TypeError, match=r"action_structure: expected a Box, Discrete.*got 'spam' of type str"):
    ej.action_structure("spam")
  with pytest.raises(TypeError, match=r"expected a Box, Discrete.*got namespace\(n=3, shape=\(3,\)\)"):
    ej.action_structure(types.SimpleNamespace(n=3, shape=(3,)))  # A MultiBinary is not a Discrete.
  with pytest.raises(ValueError, match=r"init_structured_state: `action_dim` must be a positive int; got 0"):
    ej.init_structured_state((Continuous(1), Categorical(0)))
  with pytest.raises(ValueError, match=r"`MultiCategorical.nvec` must not be empty"):
    MultiCategorical(())
  with pytest.raises(ValueError, match=r"init_structured_state: the structure has no branches; got \(\)"):
    ej.init_structured_state(())


def test_branch_mask():
  np.testing.assert_array_equal(
    ej.branch_mask(MultiCategorical((2, 4, 1))),
    [[True, True, False, False], [True, True, True, True], [True, False, False, False]],
  )
  np.testing.assert_array_equal(ej.branch_mask([3, 3]), np.ones((2, 3), bool))


@pytest.mark.parametrize("form", ["log", "alpha"])
def test_one_branch_is_the_single_state_update_bit_for_bit(form):
  key = jax.random.key(0)
  lp = make_inputs(Continuous(3), key)
  state = ej.init_entropy_state(ej.continuous_target(3), initial_alpha=0.3, loss_form=form)
  want = jax.jit(ej.continuous_update)(state, lp)
  for shared in (False, True):
    tree = ej.init_structured_state(Continuous(3), shared=shared, initial_alpha=0.3, loss_form=form)
    assert_bit_identical(tree, state)
    got = jax.jit(functools.partial(ej.structured_update, Continuous(3), shared=shared))(tree, lp)
    assert_bit_identical(got[0], want[0])
    assert_bit_identical({k: v for k, v in got[1].items() if k != "branch_entropy"}, want[1])
  probs, log_probs = categorical(key, (B, 6))
  state = ej.init_entropy_state(ej.discrete_target(6), initial_alpha=0.3, loss_form=form)
  tree = ej.init_structured_state(Categorical(6), initial_alpha=0.3, loss_form=form)
  assert_bit_identical(tree, state)
  got = jax.jit(functools.partial(ej.structured_update, Categorical(6)))(tree, (probs, log_probs))
  assert_bit_identical(got, jax.jit(ej.discrete_update)(state, probs, log_probs))


@settings(max_examples=6, deadline=None)
@given(nvec=st.lists(st.integers(1, 9), min_size=1, max_size=3), batch=st.integers(1, 33), seed=st.integers(0, 99))
def test_stacked_padded_branches_equal_separate_unpadded_states(nvec, batch, seed):
  """Branch k of a MultiCategorical, padded with 0 / -inf, is `discrete_update` on its own `[B, n_k]` inputs.

  Up to the summation order, not bit for bit: XLA's CPU backend may sum a longer (padded) row, or a vmapped
  batch, in another order (seen: nvec (1, 2), batch 16, entropies 1 ulp apart). So the entropy agrees within
  2 ulp, and `log_alpha = -LR * (H - target)` within what a few ulp of `H` move it (`H - target` cancels, so
  the error is absolute, not relative: the loss sums `H` again, and subtracts); everything else is bit for bit.
  """
  leaf = MultiCategorical(tuple(nvec))
  probs, log_probs = make_inputs(leaf, jax.random.key(seed), batch)
  update = jax.jit(functools.partial(ej.structured_update, leaf))
  new, metrics = update(ej.init_structured_state(leaf, optimizer=SGD), (probs, log_probs))
  for k, n in enumerate(nvec):
    state = ej.init_entropy_state(ej.discrete_target(n), optimizer=SGD)
    one_new, one_metrics = DISCRETE_UPDATE(state, probs[:, k, :n], log_probs[:, k, :n])
    got, want = member(new, k), one_new
    assert_trees_equal(metrics["entropy"][k], one_metrics["entropy"])
    step_error = LR * 4 * np.spacing(np.abs(one_metrics["entropy"])) + 2 * np.spacing(np.abs(want.log_alpha))
    np.testing.assert_allclose(got.log_alpha, want.log_alpha, rtol=0, atol=step_error)
    assert_bit_identical(got.replace(log_alpha=want.log_alpha), want)
    assert metrics["loss"][k] == one_metrics["loss"] == 0  # log_alpha = 0: the loss is (+ or -) 0 in both.
    assert metrics["skipped"][k] == 0  # 0 * log 0 made no NaN.


HYBRID = {"arm": Continuous(2), "grip": Categorical(2), "heads": MultiCategorical((3, 5))}


def test_agent_axis_and_population_equal_separate_states():
  agents = 3
  update = functools.partial(ej.structured_update, HYBRID)
  alphas = jnp.array([0.5, 1.0, 2.0])
  population = jax.vmap(lambda a: ej.init_structured_state(HYBRID, initial_alpha=a))(alphas)
  assert_bit_identical(population, stack([ej.init_structured_state(HYBRID, initial_alpha=float(a)) for a in alphas]))
  inputs = stack([make_inputs(HYBRID, jax.random.key(i)) for i in range(agents)])
  new, metrics = jax.jit(jax.vmap(update))(population, inputs)
  for i in range(agents):
    one_new, one_metrics = jax.jit(update)(member(population, i), member(inputs, i))
    assert_trees_equal((member(new, i), member(metrics, i)), (one_new, one_metrics))  # 2 ulp: see above.
    # Each agent's entropy is its own batch's, never the stacked agents'.
    assert_close(metrics["arm"]["entropy"][i], -np.mean(np.asarray(inputs["arm"][i], np.float64)))
  shared = stack([ej.init_structured_state(HYBRID, shared=True) for _ in range(agents)])
  new, _ = jax.jit(jax.vmap(functools.partial(update, shared=True)))(shared, inputs)
  for i in range(agents):
    assert_trees_equal(
      member(new, i), jax.jit(functools.partial(update, shared=True))(member(shared, i), member(inputs, i))[0]
    )


def test_non_finite_branch_skips_only_that_branch():
  states = ej.init_structured_state(HYBRID, optimizer=SGD)
  inputs = make_inputs(HYBRID, jax.random.key(1))
  probs, log_probs = inputs["heads"]
  inputs["heads"] = (probs, log_probs.at[0, 1, 0].set(jnp.nan))  # branch 1 of the heads only.
  new, metrics = jax.jit(functools.partial(ej.structured_update, HYBRID))(states, inputs)
  np.testing.assert_array_equal(new["heads"].skipped, [0, 1])
  np.testing.assert_array_equal(metrics["heads"]["skipped"], [0, 1])
  assert_bit_identical(member(new["heads"], 1), member(states["heads"], 1).replace(skipped=jnp.int32(1)))
  assert new["heads"].log_alpha[0] != states["heads"].log_alpha[0]
  for name in ("arm", "grip"):
    assert int(new[name].skipped) == 0 and new[name].log_alpha != states[name].log_alpha
  shared = ej.init_structured_state(HYBRID, shared=True, optimizer=SGD)
  new, metrics = ej.structured_update(HYBRID, shared, inputs, shared=True)
  assert_bit_identical(new, shared.replace(skipped=jnp.int32(1)))  # One temperature: one NaN skips it.


def test_bounds_bind_per_branch():
  s = (Categorical(4), Categorical(4))
  states = ej.init_structured_state(s, optimizer=optax.sgd(10.0), min_alpha=0.5, max_alpha=2.0)
  uniform = (jnp.full((B, 4), 0.25), jnp.full((B, 4), math.log(0.25)))  # H = log 4 > target: alpha falls.
  certain = (jnp.tile(jnp.eye(4)[:1], (B, 1)), jnp.log(jnp.tile(jnp.eye(4)[:1], (B, 1))))  # H = 0: alpha rises.
  new, _ = ej.structured_update(s, states, (uniform, certain))
  assert new[0].log_alpha == jnp.log(jnp.float32(0.5))
  assert new[1].log_alpha == jnp.log(jnp.float32(2.0))
  stacked = MultiCategorical((4, 4))
  both = tuple(jnp.stack([u, c], axis=1) for u, c in zip(uniform, certain))
  new, _ = ej.structured_update(
    stacked, ej.init_structured_state(stacked, optimizer=optax.sgd(10.0), min_alpha=0.5, max_alpha=2.0), both
  )
  np.testing.assert_array_equal(new.log_alpha, jnp.log(jnp.array([0.5, 2.0], jnp.float32)))


def test_target_schedules_and_overrides_per_branch():
  s = {"arm": Continuous(2), "heads": MultiCategorical((3, 5))}
  schedules = [ej.linear_schedule(1.0, 0.0, 10), ej.linear_schedule(0.5, 0.3, 4)]
  states = ej.init_structured_state(s, target={"arm": ej.linear_schedule(-1.0, -3.0, 2), "heads": schedules})
  assert_close(states["heads"].target, [1.0, 0.5])
  update = jax.jit(functools.partial(ej.structured_update, s))
  inputs = make_inputs(s, jax.random.key(2))
  for step in (1, 2, 3):
    states, _ = update(states, inputs)
    assert_close(states["arm"].target, max(-1.0 - step, -3.0))
    assert_close(states["heads"].target, [1.0 - 0.1 * step, 0.5 - 0.05 * step])
  fixed = ej.init_structured_state(s, target={"arm": None, "heads": [None, 0.1]}, ratio=0.98)
  assert_close(fixed["arm"].target, -2.0)
  assert_close(fixed["heads"].target, [0.98 * math.log(3), 0.1])
  assert_close(ej.init_structured_state(s, shared=True, ratio=0.98).target, -2.0 + 0.98 * math.log(15))


def test_branch_alphas_per_branch_and_shared():
  states = jax.vmap(lambda a: ej.init_structured_state(HYBRID, initial_alpha=a))(jnp.array([0.5, 2.0]))
  alphas = jax.vmap(functools.partial(ej.branch_alphas, HYBRID))(states)
  assert_close(alphas["heads"], [[0.5, 0.5], [2.0, 2.0]])
  assert_close(alphas["grip"], [0.5, 2.0])
  shared = ej.init_structured_state(HYBRID, shared=True, initial_alpha=0.25)
  alphas = ej.branch_alphas(HYBRID, shared, shared=True)
  assert {k: np.shape(v) for k, v in alphas.items()} == {"arm": (), "grip": (), "heads": (2,)}
  assert_close(alphas["heads"], [0.25, 0.25])


@pytest.mark.parametrize(
  ("mutate", "message"),
  [
    (
      lambda s, x: (s, {**x, "grip": x["grip"][0]}),
      r"\(branch \['grip'\]: Categorical\(n=2\)\): expected \(probs, log_probs\), each of shape \[B, 2\];"
      r" got an array of shape \(8, 2\)",
    ),
    (
      lambda s, x: (s, {**x, "grip": (x["grip"][0][:, :1], x["grip"][1][:, :1])}),
      r"\(branch \['grip'\]: Categorical\(n=2\)\): expected probs and log_probs of shape \[B, 2\];"
      r" got \(8, 1\) and \(8, 1\)",
    ),
    (
      lambda s, x: (s, {**x, "heads": tuple(a[:, :, :4] for a in x["heads"])}),
      r"\(branch \['heads'\]: MultiCategorical\(nvec=\(3, 5\)\)\): expected probs and log_probs of shape"
      r" \[B, 2, 5\]; got \(8, 2, 4\) and \(8, 2, 4\)",
    ),
    (lambda s, x: (s, {"arm": x["arm"], "grip": x["grip"]}), r"`inputs` must mirror the structure"),
    (lambda s, x: (s, {**x, "arm": x["arm"][:, None, None]}), r"`log_probs` must have shape \[B\] or \[B, 1\]"),
    (lambda s, x: ({"arm": s["arm"]}, x), r"`states` must mirror the structure"),
    (
      lambda s, x: (stack([s, s]), x),
      r"\['arm'\].*with log_alpha of shape \(\); got \(2,\). For a population.*jax.vmap",
    ),
    (
      lambda s, x: ({**s, "grip": stack([s["grip"]] * 2)}, x),
      r"must be an EntropyState with log_alpha of shape \(\); got \(2,\).*vmap",
    ),
    (lambda s, x: ({**s, "heads": s["grip"]}, x), r"must be an EntropyState with log_alpha of shape \(2,\); got \(\)"),
  ],
)
def test_errors_at_trace_time_name_expected_and_received(mutate, message):
  states, inputs = mutate(ej.init_structured_state(HYBRID), make_inputs(HYBRID, jax.random.key(0)))
  with pytest.raises((ValueError, TypeError), match=r"structured_update.*" + message):
    jax.eval_shape(functools.partial(ej.structured_update, HYBRID), states, inputs)


def test_shared_and_init_errors():
  states = ej.init_structured_state(HYBRID, shared=True)
  inputs = make_inputs(HYBRID, jax.random.key(0))
  with pytest.raises(ValueError, match=r"the branches must share one batch size; got \[4, 8, 8\]"):
    ej.structured_update(HYBRID, states, {**inputs, "arm": inputs["arm"][:4]}, shared=True)
  with pytest.raises(
    ValueError, match=r"the shared state must be an EntropyState with log_alpha of shape \(\); got \(2,\)"
  ):
    ej.structured_update(HYBRID, stack([states] * 2), inputs, shared=True)
  with pytest.raises(
    ValueError, match=r"the shared state must be an EntropyState with log_alpha of shape \(\); got dict"
  ):
    ej.structured_update(HYBRID, ej.init_structured_state(HYBRID), inputs, shared=True)
  with pytest.raises(ValueError, match=r"the target of MultiCategorical\(nvec=\(3, 5\)\) must be a sequence of 2"):
    ej.init_structured_state(HYBRID, target={"arm": None, "grip": None, "heads": 0.5})
  with pytest.raises(ValueError, match=r"init_structured_state: `target` must mirror the structure"):
    ej.init_structured_state(HYBRID, target=(1.0, 2.0))
  with pytest.raises(ValueError, match=r"init_structured_state: `initial_alpha` must be positive"):
    ej.init_structured_state(HYBRID, initial_alpha=-1.0)
