"""Structured action spaces: a temperature per action branch.

A structure is `Continuous`, `Categorical` and `MultiCategorical` leaves in tuples and dicts,
or a gymnasium / gymnax space; its states are a pytree of `EntropyState`s mirroring it.
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
  """A continuous part of `dim` dimensions. Input: `log_probs [B]`, summed over the dims."""

  dim: int


@dataclasses.dataclass(frozen=True)
class Categorical:
  """A categorical branch of `n` choices. Input: `(probs, log_probs)`, each `[B, n]`."""

  n: int


@dataclasses.dataclass(frozen=True)
class MultiCategorical:
  """`K = len(nvec)` categorical branches; the state has a leading `[K]` axis.

  Input: `(probs, log_probs)`, each `[B, K, max(nvec)]`, padded with 0 and -inf.
  """

  nvec: tuple[int, ...]

  def __post_init__(self):
    nvec = tuple(np.asarray(self.nvec).reshape(-1).tolist())
    if not nvec:  # Each size is checked where its target is made.
      raise _checks.error(f"`MultiCategorical.nvec` must not be empty; got {self.nvec!r}.")
    object.__setattr__(self, "nvec", nvec)


_Leaf = Continuous | Categorical | MultiCategorical


@_checks.public
def action_structure(space: Any) -> Any:
  """The plain description of a gymnasium or gymnax space (duck-typed; neither is imported).

  Args:
    space: a `Box`, `Discrete`, `MultiDiscrete`, `Tuple` or `Dict` space, or a description.

  Returns:
    `Continuous(prod(shape))`, `Categorical(n)`, `MultiCategorical(nvec)`, or a tuple or
    dict of them; a description comes back as it is.
  """
  if isinstance(space, (Continuous, Categorical, MultiCategorical)):
    return space
  if isinstance(space, Mapping):
    return {k: action_structure(v) for k, v in space.items()}
  if isinstance(space, (tuple, list)):
    return tuple(action_structure(v) for v in space)
  if hasattr(space, "nvec"):
    return MultiCategorical(space.nvec)
  if hasattr(space, "n") and tuple(getattr(space, "shape", ())) == ():  # Discrete; not MultiBinary.
    return Categorical(int(space.n))
  if hasattr(space, "spaces"):
    return action_structure(space.spaces)
  if hasattr(space, "low") and hasattr(space, "high") and hasattr(space, "shape"):
    return Continuous(math.prod(space.shape))
  raise _checks.error(
    "expected a Box, Discrete, MultiDiscrete, Tuple or Dict space, or a plain description;"
    f" got {space!r} of type {type(space).__name__}.",
    TypeError,
  )


@_checks.public
def branch_mask(nvec: MultiCategorical | Sequence[int]) -> jax.Array:
  """Where a `MultiCategorical`'s padded `[K, max(nvec)]` logits hold real choices.

  Args:
    nvec: a `MultiCategorical` or its `K` branch sizes.

  Returns:
    `[K, max(nvec)]` bool; `jnp.where(mask, logits, -jnp.inf)` pads the logits.
  """
  nvec = (nvec if isinstance(nvec, MultiCategorical) else MultiCategorical(tuple(nvec))).nvec
  return jnp.arange(max(nvec))[None, :] < jnp.asarray(nvec)[:, None]


@_checks.public
def init_structured_state(
  structure: Any, *, shared: bool = False, ratio: float = DISCRETE_TARGET_RATIO, target: Any = None, **kwargs: Any
) -> Any:
  """A temperature per branch of `structure`, or one for the whole action.

  Args:
    structure: a description or a space (see `action_structure`).
    shared: one `EntropyState` for the whole action, its target the sum of the branches'.
    ratio: the fraction of `log(n)` every categorical branch targets.
    target: overrides the defaults: per branch, a tree mirroring the structure of numbers,
      schedules or None (the default), a `MultiCategorical`'s entry a sequence of `K` of
      them; shared, one number or schedule.
    **kwargs: `initial_alpha`, `optimizer`, `min_alpha`, `max_alpha`, `loss_form`, as for
      `init_entropy_state`, for every branch.

  Returns:
    A tree of `EntropyState`s mirroring the structure (a `MultiCategorical`'s with leading
    `[K]` leaves), or one `EntropyState` if `shared`; `jax.vmap` this for an agent axis.
  """
  structure, leaves, treedef = _parse(structure)
  defaults = [_default_target(leaf, ratio) for leaf in leaves]
  if shared:
    return init_entropy_state(sum(float(np.sum(t)) for t in defaults) if target is None else target, **kwargs)
  targets = [None] * len(leaves) if target is None else _flatten_up_to(treedef, target, "target", structure)
  states = []
  for leaf, t, default in zip(leaves, targets, defaults):
    if not isinstance(leaf, MultiCategorical):
      states.append(init_entropy_state(default if t is None else t, **kwargs))
      continue
    t = [None] * len(leaf.nvec) if t is None else t
    if callable(t) or np.ndim(t) != 1 or len(t) != len(leaf.nvec):
      raise _checks.error(f"the target of {leaf} must be a sequence of {len(leaf.nvec)}; got {t!r}.")
    branches = [init_entropy_state(d if tk is None else tk, **kwargs) for tk, d in zip(t, default)]
    states.append(jax.tree.map(lambda *xs: jnp.stack(xs), *branches))
  return treedef.unflatten(states)


@_checks.public
def structured_update(
  structure: Any, states: Any, inputs: Any, *, shared: bool = False, weights: jax.Array | None = None
) -> tuple[Any, Any]:
  """Updates every temperature of a structured action in one call.

  Args:
    structure: as for `init_structured_state`; close over it (`functools.partial(structured_update, structure)`) to jit.
    states: from `init_structured_state(structure, shared=shared)`.
    inputs: a tree mirroring the structure, each leaf's input as its class
      says: `log_probs [B]`, or `(probs, log_probs)`, `[B, n]` or `[B, K, N]`.
    shared: whether `states` is one state for the whole action.
    weights: optional `[B]` per-sample weights, for every branch.

  Returns:
    `(new_states, metrics)`. Per branch, metrics mirror the structure, each leaf the
    update's dict (`[K]` arrays for a `MultiCategorical`). Shared, one dict for the joint
    entropy, with `branch_entropy`, the tree of each branch's entropy.
  """
  structure, leaves, treedef = _parse(structure)
  flat_inputs = _flatten_up_to(treedef, inputs, "inputs", structure)
  paths = jax.tree_util.tree_leaves_with_path(structure)  # Errors name each branch by its path.
  labels = [f"branch {jax.tree_util.keystr(path)}: {leaf}" if path else str(leaf) for path, leaf in paths]
  if not shared:
    flat_states = _flatten_up_to(treedef, states, "states", structure)
    out = [_update_branch(*branch, weights) for branch in zip(labels, leaves, flat_states, flat_inputs)]
    return treedef.unflatten([o[0] for o in out]), treedef.unflatten([o[1] for o in out])
  _state_shape(states, (), "the shared state")
  h = [_per_sample_entropy(*branch) for branch in zip(labels, leaves, flat_inputs)]  # [B], or [B, K]
  if len({x.shape[0] for x in h}) != 1:
    raise _checks.error(f"the branches must share one batch size; got {[x.shape[0] for x in h]}.")
  joint = functools.reduce(jnp.add, [jnp.sum(x.reshape(x.shape[0], -1), axis=1) for x in h])  # [B]
  new_state, metrics = continuous_update(states, -joint, weights=weights)
  mean = functools.partial(continuous_entropy, weights=weights)
  branch_entropy = [mean(-x) if x.ndim == 1 else jax.vmap(mean, in_axes=1)(-x) for x in h]
  return new_state, {**metrics, "branch_entropy": treedef.unflatten(branch_entropy)}


@_checks.public
def branch_alphas(structure: Any, states: Any, *, shared: bool = False) -> Any:
  """The alpha of each branch's actor term.

  Args:
    structure: as for `init_structured_state`.
    states: from `init_structured_state(structure, shared=shared)`.
    shared: whether `states` is one state for the whole action.

  Returns:
    A tree mirroring the structure of scalar alphas (`[K]` for a `MultiCategorical`);
    shared, the one alpha in every position.
  """
  structure, leaves, treedef = _parse(structure)
  if shared:
    _state_shape(states, (), "the shared state")
    return treedef.unflatten([jnp.broadcast_to(states.alpha, _shape(leaf)) for leaf in leaves])
  return treedef.unflatten([s.alpha for s in _flatten_up_to(treedef, states, "states", structure)])


def _default_target(leaf: _Leaf, ratio: float) -> Any:
  """`-dim` (Haarnoja et al. 2018, arXiv:1812.05905), `ratio * log(n)` (Christodoulou 2019,
  arXiv:1910.07207, with `ratio=0.98`; see `entropy_jax.targets`), or a `[K]` tuple of them."""
  if isinstance(leaf, Continuous):
    return continuous_target(leaf.dim)
  if isinstance(leaf, Categorical):
    return discrete_target(leaf.n, ratio)
  return tuple(discrete_target(n, ratio) for n in leaf.nvec)


def _shape(leaf: _Leaf) -> tuple[int, ...]:
  """The shape of a branch's `log_alpha`."""
  return (len(leaf.nvec),) if isinstance(leaf, MultiCategorical) else ()


