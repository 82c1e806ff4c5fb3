"""Differential checks of a client's temperature against entropy_jax's: lockstep and replay.

Lockstep (`Lockstep`, `check_lockstep`):

The differential tests run a client's real training (rejax, SBX) with a
`Lockstep` pair in the place of its alpha state: the client's own `TrainState`
and entropy_jax's `EntropyState`. At every update both are first set to the
driver's `log_alpha` and optimizer state, then each takes its own step from
the same log-probs; the driver's result trains the agent, the other is the
shadow. Each update is thus compared on identical inputs, and its record
says how far the two may differ from float32 rounding alone:

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
- the rest of the state after the step: Adam's count exactly, its moments
  within the rounding of their updates from each gradient.

A single step that differs by more (a wrong target, loss form, learning rate,
initial alpha or optimizer) fails the comparison at the first update.

Two runs with the same seed do not stay within rounding of each other once
they differ by one ulp: SAC training amplifies the difference (measured in
docs/integrations.md), and XLA may round the same Adam step differently in
two programs. So the trajectories are compared step by step, not end to end.

Open-loop replay (`Recorded`, `replay`, `check_replay`): the client's own
training, recorded, replayed through entropy_jax's public update without
re-synchronizing (see the section below); `mutations` are wrong temperatures
the replay must reject.
"""

from __future__ import annotations

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


def capture() -> optax.GradientTransformation:
  """An optax transformation whose state after `update` is the gradient itself.

  A client's own update method, run with a `TrainState` that has this `tx`,
  leaves its exact float32 gradient in `opt_state` (and its parameters unchanged).
  """
  return optax.GradientTransformation(
    lambda params: jax.tree.map(jnp.zeros_like, params),
    lambda grads, state, params=None: (jax.tree.map(jnp.zeros_like, grads), grads),
  )


def empty_record() -> dict[str, jax.Array]:
  """The record of one lockstep update, before the first one."""
  f = jnp.zeros((), jnp.float32)
  return {
    "n": jnp.zeros((), jnp.int32),
    "count": jnp.zeros((), jnp.int32),
    "log_alpha": f,
    "mu": f,
    "nu": f,
    "g_client": f,
    "g_ours": f,
    "next_client": f,
    "next_ours": f,
    "count_client": jnp.zeros((), jnp.int32),
    "count_ours": jnp.zeros((), jnp.int32),
    "mu_client": f,
    "mu_ours": f,
    "nu_client": f,
    "nu_ours": f,
    "abs_terms": f,
    "exact_diff": f,
    "target": f,
  }


