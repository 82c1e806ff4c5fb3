"""entropy_jax's `EntropySAC` in rejax (rejax 0.1.3), against rejax's own temperature.

- Lockstep: rejax's real training (`SAC.train`: its collection, replay
  buffer, networks, losses and loops) on Pendulum-v1 (continuous) and
  CartPole-v1 (discrete), twice with the same seed, rejax's temperature
  driving, then entropy_jax's. At every update rejax's `update_alpha` and
  `EntropySAC.update_alpha` take their steps from the same log-probs, and the
  whole temperature state after them is compared within float32 rounding.
- Open-loop replay: the log-probs of the rejax-driven run (rejax's own
  training) go through rejax's and the class's `update_alpha`, from each
  one's initial state, never re-synchronized.
- Features (Pendulum-v1): a target schedule, bounds that bind and the
  log-form loss, inside rejax's training, against closed forms and the
  core's own update.
- Library mutants: faults in `entropy_jax.apply_gradients` fail these checks.

See `tests/_integrations.py`.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

rejax = pytest.importorskip("rejax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _integrations import (  # noqa: E402
  Lockstep,
  check_lockstep,
  check_replay,
  client_state_trace,
  empty_record,
  per_update,
  recording,
  replay,
  state_trace,
  strong,
  with_recording,
)
from _integrations_features import (  # noqa: E402
  BOUNDS,
  LIBRARY_MUTANTS,
  SCHEDULE,
  Recorded,
  check_features,
  core_state,
  schedule_closed_form,
)
from flax import struct  # noqa: E402
from flax.core.frozen_dict import FrozenDict  # noqa: E402

import entropy_jax as ej  # noqa: E402
from entropy_jax.integrations.rejax import (  # noqa: E402
  EntropySAC,
  RejaxEntropyState,
  as_rejax_state,
  rejax_env,
)

SEED = 0
ENVS = ("Pendulum-v1", "CartPole-v1")
TOTAL, FILL = 700, 100  # env steps (num_envs=1), one update each after the fill
FEATURES_TOTAL = 350
# The replay's tolerance, in ulps (see `_integrations.ulps`). Continuous: both
# gradients are `-alpha * (mean log pi + T)` summed in different orders. Discrete:
# rejax weights the target by `sum_a p`, which differs from 1 by up to 2.4e-7 in
# float32; when the entropy is near its target the gradient `alpha (H - T)` is
# small beside its terms, and that difference reaches a few 1e-6 of it (Adam's
# moments at the first updates) and some ulp of log_alpha over the run (measured).
REPLAY_ULPS = {
  "Pendulum-v1": {"log_alpha": 4, "mu": 4, "nu": 4, "target": 0},
  "CartPole-v1": {"log_alpha": 16, "mu": 64, "nu": 128, "target": 0},
}
FEATURES = {**BOUNDS, "alpha_loss_form": "log"}  # with the target schedule `SCHEDULE`


def gradient_terms(discrete: bool, state, logprob):
  """`(sum of |terms| of the gradient's sums, exact difference of the two formulas)`.

  rejax's alpha-form gradient is `-alpha * mean_b(logprob_b + T)`
  (continuous) or `-alpha * mean_b sum_a p_ba (logprob_ba + T)` (discrete);
  entropy_jax's is `-alpha * (mean_b logprob_b + T)` or `alpha * (H - T)`.
  The discrete ones differ exactly by `alpha * T * (mean_b sum_a p_ba - 1)`,
  a rounding-sized quantity (`p = exp(logprob)` does not sum to 1 exactly).
  """
  alpha, target = jnp.exp(state.log_alpha), state.target
  if not discrete:
    return alpha * (jnp.mean(jnp.abs(logprob)) + jnp.abs(target)), jnp.zeros(())
  p = jnp.exp(logprob)
  batch = logprob.shape[0]
  abs_terms = alpha * jnp.sum(p * (jnp.abs(logprob) + jnp.abs(target))) / batch
  return abs_terms, alpha * target * (jnp.mean(jnp.sum(p, axis=1)) - 1.0)


def n_terms(discrete: bool, batch: int, actions: int) -> int:
  """The `n` of `gamma_n`: the terms summed, plus the scalar operations and `exp`s."""
  return batch * actions + actions + batch + 12 if discrete else batch + 10


def stat_shape(algo) -> tuple[int, ...]:
  """The shape of the log-probs rejax's `update_alpha` takes: `[B]`, or `[B, A]` for discrete actions."""
  return (algo.batch_size, int(algo.action_dim)) if algo.discrete else (algo.batch_size,)


