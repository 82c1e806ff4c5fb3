"""Structured action spaces: a temperature per action branch.

A structured action (several categorical heads, a discrete choice beside
continuous parameters, a dict of parts) is described once by `Continuous(dim)`,
`Categorical(n)` and `MultiCategorical(nvec)` leaves in tuples and dicts, or
read from a gymnasium or gymnax space by `action_structure`. Its states are a
pytree of `EntropyState`s mirroring the structure, and `structured_update`
runs `continuous_update` or `discrete_update` on each branch (vmapped over the
`[K]` branches of a `MultiCategorical`) in one call. A single branch is the
single-state update, bit for bit.

Default targets: `-dim` for a continuous part (Haarnoja et al. 2018,
arXiv:1812.05905) and `ratio * log(n)` for a categorical branch of `n` choices,
`ratio = DISCRETE_TARGET_RATIO = 0.6`: in the discrete-target study (see
`entropy_jax.targets`) it learned with alpha bounded on both tasks, where
Christodoulou 2019's 0.98 (arXiv:1910.07207) let alpha grow without limit. With
`shared=True` one temperature serves the whole action against the summed
target, and the branch entropies are summed: the joint entropy of independent
branches.

Ragged branches are stacked as `[B, K, max(nvec)]`, padded with probability 0
and log-probability -inf (mask the logits with `branch_mask`). Such a term
counts exactly 0 in the entropy, so the loss needs no mask, and the `K`
branches share one vmapped update instead of one update each.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from entropy_jax import _checks
from entropy_jax.losses import _per_state_entropy, continuous_entropy
from entropy_jax.state import EntropyState, init_entropy_state
from entropy_jax.targets import DISCRETE_TARGET_RATIO, continuous_target, discrete_target
from entropy_jax.update import Metrics, continuous_update, discrete_update


@dataclasses.dataclass(frozen=True)
class Continuous:
  """A continuous part of `dim` dimensions; its input is `log_probs [B]`, summed over the dims."""

  dim: int

  def __post_init__(self):
    _checks.positive_int("Continuous.dim", self.dim)


@dataclasses.dataclass(frozen=True)
class Categorical:
  """A categorical branch of `n` choices; its input is `(probs, log_probs)`, each `[B, n]`."""

  n: int

  def __post_init__(self):
    _checks.positive_int("Categorical.n", self.n)


@dataclasses.dataclass(frozen=True)
class MultiCategorical:
  """`K = len(nvec)` categorical branches, stacked.

  Its input is `(probs, log_probs)`, each `[B, K, N]` with `N = max(nvec)`;
  branch `k` holds its `nvec[k]` choices first, then probability 0 and
  log-probability -inf. Its state has a leading `[K]` axis.
  """

  nvec: tuple[int, ...]

  def __post_init__(self):
    nvec = tuple(np.asarray(self.nvec).reshape(-1).tolist())
    if not nvec:
      raise ValueError(f"{_checks.caller()}: `MultiCategorical.nvec` must not be empty; got {self.nvec!r}.")
    for n in nvec:
      _checks.positive_int("MultiCategorical.nvec", n)
    object.__setattr__(self, "nvec", nvec)


_Leaf = Continuous | Categorical | MultiCategorical
_LEAVES = (Continuous, Categorical, MultiCategorical)


@_checks.public
def action_structure(space: Any) -> Any:
  """The plain description of a gymnasium or gymnax action space.

  The spaces are duck-typed (neither library is imported): `Box` ->
  `Continuous(prod(shape))`, `Discrete` -> `Categorical(n)`, `MultiDiscrete`
  -> `MultiCategorical(nvec)` (flattened), `Tuple` -> tuple, `Dict` -> dict.
  A plain description (leaves, tuples, lists and dicts of them) is returned
  as is, with lists made tuples.
  """
  if isinstance(space, _LEAVES):
    return space
  if isinstance(space, Mapping):
    return {k: action_structure(v) for k, v in space.items()}
  if isinstance(space, (tuple, list)):
    return tuple(action_structure(v) for v in space)
  if hasattr(space, "nvec"):
    return MultiCategorical(tuple(int(n) for n in np.asarray(space.nvec).reshape(-1)))
  if hasattr(space, "n") and tuple(getattr(space, "shape", ())) == ():  # Discrete; not MultiBinary.
    return Categorical(int(space.n))
  if hasattr(space, "spaces"):
    return action_structure(dict(space.spaces) if isinstance(space.spaces, Mapping) else tuple(space.spaces))
  if hasattr(space, "low") and hasattr(space, "high") and hasattr(space, "shape"):
    return Continuous(math.prod(space.shape))
  raise TypeError(
    f"{_checks.caller()}: expected a Box, Discrete, MultiDiscrete, Tuple or Dict space, or a plain description;"
    f" got {space!r} of type {type(space).__name__}."
  )


@_checks.public
def branch_mask(nvec: MultiCategorical | Sequence[int]) -> jax.Array:
  """`[K, N]` bool, True at the `nvec[k]` real choices of branch `k` (`N = max(nvec)`).

  Mask a policy's `[B, K, N]` logits with it, `jnp.where(mask, logits, -jnp.inf)`,
  so that padded choices get probability 0 and log-probability -inf.
  """
  nvec = nvec.nvec if isinstance(nvec, MultiCategorical) else MultiCategorical(tuple(nvec)).nvec
  return jnp.arange(max(nvec))[None, :] < jnp.asarray(nvec)[:, None]


def _default_target(leaf: _Leaf, ratio: float = DISCRETE_TARGET_RATIO) -> Any:
  """A branch's default target: `-dim`, `ratio * log(n)`, or a `[K]` tuple of them."""
  if isinstance(leaf, Continuous):
    return continuous_target(leaf.dim)
  if isinstance(leaf, Categorical):
    return discrete_target(leaf.n, ratio)
  return tuple(discrete_target(n, ratio) for n in leaf.nvec)