class Lockstep(struct.PyTreeNode):
  """A client's alpha `TrainState` and an `EntropyState`, stepped side by side.

  `ours_drives` (a bool leaf, so that both runs are one program under `vmap`)
  says whose result trains the agent: `params` holds the driver's `log_alpha`,
  and `apply_fn` (SBX reads alpha through it) is the client's `exp`.
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

  def stepped(self, client, ours, client_next, ours_next, g_client, g_ours, abs_terms, exact_diff) -> Lockstep:
    """The pair after one update, with its record (see the module doc)."""
    count, mu, nu = jax.tree.leaves(ours.opt_state)
    count_c, mu_c, nu_c = jax.tree.leaves(client_next.opt_state)
    count_o, mu_o, nu_o = jax.tree.leaves(ours_next.opt_state)
    record = {
      "n": count + 1,
      "count": count,
      "log_alpha": ours.log_alpha,
      "mu": mu,
      "nu": nu,
      "g_client": g_client,
      "g_ours": g_ours,
      "next_client": client_next.params[self.key],
      "next_ours": ours_next.log_alpha,
      "count_client": count_c,
      "count_ours": count_o,
      "mu_client": mu_c,
      "mu_ours": mu_o,
      "nu_client": nu_c,
      "nu_ours": nu_o,
      "abs_terms": abs_terms,
      "exact_diff": exact_diff,
      "target": ours.target,
    }
    record = {k: jnp.asarray(v, empty_record()[k].dtype) for k, v in record.items()}
    return self.replace(client=client_next, ours=ours_next, record=record)


def strong(x: jax.Array) -> jax.Array:
  """`x` as a strongly typed float32 (a client's weakly typed scalar, made plain).

  The pair swaps `log_alpha` between the two states, so both must hold the
  same type; the values and the float32 arithmetic are unchanged.
  """
  return jax.lax.convert_element_type(x, jnp.float32)


# ------------------------------------------------------------------ checks --


def pow_rel_error(beta: float, t: np.ndarray) -> np.ndarray:
  """A bound on the relative error of float32 `beta ** t`.

  `exp(t * log(beta))` with `log`, the product and `exp` each within 2 ulp
  (relative `4 u`): the exponent's absolute error `8 u |t log beta|`, plus `exp`.
  Repeated squaring is more accurate. `test_pow_model` checks it for XLA.
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
  rel_nu = gamma(4)
  p1, p2 = b1**t, b2**t
  c1, c2 = 1 - p1, 1 - p2
  rel_c1 = (p1 * pow_rel_error(b1, t) + U * c1) / c1
  rel_c2 = (p2 * pow_rel_error(b2, t) + U * c2) / c2
  m_hat = mu / c1
  err_m_hat = err_mu / c1 + abs(m_hat) * (rel_c1 + U)
  rel_v_hat = rel_nu + rel_c2 + U
  s = np.sqrt(nu / c2)
  rel_s = rel_v_hat / 2 + U
  d = s + eps
  rel_d = rel_s * s / d + U
  q = m_hat / d
  err_q = err_m_hat / d + abs(q) * (rel_d + U)
  upd = lr * q
  err_upd = lr * err_q + U * abs(upd) * 2
  new = record["log_alpha"] - upd
  return 1.01 * (err_upd + U * abs(new))


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
  g_c, g_e = r["g_client"], r["g_ours"]
  grad_bound = np.abs(r["exact_diff"]) + 3 * gamma(n_terms) * r["abs_terms"]
  grad_err = np.abs(g_c - g_e)
  bad = np.nonzero(grad_err > grad_bound)[0]
  assert bad.size == 0, (
    f"gradients differ beyond float32 rounding at updates {bad[:5]}:"
    f" |dg| {grad_err[bad[:5]]} > bound {grad_bound[bad[:5]]}"
  )
  step_bound = (
    np.abs(adam_reference(r, g_c, lr) - adam_reference(r, g_e, lr))
    + adam_rounding_bound(r, g_c, lr)
    + adam_rounding_bound(r, g_e, lr)
  )
  step_err = np.abs(r["next_client"] - r["next_ours"])
  bad = np.nonzero(step_err > step_bound)[0]
  assert bad.size == 0, (
    f"log_alpha steps differ beyond float32 rounding at updates {bad[:5]}:"
    f" {step_err[bad[:5]]} > bound {step_bound[bad[:5]]}"
  )
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
    bad = np.nonzero(err > bound)[0]
    assert bad.size == 0, f"Adam's {name} differs beyond float32 rounding at updates {bad[:5]}: {err[bad[:5]]}"
    moments[name] = float(np.max(err / np.where(bound > 0, bound, 1.0)))
  # The reference itself: each implementation's step within its rounding bound.
  for name, g in (("client", g_c), ("ours", g_e)):
    err = np.abs(r[f"next_{name}"] - adam_reference(r, g, lr))
    assert np.all(err <= adam_rounding_bound(r, g, lr)), f"{name}'s Adam step off the float64 reference"
  return {
    "grad": float(np.max(grad_err / grad_bound)),
    "step": float(np.max(step_err / step_bound)),
    **moments,
    "n": int(g_c.size),
  }


def updates_only(records: dict) -> dict[str, np.ndarray]:
  """Records taken once per iteration, reduced to one per update (`n` changes)."""
  n = np.asarray(records["n"])
  keep = n != np.concatenate([[0], n[:-1]])
  return {k: np.asarray(v)[keep] for k, v in records.items()}


# ------------------------------------------------------- open-loop replay --
# A client's own training is recorded, update by update: the statistic its
# temperature step took (rejax: the log-prob batch; SBX: the batch entropy)
# and its whole temperature state after the step. The record is then replayed
# through entropy_jax's public update from the same initial state, never
# re-synchronized: a fault in any part of the state (a moment not stored, a
# wrong decay) compounds over the updates instead of being reset at each one.


class Recorded(struct.PyTreeNode):
  """A client's alpha `TrainState` and the statistic its last temperature step took.

  `params` and `apply_fn` are the client's, so its losses read alpha from it
  as from their own state; the client's own update method steps `inner`.
  """

  inner: Any
  stat: jax.Array
  key: str = struct.field(pytree_node=False, default="log_alpha")

  @property
  def params(self) -> Any:
    return self.inner.params

  @property
  def apply_fn(self) -> Any:
    return self.inner.apply_fn

  def trace(self) -> dict[str, jax.Array]:
    """The step's statistic and the client's temperature state after it."""
    count, mu, nu = jax.tree.leaves(self.inner.opt_state)
    return {"stat": self.stat, "log_alpha": self.inner.params[self.key], "count": count, "mu": mu, "nu": nu}


def state_trace(state: Any) -> dict[str, jax.Array]:
  """An `EntropyState`'s `log_alpha` and Adam's `count`, `mu` and `nu`."""
  count, mu, nu = jax.tree.leaves(state.opt_state)
  return {"log_alpha": state.log_alpha, "count": count, "mu": mu, "nu": nu}


def replay(state: Any, stats: np.ndarray, update: Any) -> dict[str, np.ndarray]:
  """`state` stepped by `update(state, stat)` for each recorded statistic, in order.

  Returns:
    `[N]` arrays of the state after each update (see `state_trace`).
  """

  def step(s, stat):
    s = update(s, stat)
    return s, state_trace(s)

  _, trace = jax.jit(lambda s, x: jax.lax.scan(step, s, x))(state, jnp.asarray(stats))
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
  """Asserts the replay equal to the client's record, update by update.

  Adam's `count` exactly; `log_alpha`, `mu` and `nu` each within its
  `max_ulps[name]` (see `ulps`) at every update.

  Returns:
    The largest difference in ulps of each field.
  """
  np.testing.assert_array_equal(ours["count"], client["count"], err_msg="Adam's count")
  worst = {}
  for name in ("log_alpha", "mu", "nu"):
    d = ulps(client[name], ours[name])
    bad = np.nonzero(~(d <= max_ulps[name]))[0]
    assert bad.size == 0, (
      f"replayed {name} differs from the client's by more than {max_ulps[name]} ulp from update {bad[0] + 1} on"
      f" ({bad.size} of {d.size} updates): client {client[name][bad[:3]]}, replay {ours[name][bad[:3]]}"
    )
    worst[name] = float(np.max(d))
  return worst


def temperature_updates(records: dict) -> dict[str, np.ndarray]:
  """Records taken once per iteration, kept where Adam's count advanced."""
  count = np.asarray(records["count"])
  keep = count != np.concatenate([[0], count[:-1]])
  return {k: np.asarray(v)[keep] for k, v in records.items()}


# -------------------------------------------------------------- mutations --
# Deliberately wrong temperatures, each a small change to Adam that a replay
# must reject.


def adam_without_moments(lr: float) -> optax.GradientTransformation:
  """`optax.adam(lr)` that never stores its moments: `mu` and `nu` stay at 0, the count advances."""
  adam = optax.adam(lr)

  def update(grads, state, params=None):
    updates, new = adam.update(grads, state, params)
    return updates, (new[0]._replace(mu=state[0].mu, nu=state[0].nu), *new[1:])

  return optax.GradientTransformation(adam.init, update)


def mutations(lr: float, prefix: tuple = ()) -> dict[str, optax.GradientTransformation]:
  """Wrong optimizers for a client using `optax.chain(*prefix, optax.adam(lr))`."""
  wrong = {
    "dropped moments": adam_without_moments(lr),
    "b2=0.99": optax.adam(lr, b2=0.99),
    "wrong sign": optax.adam(-lr),
  }
  return {k: optax.chain(*prefix, tx) if prefix else tx for k, tx in wrong.items()}
