"""Differential checks of a client's temperature against entropy_jax's integration classes.

Every check runs a client's real training (rejax, SBX) and takes
entropy_jax's side from the integration class's own temperature method
(`EntropySAC.update_alpha`, `update_temperature` of SBX's `SAC`, `TQC`,
`CrossQ`), with the gradient read from the update that ran: the optimizer
is wrapped in `recording`, whose state keeps the last gradient it was given.

Lockstep (`Lockstep`, `check_lockstep`): a `Lockstep` pair sits in the place
of the client's alpha state, the client's own `TrainState` and the class's
`EntropyState`. At every update both are first set to the driver's
`log_alpha` and optimizer state, then each takes its own step from the same
log-probs; the driver's result trains the agent. Each update is thus compared
on identical inputs, within what float32 rounding alone allows:

- gradients: both are float32 evaluations of the same sum (rejax's discrete
  loss weights the target by `sum_a p`, which differs from 1 by rounding; the
  record carries that exact difference `D`). A float32 sum of `n` terms is
  within `gamma_n * sum|terms|` of the exact sum, `gamma_n = n u / (1 - n u)`
  and `u = 2**-24` (Higham, "Accuracy and Stability of Numerical Algorithms",
  2nd ed., eq. 4.4 and lemma 3.1), so `|g_client - g_ours| <= |D| + 3 gamma_n S`
  with `S` the sum of the absolute terms, recorded with `n`;
- the optimizer step: `adam_reference` takes each gradient through Adam in
  float64, and `adam_rounding_bound` bounds the float32 evaluation of one step
  (operation by operation, first order in `u`). So `|la_client - la_ours| <=
  |adam(g_client) - adam(g_ours)| + R_client + R_ours`;
- the rest of the state: Adam's count exactly, its moments within the
  rounding of their updates from each gradient, the target equal to the
  client's, `step` advanced by one and nothing skipped.

Two runs with the same seed do not stay within rounding of each other once
they differ by one ulp: SAC training amplifies the difference (measured in
docs/integrations.md), and XLA may round the same Adam step differently in
two programs. So the trajectories are compared step by step, not end to end.

Open-loop replay (`replay`, `check_replay`): the client-driven lockstep run
is the client's own training; its statistics are replayed through the
class's temperature method from the class's initial state, never
re-synchronized, so a fault in any part of the state compounds.

The features a class adds to its client are checked in `_integrations_features`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

U = 2.0**-24  # float32 unit roundoff


def gamma(n: float) -> float:
  """Higham's `gamma_n = n u / (1 - n u)` for float32."""
  return n * U / (1.0 - n * U)


def recording(tx: optax.GradientTransformation) -> optax.GradientTransformation:
  """`tx`, its state `(tx's state, the last gradient given to update)`.

  The steps are `tx`'s; the last leaf of the state is the gradient the update
  that ran was given.
  """

  def init(params):
    return tx.init(params), jax.tree.map(jnp.zeros_like, params)

  def update(grads, state, params=None):
    updates, inner = tx.update(grads, state[0], params)
    return updates, (inner, grads)

  return optax.GradientTransformation(init, update)


def adam_leaves(opt_state: Any) -> tuple[jax.Array, ...]:
  """`(count, mu, nu)` of an Adam (or Adam in a chain) optimizer state, and the gradient if `recording`."""
  return tuple(jax.tree.leaves(opt_state))


def with_recording(state: Any) -> Any:
  """An `EntropyState` whose optimizer is `recording(state.tx)`, at the same optimizer state."""
  tx = recording(state.tx)
  return state.replace(tx=tx, opt_state=(state.opt_state, jnp.zeros_like(state.log_alpha)))


def strong(x: jax.Array) -> jax.Array:
  """`x` as a strongly typed float32 (a client's weakly typed scalar, made plain).

  The pair swaps `log_alpha` between the two states, so both must hold the
  same type; the values and the float32 arithmetic are unchanged.
  """
  return jax.lax.convert_element_type(x, jnp.float32)


def per_update(records: dict, key: str) -> dict[str, np.ndarray]:
  """Records taken once per iteration, kept where `records[key]` changed (one per update)."""
  n = np.asarray(records[key])
  keep = n != np.concatenate([[0], n[:-1]])
  return {k: np.asarray(v)[keep] for k, v in records.items()}


# ---------------------------------------------------------------- lockstep --

_INT = ("n", "count", "count_client", "count_ours", "step_ours", "skipped_ours")
_FLOAT = ("log_alpha", "mu", "nu", "g_client", "g_ours", "next_client", "next_ours", "mu_client", "mu_ours")
_FLOAT += ("nu_client", "nu_ours", "abs_terms", "exact_diff", "target_client", "target_ours")


