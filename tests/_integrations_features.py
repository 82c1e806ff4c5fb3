"""The features an integration class adds to its client, trained inside the client, and library mutants.

`Recorded` sits in the place of the client's alpha state and keeps the
statistic of each temperature step; the class trains with a target schedule,
bounds that bind and the loss form the client does not use, and
`check_features` checks every update against closed forms: the step count,
the schedule's target, the gradient of the chosen form, and alpha clipped at
its bounds exactly. The test files also replay the run through the core's own
update from a state the core builds (`_integrations.check_replay`).

`LIBRARY_MUTANTS` are small faults in `entropy_jax.apply_gradients`, which the
tests patch in to show that these checks fail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from _integrations import U, bad_indices, gamma, state_trace
from flax import struct

import entropy_jax as ej

# A target annealed from above the policy's entropy to below it, so that alpha
# first rises to its upper bound, then falls to its lower one: both bind within
# a short run (Adam moves log_alpha by about its learning rate per update).
SCHEDULE = (3.0, -3.0, 100)  # start, end, steps of `entropy_jax.linear_schedule`
BOUNDS = {"min_alpha": 0.995, "max_alpha": 1.005}


def core_state(optimizer, loss_form: str):
  """The core's state with the features the clients are run with: `SCHEDULE`, `BOUNDS` and `loss_form`."""
  return ej.init_entropy_state(ej.linear_schedule(*SCHEDULE), optimizer=optimizer, **BOUNDS, loss_form=loss_form)


def schedule_closed_form(k: np.ndarray) -> np.ndarray:
  """`SCHEDULE`'s target after update `k`: `start + (end - start) min(k / steps, 1)`, in float64."""
  start, end, steps = SCHEDULE
  return np.float32(start) + np.float32(end - start) * np.clip(k / steps, 0, 1)


class Recorded(struct.PyTreeNode):
  """A temperature state and the statistic its last step took, read by the client as its own."""

  inner: Any
  stat: jax.Array

  @property
  def params(self) -> Any:
    return self.inner.params

  @property
  def apply_fn(self) -> Any:
    return self.inner.apply_fn

  def trace(self) -> dict[str, jax.Array]:
    """The statistic, the state after the step, and the gradient the step gave its optimizer."""
    return {"stat": self.stat, **state_trace(self.inner)}


def check_features(trace: dict, start: Any, entropy: np.ndarray, abs_terms: np.ndarray, **closed: Any) -> dict:
  """Asserts a trained trajectory equal to the closed forms of its features, update by update.

  Args:
    trace: `[N]` arrays, the state after each update (`Recorded.trace`).
    start: the state before the first update.
    entropy: `[N]` float64, the entropy estimate `H` each update took.
    abs_terms: `[N]`, the sum of the absolute terms of that estimate, for the rounding bound.
    **closed: `schedule` (float64 target of the update count), `form` (`"log"`:
      `d loss / d log_alpha = H - T`; `"alpha"`: `alpha (H - T)`), `n_terms`
      (the `n` of `gamma_n`), `min_alpha`, `max_alpha`.

  Returns:
    `{"at_min": updates at the lower bound, "at_max": ..., "grad": max |dg| / bound}`.
  """
  n = trace["step"].size
  np.testing.assert_array_equal(trace["step"], np.arange(1, n + 1), err_msg="step does not advance by one per update")
  np.testing.assert_array_equal(trace["skipped"], 0, err_msg="updates skipped")
  # The target after update k is the schedule's at step k (computed in float32 from float32 constants).
  expected = closed["schedule"](trace["step"].astype(np.float64))
  err = np.abs(trace["target"] - expected)
  bad = bad_indices(err <= 8 * U * np.max(np.abs(expected)))
  assert bad.size == 0, f"target does not follow the schedule at updates {bad}: {trace['target'][bad]}, {expected[bad]}"
  # Update k took the target and log_alpha the state held before it.
  before = lambda name: np.concatenate([[np.asarray(getattr(start, name))], trace[name][:-1]]).astype(np.float64)
  target, log_alpha = before("target"), before("log_alpha")
  scale = np.exp(log_alpha) if closed["form"] == "alpha" else np.ones_like(log_alpha)
  grad_err = np.abs(trace["grad"] - scale * (entropy - target))
  bound = 3 * gamma(closed["n_terms"]) * scale * (abs_terms + np.abs(target))
  bad = bad_indices(grad_err <= bound)
  assert bad.size == 0, f"gradient is not the {closed['form']} form's at updates {bad}: {trace['grad'][bad]}"
  # Bounds: log_alpha within them, on each exactly at several updates (where Adam would have gone past).
  la = trace["log_alpha"]
  lo, hi = (np.float32(np.asarray(getattr(start, f"log_alpha_{s}"))) for s in ("min", "max"))
  for value, alpha in ((lo, closed["min_alpha"]), (hi, closed["max_alpha"])):  # log of the float32 bound, 2 ulp
    exact = np.log(np.float64(np.float32(alpha)))
    assert abs(np.float64(value) - exact) <= 2 * np.spacing(np.float32(abs(exact))), f"bound log {value} != {exact}"
  assert np.all((la >= lo) & (la <= hi)), f"log_alpha outside [{lo}, {hi}]: {la.min()}, {la.max()}"
  at = {"at_min": int(np.sum(la == lo)), "at_max": int(np.sum(la == hi))}
  assert min(at.values()) >= 5, f"a bound does not bind: updates at the bounds {at}"
  return {**at, "grad": float(np.max(grad_err / bound))}


# ----------------------------------------------------------- library mutants --
# Small faults in `entropy_jax.apply_gradients`, the library's one choke point,
# as the integrations call it (`entropy_jax.apply_gradients`): the tests replay a
# recorded run through the class with each and require the checks to fail.


def _step_frozen(apply: Callable) -> Callable:
  return lambda state, grad: apply(state, grad).replace(step=state.step)


def _schedule_not_applied(apply: Callable) -> Callable:
  return lambda state, grad: apply(state, grad).replace(target=state.target)


def _moments_not_stored(apply: Callable) -> Callable:
  def mutant(state, grad):
    new = apply(state, grad)
    leaves, old = jax.tree.leaves(new.opt_state), jax.tree.leaves(state.opt_state)
    leaves[1:3] = old[1:3]  # Adam's mu and nu as they were; its count advances
    return new.replace(opt_state=jax.tree.unflatten(jax.tree.structure(new.opt_state), leaves))

  return mutant


LIBRARY_MUTANTS = {
  "step does not advance": (_step_frozen, "step does not advance"),
  "schedule not applied": (_schedule_not_applied, "target does not follow the schedule"),
  "moments not stored": (_moments_not_stored, "replayed (mu|nu|log_alpha) differs"),
}