@_checks.public
def init_structured_state(
  structure: Any,
  *,
  shared: bool = False,
  ratio: float = DISCRETE_TARGET_RATIO,
  target: Any = None,
  **kwargs: Any,
) -> Any:
  """The states of a structured action: a pytree of `EntropyState`s, one per branch.

  Args:
    structure: a plain description or a gymnasium / gymnax space (see
      `action_structure`).
    shared: False (default): one temperature per branch, the tree mirroring
      the structure (a `MultiCategorical` gives one state with a `[K]` axis).
      True: one `EntropyState` for the whole action, targeting the sum of the
      branch targets.
    ratio: the fraction of `log(n)` each categorical branch targets.
    target: overrides the default targets. Per branch: a tree mirroring the
      structure whose entries are numbers, schedules or None (the default),
      a `MultiCategorical`'s entry a sequence of `K` of them. Shared: one
      number or schedule.
    **kwargs: `initial_alpha`, `optimizer`, `min_alpha`, `max_alpha` and
      `loss_form`, as for `init_entropy_state`, the same for every branch.

  Returns:
    The tree of states (or, shared, one state). `jax.vmap` this function
    for a population or an agent axis.
  """
  structure = action_structure(structure)
  leaves, treedef = _flatten(structure)
  if shared:
    if target is None:
      target = sum(float(np.sum(_default_target(leaf, ratio))) for leaf in leaves)
    return init_entropy_state(target, **kwargs)
  targets = [None] * len(leaves) if target is None else _flatten_up_to(treedef, target, "target", structure)
  states = []
  for leaf, t in zip(leaves, targets):
    t = _default_target(leaf, ratio) if t is None else t
    if not isinstance(leaf, MultiCategorical):
      states.append(init_entropy_state(t, **kwargs))
      continue
    if callable(t) or np.ndim(t) == 0 or len(t) != len(leaf.nvec):
      raise ValueError(f"{_checks.caller()}: the target of {leaf} must be a sequence of {len(leaf.nvec)}; got {t!r}.")
    defaults = _default_target(leaf, ratio)
    branch = [init_entropy_state(d if tk is None else tk, **kwargs) for tk, d in zip(t, defaults)]
    states.append(jax.tree.map(lambda *xs: jnp.stack(xs), *branch))
  return treedef.unflatten(states)