class LockstepSAC(EntropySAC):
  """`EntropySAC` carrying rejax's alpha `TrainState` beside its `EntropyState` (see `Lockstep`)."""

  def init_state(self, rng):
    ts = rejax.SAC.init_state(self, rng)  # rejax's own, alpha included
    params = FrozenDict({"log_alpha": strong(ts.alpha_ts.params["log_alpha"])})
    tx = recording(ts.alpha_ts.tx)
    client = ts.alpha_ts.replace(params=params, tx=tx, opt_state=tx.init(params))
    ours = with_recording(self.init_entropy_state())
    record = empty_record(stat_shape(self))
    return ts.replace(alpha_ts=Lockstep(client=client, ours=ours, record=record, ours_drives=jnp.zeros((), bool)))

  def update_alpha(self, ts, logprob):
    pair = ts.alpha_ts
    client, ours = pair.synced()
    client_next = rejax.SAC.update_alpha(self, ts.replace(alpha_ts=client), logprob).alpha_ts
    ours_next = EntropySAC.update_alpha(self, ts.replace(alpha_ts=ours), logprob).alpha_ts
    abs_terms, exact_diff = gradient_terms(self.discrete, ours, logprob)
    args = (logprob, self.target_entropy, abs_terms, exact_diff)
    return ts.replace(alpha_ts=pair.stepped(client, ours, client_next, ours_next, *args))


class FeaturesSAC(EntropySAC):
  """`EntropySAC`, recording the log-probs of each temperature step and the state after it."""

  def init_state(self, rng):
    ts = super().init_state(rng)
    return ts.replace(alpha_ts=Recorded(inner=with_recording(ts.alpha_ts), stat=jnp.zeros(stat_shape(self))))

  def update_alpha(self, ts, logprob):
    inner = EntropySAC.update_alpha(self, ts.replace(alpha_ts=ts.alpha_ts.inner), logprob).alpha_ts
    return ts.replace(alpha_ts=Recorded(inner=inner, stat=logprob))


class AlphaOnly(struct.PyTreeNode):
  """The part of rejax's train state that `update_alpha` reads and writes."""

  alpha_ts: Any


def member(tree, i: int):
  """Run `i` of a tree of runs stacked on the leading axis."""
  return jax.tree.map(lambda x: x[i], tree)


def make(cls, env_name, record=None, total=TOTAL, **fields):
  env, params = rejax_env(env_name)
  algo = cls.create(
    env=env,
    env_params=params,
    total_timesteps=total,
    fill_buffer=FILL,
    buffer_size=total,  # rejax's default holds 131,072 transitions; a run stores `total`
    eval_freq=1,
    skip_initial_evaluation=True,
    **fields,
  )
  # rejax's evaluation hook, called after every iteration: this iteration's record.
  return algo.replace(eval_callback=record or (lambda algo, ts, rng: ts.alpha_ts.record))


@pytest.fixture(scope="module")
def lockstep():
  """`env_name -> (algo, final train states [2], per-update records [2])`: rejax's `train`, vmapped
  over two runs from the same seed, rejax driving, then the class; each run once per module."""

  @functools.cache
  def run(env_name: str):
    algo = make(LockstepSAC, env_name)
    ts = jax.jit(algo.init_state)(jax.random.key(SEED))
    both = jax.tree.map(lambda x: jnp.stack([x, x]), ts)
    both = both.replace(alpha_ts=both.alpha_ts.replace(ours_drives=jnp.array([False, True])))
    final, records = jax.jit(jax.vmap(lambda t: algo.train(train_state=t)))(both)
    records = jax.device_get(records)
    return algo, final, [per_update(member(records, i), "n") for i in range(2)]

  return run


@pytest.fixture(scope="module")
def features():
  """`FeaturesSAC` on Pendulum-v1 with a schedule, bounds and the log form: `(algo, per-update trace)`."""
  algo = make(FeaturesSAC, "Pendulum-v1", lambda algo, ts, rng: ts.alpha_ts.trace(), FEATURES_TOTAL, **FEATURES)
  algo = algo.replace(entropy_target=ej.linear_schedule(*SCHEDULE))
  _, trace = jax.jit(algo.train)(jax.random.key(SEED))
  return algo, per_update(jax.device_get(trace), "count")