def empty_record(stat_shape: tuple[int, ...] = ()) -> dict[str, jax.Array]:
  """The record of one lockstep update, before the first one; `stat` is the step's statistic."""
  record = {k: jnp.zeros((), jnp.int32) for k in _INT}
  record.update({k: jnp.zeros((), jnp.float32) for k in _FLOAT})
  return {**record, "stat": jnp.zeros(stat_shape, jnp.float32)}


class Lockstep(struct.PyTreeNode):
  """A client's alpha `TrainState` and an integration's `EntropyState`, stepped side by side.

  Both optimizers are `recording`. `ours_drives` (a bool leaf, so that both
  runs are one program under `vmap`) says whose result trains the agent:
  `params` holds the driver's `log_alpha`, and `apply_fn` (SBX reads alpha
  through it) is the client's `exp`.
  """

  client: Any
  ours: Any
  record: dict
  ours_drives: jax.Array
  key: str = struct.field(pytree_node=False, default="log_alpha")

  @property
  def params(self) -> dict[str, jax.Array]:
    return {self.key: jnp.where(self.ours_drives, self.ours.log_alpha, self.client.params[self.key])}

  @property
  def apply_fn(self) -> Any:
    return self.client.apply_fn

  def synced(self) -> tuple[Any, Any]:
    """`(client, ours)`, both at the driver's `log_alpha` and optimizer state."""
    client, ours = self.client, self.ours
    pick = lambda o, c: jnp.where(self.ours_drives, o, c)
    leaves = [pick(o, c) for o, c in zip(jax.tree.leaves(ours.opt_state), jax.tree.leaves(client.opt_state))]
    log_alpha = pick(ours.log_alpha, client.params[self.key])
    client = client.replace(
      params=type(client.params)({self.key: log_alpha}),
      opt_state=jax.tree.unflatten(jax.tree.structure(client.opt_state), leaves),
    )
    ours = ours.replace(log_alpha=log_alpha, opt_state=jax.tree.unflatten(jax.tree.structure(ours.opt_state), leaves))
    return client, ours

  def stepped(self, client, ours, client_next, ours_next, stat, target_client, abs_terms, exact_diff) -> Lockstep:
    """The pair after one update, with its record (see the module doc).

    The gradients are those the two updates that ran gave their optimizers.
    """
    count, mu, nu, _ = adam_leaves(ours.opt_state)
    count_c, mu_c, nu_c, g_c = adam_leaves(client_next.opt_state)
    count_o, mu_o, nu_o, g_o = adam_leaves(ours_next.opt_state)
    record = {
      "n": count + 1,
      "count": count,
      "log_alpha": ours.log_alpha,
      "mu": mu,
      "nu": nu,
      "g_client": g_c,
      "g_ours": g_o,
      "next_client": client_next.params[self.key],
      "next_ours": ours_next.log_alpha,
      "count_client": count_c,
      "count_ours": count_o,
      "mu_client": mu_c,
      "mu_ours": mu_o,
      "nu_client": nu_c,
      "nu_ours": nu_o,
      "step_ours": ours_next.step,
      "skipped_ours": ours_next.skipped,
      "target_client": target_client,
      "target_ours": ours.target,
      "abs_terms": abs_terms,
      "exact_diff": exact_diff,
      "stat": stat,
    }
    empty = empty_record(jnp.shape(stat))
    record = {k: jnp.asarray(v, empty[k].dtype) for k, v in record.items()}
    return self.replace(client=client_next, ours=ours_next, record=record)


# ------------------------------------------------------------------ checks --


def pow_rel_error(beta: float, t: np.ndarray) -> np.ndarray:
  """A bound on the relative error of float32 `beta ** t`.

  `exp(t * log(beta))` with `log`, the product and `exp` each within 2 ulp
  (relative `4 u`): the exponent's absolute error `8 u |t log beta|`, plus `exp`.
  Repeated squaring is more accurate.
  """
  return (8.0 * t * abs(np.log(beta)) + 4.0) * U


def adam_reference(record: dict, g: np.ndarray, lr: float, b1=0.9, b2=0.999, eps=1e-8):
  """`log_alpha` after one `optax.adam` step from the record, in float64.

  The constants are the float32 values optax uses.
  """
  f32 = lambda x: np.float64(np.float32(x))
  t = record["count"].astype(np.float64) + 1
  mu = f32(1 - b1) * g + f32(b1) * record["mu"]
  nu = f32(1 - b2) * g * g + f32(b2) * record["nu"]
  m_hat = mu / (1 - f32(b1) ** t)
  v_hat = nu / (1 - f32(b2) ** t)
  return record["log_alpha"] - f32(lr) * m_hat / (np.sqrt(v_hat) + f32(eps))