@_checks.public
def structured_update(
  structure: Any,
  states: Any,
  inputs: Any,
  *,
  shared: bool = False,
  weights: jax.Array | None = None,
) -> tuple[Any, Any]:
  """Updates every temperature of a structured action in one call.

  Args:
    structure: the plain description (or space) the states were built from.
      Close over it (`functools.partial(structured_update, structure)`) to
      `jax.jit` or `jax.vmap` the update.
    states: as returned by `init_structured_state(structure, shared=shared)`.
    inputs: a tree mirroring the structure: `log_probs [B]` (or `[B, 1]`) for
      a `Continuous` part, summed over its dims; `(probs, log_probs)`, each
      `[B, n]`, for a `Categorical`; each `[B, K, max(nvec)]`, padded with 0
      and -inf, for a `MultiCategorical`.
    shared: as given to `init_structured_state`.
    weights: optional `[B]` per-sample weights, shared by every branch.

  Returns:
    `(new_states, metrics)`. Per branch, metrics mirror the structure, each
    entry `continuous_update`'s dict (`loss`, `alpha`, `entropy`, `target`,
    `skipped`), `[K]` arrays for a `MultiCategorical`. Shared, one such dict
    for the joint entropy, plus `branch_entropy`, the tree of each branch's
    entropy.
  """
  structure = action_structure(structure)
  leaves, treedef = _flatten(structure)
  flat_inputs = _flatten_up_to(treedef, inputs, "inputs", structure)
  if shared:
    _state_shape(states, (), "the shared state")
    h = [_per_sample_entropy(*branch) for branch in zip(_labels(structure), leaves, flat_inputs)]
    batches = {x.shape[0] for x in h}
    if len(batches) != 1:
      raise ValueError(f"{_checks.caller()}: every branch must have the same batch size; got sizes {sorted(batches)}.")
    # The joint entropy of independent branches is the sum of theirs.
    joint = functools.reduce(jnp.add, [x if x.ndim == 1 else jnp.sum(x, axis=1) for x in h])  # [B]
    new_state, metrics = continuous_update(states, -joint, weights=weights)
    per_branch = [_branch_mean(x, weights) for x in h]
    return new_state, {**metrics, "branch_entropy": treedef.unflatten(per_branch)}
  flat_states = _flatten_up_to(treedef, states, "states", structure)
  out = [_update_branch(*b, weights) for b in zip(_labels(structure), leaves, flat_states, flat_inputs)]
  return treedef.unflatten([o[0] for o in out]), treedef.unflatten([o[1] for o in out])


@_checks.public
def branch_alphas(structure: Any, states: Any, *, shared: bool = False) -> Any:
  """The alpha each branch's actor term uses, a tree mirroring the structure.

  Scalars for `Continuous` and `Categorical`, `[K]` for a `MultiCategorical`;
  with `shared=True`, the one alpha in every position, so an actor loss reads
  the same in both designs.
  """
  structure = action_structure(structure)
  leaves, treedef = _flatten(structure)
  if shared:
    _state_shape(states, (), "the shared state")
    return treedef.unflatten([jnp.broadcast_to(states.alpha, _shape(leaf)) for leaf in leaves])
  flat_states = _flatten_up_to(treedef, states, "states", structure)
  return treedef.unflatten([s.alpha for s in flat_states])


# ----------------------------------------------------------------------------
# Helpers.


def _flatten(structure: Any) -> tuple[list[_Leaf], Any]:
  """The leaves (checked) and treedef of a structure."""
  leaves, treedef = jax.tree.flatten(structure)
  if not leaves:
    raise ValueError(f"{_checks.caller()}: the structure has no branches; got {structure!r}.")
  bad = [leaf for leaf in leaves if not isinstance(leaf, _LEAVES)]
  if bad:
    raise TypeError(
      f"{_checks.caller()}: structure leaves must be Continuous, Categorical or MultiCategorical; got {bad[0]!r}."
    )
  return leaves, treedef