@functools.cache
def initial_alpha(env_name: str) -> tuple[Any, Any]:
  """The alpha states `rejax.SAC.init_state` and `EntropySAC.init_state` start from."""
  init = lambda cls: jax.jit(lambda key: make(cls, env_name).init_state(key).alpha_ts)(jax.random.key(SEED))
  client, ours = init(rejax.SAC), init(EntropySAC)
  return client.replace(params=FrozenDict({"log_alpha": strong(client.params["log_alpha"])})), ours


def replayed(env_name: str, logprobs: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
  """Log-probs, open loop, through rejax's own `update_alpha` and the class's, side by side."""
  client_algo, ours_algo = make(rejax.SAC, env_name), make(EntropySAC, env_name)
  client, ours = initial_alpha(env_name)
  target = client_algo.target_entropy
  step = lambda algo: lambda s, lp: algo.update_alpha(AlphaOnly(alpha_ts=s), lp).alpha_ts
  return replay(
    logprobs,
    client=(client, step(client_algo), lambda s: client_state_trace(s, target)),
    ours=(ours, step(ours_algo), state_trace),
  )


def features_replayed(algo, logprobs) -> dict[str, dict[str, np.ndarray]]:
  """Log-probs through the class's `update_alpha` from the features run's initial state, and through
  the core's `continuous_update` from a state the core builds with the same features."""
  core = core_state(optax.chain(optax.clip(algo.max_grad_norm), optax.adam(algo.learning_rate)), "log")
  start = with_recording(algo.init_entropy_state())
  step = lambda s, lp: EntropySAC.update_alpha(algo, AlphaOnly(alpha_ts=s), lp).alpha_ts
  return replay(
    logprobs,
    ours=(start, step, state_trace),
    core=(core, lambda s, lp: ej.continuous_update(s, lp)[0], state_trace),
  )


def check_rejax_features(algo, trace) -> dict:
  logprobs = trace["stat"].astype(np.float64)
  entropy, abs_terms = -np.mean(logprobs, axis=1), np.mean(np.abs(logprobs), axis=1)
  closed = {"schedule": schedule_closed_form, "form": "log", "n_terms": algo.batch_size + 10}
  return check_features(trace, algo.init_entropy_state(), entropy, abs_terms, **closed, **FEATURES)


@pytest.mark.slow
@pytest.mark.parametrize("env_name", ENVS)
def test_every_update_matches_rejax(lockstep, env_name):
  """rejax's real training; at every update the class's step agrees with rejax's within float32 rounding."""
  algo, final, runs = lockstep(env_name)
  n = TOTAL - FILL
  batch, actions = algo.batch_size, (int(algo.action_dim) if algo.discrete else 1)
  for i, records in enumerate(runs):
    np.testing.assert_array_equal(records["n"], np.arange(1, n + 1))
    worst = check_lockstep(records, n_terms(algo.discrete, batch, actions), algo.learning_rate)
    print(env_name, "lockstep, largest ratios to the rounding bounds:", worst)
    driven = records["next_ours" if i else "next_client"]
    # Not vacuous: alpha moved (Adam moves log_alpha by at most ~lr per update).
    assert abs(float(driven[-1] - records["log_alpha"][0])) > 0.05
    # The driver's log_alpha is the one that trained the agent.
    pair = member(final.alpha_ts, i)
    assert np.array_equal(pair.params["log_alpha"], driven[-1])


@pytest.mark.slow
@pytest.mark.parametrize("env_name", ENVS)
def test_replay_of_rejax_training_through_the_class_matches(lockstep, env_name):
  """rejax's own training's log-probs, open loop through rejax's and the class's `update_alpha`: the
  whole state within a few ulp at every update."""
  _, _, (records, _) = lockstep(env_name)
  runs = replayed(env_name, records["stat"])
  # The record is rejax's: its own method, replayed, retraces its count and log_alpha.
  np.testing.assert_array_equal(runs["client"]["count"], records["count_client"])
  assert np.max(np.abs(runs["client"]["log_alpha"] - records["next_client"])) < 1e-5
  worst = check_replay(runs["client"], runs["ours"], REPLAY_ULPS[env_name])
  print(env_name, "replay, largest differences in ulp:", worst)
  assert abs(float(records["next_client"][-1])) > 0.05  # alpha travelled from 1


@pytest.mark.slow
def test_schedule_bounds_and_log_form_inside_rejax(features):
  """rejax's training with a target schedule, bounds that bind and the log-form loss: every update's
  step count, target, gradient and bound against closed forms; the class, fed the same log-probs,
  against the core's `continuous_update` from a state the core builds."""
  algo, trace = features
  print("features:", check_rejax_features(algo, trace))
  runs = features_replayed(algo, trace["stat"])
  check_replay(runs["core"], runs["ours"], REPLAY_ULPS["Pendulum-v1"])


@pytest.mark.slow
@pytest.mark.parametrize("env_name", ENVS)
def test_actor_and_critic_read_the_entropy_state_as_rejax_reads_its_own(lockstep, env_name):
  """rejax's actor and critic steps: bit-identical outputs from either alpha state."""
  _, final, _ = lockstep(env_name)
  ts = member(final, 1)  # the run entropy_jax drove
  plain = make(EntropySAC, env_name)
  mb = ts.replay_buffer.sample(plain.batch_size, jax.random.key(1))
  log_alpha = ts.alpha_ts.ours.log_alpha
  client = ts.alpha_ts.client.replace(params=FrozenDict({"log_alpha": log_alpha}))
  ours = as_rejax_state(ts.alpha_ts.ours)
  for step in (plain.update_actor, plain.update_critic):
    outs = [jax.jit(step)(ts.replace(alpha_ts=a), mb) for a in (client, ours)]
    nets = [(o[0] if isinstance(o, tuple) else o) for o in outs]
    nets = [(t.actor_ts.params, t.critic_ts.params) for t in nets]
    for a, b in zip(jax.tree.leaves(nets[0]), jax.tree.leaves(nets[1])):
      np.testing.assert_array_equal(a, b)


def test_initial_state_is_rejax_s_with_an_entropy_state():
  """`EntropySAC`'s initial state: rejax's, with an `EntropyState` in the place of
  rejax's alpha `TrainState` at the same log_alpha, optimizer state and target."""

  def both(client, algo, key):
    return client.init_state(key), algo.init_state(key)

  for env_name in ENVS:
    algo = make(EntropySAC, env_name)
    theirs, ours = jax.jit(functools.partial(both, make(rejax.SAC, env_name), algo))(jax.random.key(SEED))
    alpha = ours.alpha_ts
    assert isinstance(alpha, RejaxEntropyState) and alpha.loss_form == "alpha"
    assert np.array_equal(alpha.log_alpha, theirs.alpha_ts.params["log_alpha"])
    assert np.float32(alpha.target) == np.float32(algo.target_entropy)
    ours_opt, their_opt = jax.tree.leaves(alpha.opt_state), jax.tree.leaves(theirs.alpha_ts.opt_state)
    assert len(ours_opt) == len(their_opt) == 3  # Adam's count, mu, nu
    rest = lambda t: jax.tree.leaves(t.replace(alpha_ts=None, rng=None))
    for a, b in zip(ours_opt + rest(ours), their_opt + rest(theirs)):
      np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(jax.random.key_data(ours.rng), jax.random.key_data(theirs.rng))
  assert make(EntropySAC, "CartPole-v1").target_entropy == pytest.approx(0.98 * np.log(2))


# Last in the file: it clears jax's caches, and what runs after it compiles anew.
@pytest.mark.slow
@pytest.mark.parametrize("mutant", sorted(LIBRARY_MUTANTS))
def test_a_fault_in_the_library_fails_the_checks(lockstep, features, monkeypatch, mutant):
  """The recorded runs replayed through the class with `entropy_jax.apply_gradients` mutated: the checks fail."""
  make_mutant, message = LIBRARY_MUTANTS[mutant]
  algo, trace = features
  _, _, (records, _) = lockstep("Pendulum-v1")
  jax.clear_caches()  # nothing traced with the library as it is may be reused
  monkeypatch.setattr(ej, "apply_gradients", make_mutant(ej.apply_gradients))
  try:
    with pytest.raises(AssertionError, match=message):
      if mutant == "moments not stored":
        runs = replayed("Pendulum-v1", records["stat"])
        check_replay(runs["client"], runs["ours"], REPLAY_ULPS["Pendulum-v1"])
      else:
        check_rejax_features(algo, {**features_replayed(algo, trace["stat"])["ours"], "stat": trace["stat"]})
  finally:
    monkeypatch.undo()
    jax.clear_caches()