def _parse(structure: Any) -> tuple[Any, list[_Leaf], Any]:
  """`(structure, leaves, treedef)` of a plain description or a space."""
  leaves, treedef = jax.tree.flatten(structure := action_structure(structure))
  if not leaves:
    raise _checks.error(f"the structure has no branches; got {structure!r}.")
  return structure, leaves, treedef


def _flatten_up_to(treedef: Any, tree: Any, name: str, structure: Any) -> list[Any]:
  try:
    return treedef.flatten_up_to(tree)
  except (ValueError, TypeError) as e:
    raise _checks.error(f"`{name}` must mirror the structure {structure!r}; got {jax.tree.structure(tree)}.") from e


def _state_shape(state: Any, shape: tuple[int, ...], what: str) -> None:
  got = jnp.shape(state.log_alpha) if isinstance(state, EntropyState) else type(state).__name__
  if got != shape:
    raise _checks.error(
      f"{what} must be an EntropyState with log_alpha of shape {shape}; got {got}."
      " For a population or an agent axis, jax.vmap the update."
    )


def _discrete_pair(leaf: Categorical | MultiCategorical, x: Any) -> tuple[jax.Array, jax.Array]:
  """`(probs, log_probs)`, their shapes checked against the leaf."""
  want = (leaf.n,) if isinstance(leaf, Categorical) else (len(leaf.nvec), max(leaf.nvec))
  shape = f"[B, {', '.join(map(str, want))}]"
  if not (isinstance(x, (tuple, list)) and len(x) == 2):
    got = f"an array of shape {x.shape}" if hasattr(x, "shape") else repr(type(x).__name__)
    raise _checks.error(f"expected (probs, log_probs), each of shape {shape}; got {got}.", TypeError)
  probs, log_probs = _checks.floating("probs", x[0]), _checks.floating("log_probs", x[1])
  if probs.shape[1:] != want or probs.ndim != len(want) + 1 or log_probs.shape != probs.shape:
    raise _checks.error(f"expected probs and log_probs of shape {shape}; got {probs.shape} and {log_probs.shape}.")
  return probs, log_probs


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
  """`[B]` entropies (`[B, K]` for a `MultiCategorical`), at least float32."""
  with _checks.within(label):
    if isinstance(leaf, Continuous):
      log_probs = _checks.continuous_log_probs(x)
      return -log_probs.astype(_checks.accumulation_dtype(log_probs))
    probs, log_probs = _discrete_pair(leaf, x)
    return _per_state_entropy(probs, log_probs, None, _checks.accumulation_dtype(probs, log_probs))