def _flatten_up_to(treedef: Any, tree: Any, name: str, structure: Any) -> list[Any]:
  try:
    return treedef.flatten_up_to(tree)
  except (ValueError, TypeError) as e:
    raise ValueError(
      f"{_checks.caller()}: `{name}` must mirror the structure {structure!r}; got {jax.tree.structure(tree)}."
    ) from e


def _shape(leaf: _Leaf) -> tuple[int, ...]:
  """The shape of a branch's `log_alpha`: `[K]` for a `MultiCategorical`, else a scalar."""
  return (len(leaf.nvec),) if isinstance(leaf, MultiCategorical) else ()


def _state_shape(state: Any, shape: tuple[int, ...], what: str) -> None:
  if not isinstance(state, EntropyState):
    raise TypeError(f"{_checks.caller()}: {what} must be an EntropyState; got {type(state).__name__}.")
  if jnp.shape(state.log_alpha) != shape:
    raise ValueError(
      f"{_checks.caller()}: {what} must have log_alpha of shape {shape}; got {jnp.shape(state.log_alpha)}."
      " For a population or an agent axis, jax.vmap the update."
    )


def _discrete_pair(leaf: _Leaf, x: Any) -> tuple[jax.Array, jax.Array]:
  """`(probs, log_probs)` of a categorical leaf, their shapes checked against it."""
  want = (leaf.n,) if isinstance(leaf, Categorical) else (len(leaf.nvec), max(leaf.nvec))  # type: ignore[union-attr]
  shape = f"[B, {', '.join(map(str, want))}]"
  if not (isinstance(x, (tuple, list)) and len(x) == 2):
    got = f"an array of shape {x.shape}" if hasattr(x, "shape") else repr(type(x).__name__)
    raise TypeError(f"{_checks.caller()}: expected (probs, log_probs), each of shape {shape}; got {got}.")
  probs, log_probs = _checks.floating("probs", x[0]), _checks.floating("log_probs", x[1])
  if probs.shape[1:] != want or probs.ndim != len(want) + 1 or log_probs.shape != probs.shape:
    raise ValueError(
      f"{_checks.caller()}: expected probs and log_probs of shape {shape}; got {probs.shape} and {log_probs.shape}."
    )
  return probs, log_probs


def _labels(structure: Any) -> list[str]:
  """Each branch as errors name it: its path in the structure, and the leaf."""
  flat = jax.tree_util.tree_flatten_with_path(structure)[0]
  return [f"branch {jax.tree_util.keystr(path)}: {leaf}" if path else str(leaf) for path, leaf in flat]


def _update_branch(label: str, leaf: _Leaf, state: Any, x: Any, weights: Any) -> tuple[EntropyState, Metrics]:
  with _checks.within(label):
    _state_shape(state, _shape(leaf), "the state")
    if isinstance(leaf, Continuous):
      return continuous_update(state, x, weights=weights)
    probs, log_probs = _discrete_pair(leaf, x)
    if isinstance(leaf, Categorical):
      return discrete_update(state, probs, log_probs, weights=weights)
    # Branch-major [K, B, N], so that each branch's batch reduction is laid out as a single state's is.
    update = jax.vmap(functools.partial(discrete_update, weights=weights))
    return update(state, jnp.moveaxis(probs, 1, 0), jnp.moveaxis(log_probs, 1, 0))


def _per_sample_entropy(label: str, leaf: _Leaf, x: Any) -> jax.Array:
  """`[B]` per-sample entropy (`[B, K]` for a `MultiCategorical`), at least float32."""
  with _checks.within(label):
    if isinstance(leaf, Continuous):
      log_probs = _checks.continuous_log_probs(x)
      return -log_probs.astype(_checks.accumulation_dtype(log_probs))
    probs, log_probs = _discrete_pair(leaf, x)
    return _per_state_entropy(probs, log_probs, None, _checks.accumulation_dtype(probs, log_probs))


def _branch_mean(h: jax.Array, weights: Any) -> jax.Array:
  """The batch mean of `[B]` (or, per branch, `[B, K]`) per-sample entropies."""
  mean = functools.partial(continuous_entropy, weights=weights)
  return mean(-h) if h.ndim == 1 else jax.vmap(mean, in_axes=1)(-h)
