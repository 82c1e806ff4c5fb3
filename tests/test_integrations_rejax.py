"""entropy_jax in rejax's SAC (rejax 0.1.3), against rejax's own temperature.

- Lockstep: rejax's real training (`SAC.train`: its collection, replay
  buffer, networks, losses and loops) on Pendulum-v1 (continuous) and
  CartPole-v1 (discrete), twice with the same seed, rejax's temperature
  driving, then entropy_jax's. At every update both temperature steps are
  taken from the same inputs, and the whole temperature state after them
  (log_alpha, Adam's count, mu and nu) is compared within float32 rounding.
- Open-loop replay: rejax's own training, recorded (the log-probs each
  temperature step took, and rejax's state after it), replayed through
  `entropy_jax.continuous_update` / `discrete_update` from `EntropySAC`'s
  initial state without re-synchronizing; and wrong temperatures the replay
  must reject.

See `tests/_integrations.py`.
"""

from __future__ import annotations

import functools

import pytest

rejax = pytest.importorskip("rejax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _integrations import (  # noqa: E402
  Lockstep,
  Recorded,
  capture,
  check_lockstep,
  check_replay,
  empty_record,
  mutations,
  replay,
  strong,
  temperature_updates,
  ulps,
  updates_only,
)
from flax.core.frozen_dict import FrozenDict  # noqa: E402

import entropy_jax as ej  # noqa: E402
from entropy_jax.integrations.rejax import (  # noqa: E402
  EntropySAC,
  FiveTupleStep,
  RejaxEntropyState,
  as_rejax_state,
  rejax_env,
)

SEED = 0
ENVS = ("Pendulum-v1", "CartPole-v1")
LOCKSTEP_TOTAL, LOCKSTEP_FILL = 700, 100  # env steps (num_envs=1), one update each after the fill
REPLAY_TOTAL, REPLAY_FILL = 1_150, 100
# The replay's tolerance, in ulps (see `_integrations.ulps`). Continuous: both
# gradients are `-alpha * (mean log pi + T)` summed in different orders. Discrete:
# rejax weights the target by `sum_a p`, which differs from 1 by up to 2.4e-7 in
# float32; when the entropy is near its target the gradient `alpha (H - T)` is
# small beside its terms, and that difference reaches a few 1e-6 of it (Adam's
# moments at the first updates) and 12 ulp of log_alpha over the run (measured).
REPLAY_ULPS = {
  "Pendulum-v1": {"log_alpha": 4, "mu": 4, "nu": 4},
  "CartPole-v1": {"log_alpha": 16, "mu": 64, "nu": 128},
}


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


class LockstepSAC(EntropySAC):
  """`EntropySAC` carrying rejax's alpha `TrainState` beside its `EntropyState`."""

  def init_state(self, rng):
    ts = rejax.SAC.init_state(self, rng)  # rejax's own, alpha included
    client = ts.alpha_ts
    client = client.replace(params=FrozenDict({"log_alpha": strong(client.params["log_alpha"])}))
    pair = Lockstep(
      client=client, ours=self.init_entropy_state(), record=empty_record(), ours_drives=jnp.zeros((), bool)
    )
    return ts.replace(alpha_ts=pair)

  def update_alpha(self, ts, logprob):
    pair = ts.alpha_ts
    client, ours = pair.synced()
    client_next = rejax.SAC.update_alpha(self, ts.replace(alpha_ts=client), logprob).alpha_ts
    ours_next = EntropySAC.update_alpha(self, ts.replace(alpha_ts=ours), logprob).alpha_ts
    probe = client.replace(tx=capture(), opt_state=capture().init(client.params))
    g_client = rejax.SAC.update_alpha(self, ts.replace(alpha_ts=probe), logprob).alpha_ts.opt_state
    g_ours = self.alpha_gradient(ours, logprob)
    abs_terms, exact_diff = gradient_terms(self.discrete, ours, logprob)
    pair = pair.stepped(client, ours, client_next, ours_next, g_client["log_alpha"], g_ours, abs_terms, exact_diff)
    return ts.replace(alpha_ts=pair)


class RecordedSAC(rejax.SAC):
  """rejax's own `SAC`, its alpha `TrainState` carrying the log-probs of its last step."""

  def init_state(self, rng):
    ts = super().init_state(rng)
    shape = (self.batch_size, int(self.action_dim)) if self.discrete else (self.batch_size,)
    return ts.replace(alpha_ts=Recorded(inner=ts.alpha_ts, stat=jnp.zeros(shape)))

  def update_alpha(self, ts, logprob):
    inner = super().update_alpha(ts.replace(alpha_ts=ts.alpha_ts.inner), logprob).alpha_ts
    return ts.replace(alpha_ts=Recorded(inner=inner, stat=logprob))


def member(tree, i: int):
  """Run `i` of a tree of runs stacked on the leading axis."""
  return jax.tree.map(lambda x: x[i], tree)