def adam_rounding_bound(record: dict, g: np.ndarray, lr: float, b1=0.9, b2=0.999, eps=1e-8):
  """A bound on `|float32 adam step - adam_reference|`, operation by operation.

  First order in `u`, times 1.01 for the higher orders. `optax.adam`:
  `mu = (1-b1) g + b1 m`, `nu = (1-b2) g^2 + b2 v`, `c_i = 1 - b_i^t`,
  `la - lr (mu / c1) / (sqrt(nu / c2) + eps)`.
  """
  t = record["count"].astype(np.float64) + 1
  mu = (1 - b1) * g + b1 * record["mu"]
  nu = (1 - b2) * g * g + b2 * record["nu"]
  err_mu = gamma(3) * ((1 - b1) * abs(g) + b1 * abs(record["mu"]))
  p1, p2 = b1**t, b2**t
  c1, c2 = 1 - p1, 1 - p2
  rel_c1 = (p1 * pow_rel_error(b1, t) + U * c1) / c1
  rel_c2 = (p2 * pow_rel_error(b2, t) + U * c2) / c2
  m_hat = mu / c1
  err_m_hat = err_mu / c1 + abs(m_hat) * (rel_c1 + U)
  s = np.sqrt(nu / c2)
  rel_s = (gamma(4) + rel_c2 + U) / 2 + U
  d = s + eps
  rel_d = rel_s * s / d + U
  q = m_hat / d
  err_q = err_m_hat / d + abs(q) * (rel_d + U)
  upd = lr * q
  err_upd = lr * err_q + U * abs(upd) * 2
  return 1.01 * (err_upd + U * abs(record["log_alpha"] - upd))


def bad_indices(ok: np.ndarray) -> np.ndarray:
  """The first five indices where `ok` is false."""
  return np.nonzero(~ok)[0][:5]


def check_lockstep(records: dict, n_terms: int, lr: float) -> dict[str, float]:
  """Asserts every lockstep update within its float32 bounds; returns the worst ratios.

  Args:
    records: `[N]` arrays, one entry per update (see `empty_record`).
    n_terms: the `n` of the gradient's `gamma_n` (terms summed plus the
      scalar operations after the sum).
    lr: the optimizer's learning rate.

  Returns:
    `{"grad": max |dg| / bound, "step": max |dla| / bound, "mu": ..., "nu": ..., "n": N}`,
    each the largest ratio of a difference to its bound.
  """
  r = {k: np.asarray(v, np.float64) for k, v in records.items()}
  r["count"] = np.asarray(records["count"])
  # The integration's own fields: its target is the client's, its step counts every update, none skipped.
  bad = bad_indices(np.float32(r["target_ours"]) == np.float32(r["target_client"]))
  assert bad.size == 0, f"target {r['target_ours'][bad]} != the client's {r['target_client'][bad]}"
  np.testing.assert_array_equal(r["step_ours"], r["n"], err_msg="the integration's step did not advance by one")
  np.testing.assert_array_equal(r["skipped_ours"], 0, err_msg="the integration skipped updates")
  g_c, g_e = r["g_client"], r["g_ours"]
  grad_bound = np.abs(r["exact_diff"]) + 3 * gamma(n_terms) * r["abs_terms"]
  grad_err = np.abs(g_c - g_e)
  bad = bad_indices(grad_err <= grad_bound)
  assert bad.size == 0, f"gradients differ beyond rounding at updates {bad}: {grad_err[bad]} > {grad_bound[bad]}"
  step_bound = (
    np.abs(adam_reference(r, g_c, lr) - adam_reference(r, g_e, lr))
    + adam_rounding_bound(r, g_c, lr)
    + adam_rounding_bound(r, g_e, lr)
  )
  step_err = np.abs(r["next_client"] - r["next_ours"])
  bad = bad_indices(step_err <= step_bound)
  assert bad.size == 0, f"log_alpha steps differ beyond float32 rounding at updates {bad}: {step_err[bad]}"
  # The rest of the optimizer state: Adam's count exactly, its moments within
  # the float32 rounding of `(1 - b) x + b m` from each gradient (`x = g` for
  # mu, 3 roundings; `x = g^2` for nu, 4).
  for name in ("count_client", "count_ours"):
    np.testing.assert_array_equal(r[name], r["count"] + 1, err_msg=f"{name}: Adam's count did not advance by one")
  moments = {}
  for name, b, power, n in (("mu", 0.9, 1, 3), ("nu", 0.999, 2, 4)):
    f32 = lambda x: np.float64(np.float32(x))
    ref = lambda g: f32(1 - b) * g**power + f32(b) * r[name]  # noqa: B023
    rounding = lambda g: gamma(n) * ((1 - b) * np.abs(g) ** power + b * np.abs(r[name]))  # noqa: B023
    bound = np.abs(ref(g_c) - ref(g_e)) + rounding(g_c) + rounding(g_e)
    err = np.abs(r[f"{name}_client"] - r[f"{name}_ours"])
    bad = bad_indices(err <= bound)
    assert bad.size == 0, f"Adam's {name} differs beyond float32 rounding at updates {bad}: {err[bad]}"
    moments[name] = float(np.max(err / np.where(bound > 0, bound, 1.0)))
  # The reference itself: each implementation's step within its rounding bound.
  for name, g in (("client", g_c), ("ours", g_e)):
    err = np.abs(r[f"next_{name}"] - adam_reference(r, g, lr))
    assert np.all(err <= adam_rounding_bound(r, g, lr)), f"{name}'s Adam step off the float64 reference"
  return {"grad": float(np.max(grad_err / grad_bound)), "step": float(np.max(step_err / step_bound)), **moments}