def make(cls, env_name, total=LOCKSTEP_TOTAL, fill=LOCKSTEP_FILL, record=None, **fields):
  env, params = rejax_env(env_name)
  algo = cls.create(
    env=env,
    env_params=params,
    total_timesteps=total,
    fill_buffer=fill,
    buffer_size=total,  # rejax's default holds 131,072 transitions; a run stores `total`
    eval_freq=1,
    skip_initial_evaluation=True,
    **fields,
  )
  # rejax's evaluation hook, called after every iteration: this iteration's record.
  return algo.replace(eval_callback=record or (lambda algo, ts, rng: ts.alpha_ts.record))


@functools.cache
def lockstep_runs(env_name: str):
  """rejax's `train`, vmapped over two runs from the same seed: rejax drives, then ours.

  Returns:
    `(algo, final train states [2], per-update records [2, N])`.
  """
  algo = make(LockstepSAC, env_name)
  ts = jax.jit(algo.init_state)(jax.random.key(SEED))
  both = jax.tree.map(lambda x: jnp.stack([x, x]), ts)
  both = both.replace(alpha_ts=both.alpha_ts.replace(ours_drives=jnp.array([False, True])))
  final, records = jax.jit(jax.vmap(lambda t: algo.train(train_state=t)))(both)
  records = jax.device_get(records)
  runs = [updates_only(member(records, i)) for i in range(2)]
  return algo, final, runs


@functools.cache
def recorded_run(env_name: str):
  """rejax's own training: per temperature update, its log-probs and its state after the step."""
  algo = make(RecordedSAC, env_name, REPLAY_TOTAL, REPLAY_FILL, record=lambda algo, ts, rng: ts.alpha_ts.trace())
  _, records = jax.jit(algo.train)(jax.random.key(SEED))
  return temperature_updates(jax.device_get(records))


def replayed(env_name: str, optimizer=None):
  """The recorded log-probs through entropy_jax's public update, from `EntropySAC`'s initial state."""
  records = recorded_run(env_name)
  algo = make(EntropySAC, env_name, REPLAY_TOTAL, REPLAY_FILL, alpha_optimizer=optimizer)
  if algo.discrete:
    update = lambda s, lp: ej.discrete_update(s, jnp.exp(lp), lp)[0]
  else:
    update = lambda s, lp: ej.continuous_update(s, lp)[0]
  return records, replay(algo.init_entropy_state(), records["stat"], update)


@pytest.mark.slow
@pytest.mark.parametrize("env_name", ENVS)
def test_every_update_matches_rejax(env_name):
  """rejax's real training; at every update the two steps agree within float32 rounding."""
  algo, final, runs = lockstep_runs(env_name)
  n = LOCKSTEP_TOTAL - LOCKSTEP_FILL
  batch, actions = algo.batch_size, (int(algo.action_dim) if algo.discrete else 1)
  for i, records in enumerate(runs):
    np.testing.assert_array_equal(records["n"], np.arange(1, n + 1))
    worst = check_lockstep(records, n_terms(algo.discrete, batch, actions), algo.learning_rate)
    assert worst["n"] == n
    driven = records["next_ours" if i else "next_client"]
    # Not vacuous: alpha moved (Adam moves log_alpha by at most ~lr per update).
    assert abs(float(driven[-1] - records["log_alpha"][0])) > 0.05
    # The driver's log_alpha is the one that trained the agent.
    pair = member(final.alpha_ts, i)
    assert np.array_equal(pair.params["log_alpha"], driven[-1])


@pytest.mark.slow
@pytest.mark.parametrize("env_name", ENVS)
def test_replay_of_rejax_training_matches_entropy_jax(env_name):
  """rejax's own temperature, >= 1,000 updates, replayed open loop: the whole state within a few ulp."""
  records, ours = replayed(env_name)
  assert records["count"].size >= 1_000
  np.testing.assert_array_equal(records["count"], np.arange(1, records["count"].size + 1))
  worst = check_replay(records, ours, REPLAY_ULPS[env_name])
  print(env_name, "replay, largest differences in ulp:", worst)
  assert abs(float(records["log_alpha"][-1])) > 0.05  # alpha travelled from 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dropped moments", "b2=0.99", "wrong sign"])
def test_replay_rejects_a_wrong_temperature(name):
  """A wrong Adam in entropy_jax's state fails the replay, on log_alpha alone."""
  algo = make(EntropySAC, "Pendulum-v1")
  wrong = mutations(algo.learning_rate, prefix=(optax.clip(algo.max_grad_norm),))[name]
  records, ours = replayed("Pendulum-v1", wrong)
  with pytest.raises(AssertionError, match="differs from the client's"):
    check_replay(records, ours, REPLAY_ULPS["Pendulum-v1"])
  assert np.max(ulps(records["log_alpha"], ours["log_alpha"])) > 1_000


@pytest.mark.slow
@pytest.mark.parametrize("env_name", ENVS)
def test_actor_and_critic_read_the_entropy_state_as_rejax_reads_its_own(env_name):
  """rejax's actor and critic steps: bit-identical outputs from either alpha state."""
  _, final, _ = lockstep_runs(env_name)
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


def test_create_adapts_a_gymnax_1_environment_to_rejax_s_five_values():
  """`EntropySAC.create(env=name)` wraps gymnax 1.0's six-value step; `done = terminated | truncated`."""
  gymnax = pytest.importorskip("gymnax")
  algo = EntropySAC.create(env="CartPole-v1")
  assert isinstance(algo.env, FiveTupleStep)
  env, params = gymnax.make("CartPole-v1")
  params = params.replace(max_steps_in_episode=20)  # truncation within the run

  def step(carry, key):
    state, n_done = carry
    six = env.step(key, state, jax.random.bernoulli(key).astype(jnp.int32), params)
    five = FiveTupleStep(env).step(key, state, jax.random.bernoulli(key).astype(jnp.int32), params)
    assert len(six) == 6 and len(five) == 5
    same = jnp.all(jnp.array([jnp.all(a == b) for a, b in zip(jax.tree.leaves(six[:3]), jax.tree.leaves(five[:3]))]))
    done_ok = five[3] == (six[3] | six[4])
    return (six[1], n_done + six[3] + six[4]), same & done_ok

  _, state = env.reset(jax.random.key(0), params)
  (_, n_done), ok = jax.lax.scan(step, (state, 0), jax.random.split(jax.random.key(1), 200))
  assert bool(jnp.all(ok)) and int(n_done) > 0
  env_wrapped, _ = rejax_env("Pendulum-v1")
  assert isinstance(env_wrapped, FiveTupleStep)


def test_stable_log_probs_change_only_what_underflows():
  """`stable_log_probs`: rejax's discrete actor and critic steps, `log_softmax` for `log(probs)`.

  With moderate logits the steps agree with rejax's within rounding; with a
  logit gap float32's softmax underflows, rejax's turn the networks NaN and
  the stable ones stay finite.
  """
  plain = make(EntropySAC, "CartPole-v1", entropy_target=ej.discrete_target(2))
  stable = plain.replace(stable_log_probs=True)
  ts = jax.jit(plain.init_state)(jax.random.key(SEED))
  obs = jax.random.normal(jax.random.key(2), (plain.batch_size, 4))
  mb = rejax.buffers.Minibatch(
    obs=obs,
    action=jnp.zeros(plain.batch_size, jnp.int32),
    reward=jnp.ones(plain.batch_size),
    next_obs=obs,
    done=jnp.zeros(plain.batch_size, bool),
  )

  def params_after(algo, ts):
    ts, _ = algo.update_actor(ts, mb)
    ts = algo.update_critic(ts, mb)
    return jax.tree.leaves((ts.actor_ts.params, ts.critic_ts.params))

  for a, b in zip(
    jax.jit(params_after, static_argnums=0)(plain, ts), jax.jit(params_after, static_argnums=0)(stable, ts)
  ):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
  # The actor's output layer scaled: logit gaps of thousands, probabilities of 0 in float32.
  big = jax.tree_util.tree_map_with_path(
    lambda path, x: x * 1e4 if "action_logits" in jax.tree_util.keystr(path) else x, ts.actor_ts.params
  )
  ts = ts.replace(actor_ts=ts.actor_ts.replace(params=big))
  logits = plain.actor.apply(big, obs, method="_action_dist").logits
  assert float(jnp.min(jax.nn.softmax(logits))) == 0.0
  assert not all(np.all(np.isfinite(x)) for x in jax.jit(params_after, static_argnums=0)(plain, ts))
  assert all(np.all(np.isfinite(x)) for x in jax.jit(params_after, static_argnums=0)(stable, ts))


@pytest.mark.slow
def test_lockstep_rejects_moments_that_are_not_stored_or_decay_wrongly():
  """The lockstep's state check on its own record, with entropy_jax's moments made wrong after the fact."""
  algo, _, runs = lockstep_runs("Pendulum-v1")
  records = runs[1]
  n = n_terms(False, algo.batch_size, 1)
  check_lockstep(records, n, algo.learning_rate)  # as recorded
  g = records["g_ours"].astype(np.float64)
  wrong = {
    "dropped moments": {"mu_ours": records["mu"], "nu_ours": records["nu"]},
    "b2=0.99": {"nu_ours": (0.01 * g * g + 0.99 * records["nu"]).astype(np.float32)},
  }
  for fields in wrong.values():
    with pytest.raises(AssertionError, match=r"Adam's (mu|nu) differs beyond float32 rounding"):
      check_lockstep({**records, **fields}, n, algo.learning_rate)