# ------------------------------------------------------- open-loop replay --


def state_trace(state: Any) -> dict[str, jax.Array]:
  """An `EntropyState`'s fields: `log_alpha`, Adam's `count`, `mu`, `nu`, `step`, `target`, `skipped`,
  and the gradient its last update gave its optimizer (`grad`) if that is `recording`."""
  leaves = adam_leaves(state.opt_state)
  fields = {"log_alpha": state.log_alpha, "count": leaves[0], "mu": leaves[1], "nu": leaves[2]}
  fields |= {"step": state.step, "target": state.target, "skipped": state.skipped}
  return fields | ({"grad": leaves[3]} if len(leaves) == 4 else {})


def client_state_trace(state: Any, target: float, key: str = "log_alpha") -> dict[str, jax.Array]:
  """A client's alpha `TrainState` as `state_trace` names the fields; it counts its updates in Adam's count."""
  count, mu, nu = adam_leaves(state.opt_state)[:3]
  fields = {"log_alpha": state.params[key], "count": count, "mu": mu, "nu": nu}
  return fields | {"step": count, "target": jnp.float32(target), "skipped": jnp.zeros_like(count)}


def replay(stats: np.ndarray, **runs: tuple[Any, Callable, Callable]) -> dict[str, dict[str, np.ndarray]]:
  """Each run's state stepped by its `update(state, stat)` for each recorded statistic, in order.

  All runs go side by side through one program, so that XLA's rounding of
  the same operations is the same in each (two programs may round the same
  Adam step differently, and the difference compounds over a run).

  Args:
    stats: `[N, ...]` statistics, one per update.
    **runs: `name=(initial state, update, trace)`, `trace(state)` the fields to record.

  Returns:
    `{name: [N] arrays of trace(state) after each update}`.
  """

  def step(states, stat):
    states = {k: runs[k][1](s, stat) for k, s in states.items()}
    return states, {k: runs[k][2](s) for k, s in states.items()}

  initial = {k: run[0] for k, run in runs.items()}
  _, trace = jax.jit(lambda s, x: jax.lax.scan(step, s, x))(initial, jnp.asarray(stats))
  return jax.device_get(trace)


def ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """`|a - b|` of two `[N]` trajectories, in float32 units in the last place of
  the largest magnitude either has reached up to each update.

  An update `x <- fl(x - u)` rounds within half an ulp of `|x|` at the time, so
  differences made early, while `|x|` was large, are measured on that scale
  when `x` later passes near zero.
  """
  a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
  scale = np.maximum.accumulate(np.maximum(np.abs(a), np.abs(b)))
  return np.abs(a.astype(np.float64) - b) / np.spacing(scale)


def check_replay(client: dict, ours: dict, max_ulps: dict[str, float]) -> dict[str, float]:
  """Asserts a replayed trajectory equal to a reference (the client's), update by update.

  Adam's `count`, `step` and `skipped` exactly; `log_alpha`, `mu`, `nu` and
  `target` each within its `max_ulps[name]` (see `ulps`; 0 is exact).

  Returns:
    The largest difference in ulps of each float field.
  """
  for name in ("count", "step", "skipped"):
    np.testing.assert_array_equal(ours[name], client[name], err_msg=f"replayed {name}")
  worst = {}
  for name, tolerance in max_ulps.items():
    d = ulps(client[name], ours[name])
    bad = np.nonzero(~(d <= tolerance))[0]
    assert bad.size == 0, (
      f"replayed {name} differs from the client's by more than {tolerance} ulp from update {bad[0] + 1} on"
      f" ({bad.size} of {d.size} updates): client {client[name][bad[:3]]}, replay {ours[name][bad[:3]]}"
    )
    worst[name] = float(np.max(d))
  return worst
