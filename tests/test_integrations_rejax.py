"""entropy_jax in rejax's SAC (rejax 0.1.3): step for step against rejax's own temperature.

rejax's real training (`SAC.train`: its collection, replay buffer, networks,
losses and loops) runs on Pendulum-v1 (continuous) and CartPole-v1 (discrete)
twice with the same seed: once with rejax's temperature driving, once with
entropy_jax's. At every update both temperature steps are taken from the same
inputs and compared within float32 rounding (see `tests/_integrations.py`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import rejax
from _integrations import (
  Lockstep,
  capture,
  check_lockstep,
  empty_record,
  strong,
  updates_only,
)
from flax.core.frozen_dict import FrozenDict
from rejax.algos.algorithm import register_init

from examples.integrations.rejax_sac import (
  EntropySAC,
  RejaxEntropyState,
  as_rejax_state,
  rejax_env,
)

TOTAL = 2_000  # env steps (num_envs=1), one update each after FILL
FILL = 500
SEED = 0
ENVS = ("Pendulum-v1", "CartPole-v1")


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

  @register_init
  def initialize_network_params(self, rng):
    values = rejax.SAC.initialize_network_params(self, rng)  # rejax's own, alpha included
    client = values["alpha_ts"]
    client = client.replace(params=FrozenDict({"log_alpha": strong(client.params["log_alpha"])}))
    values["alpha_ts"] = Lockstep(
      client=client, ours=self.init_entropy_state(), record=empty_record(), ours_drives=jnp.zeros((), bool)
    )
    return values

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


def record(algo, ts, rng):
  """rejax's evaluation hook, called after every iteration: this iteration's record."""
  del algo, rng
  return ts.alpha_ts.record


def member(tree, i: int):
  """Run `i` of a tree of runs stacked on the leading axis."""
  return jax.tree.map(lambda x: x[i], tree)


def make(cls, env_name, **fields):
  env, params = rejax_env(env_name)
  algo = cls.create(
    env=env,
    env_params=params,
    total_timesteps=TOTAL,
    fill_buffer=FILL,
    eval_freq=1,
    skip_initial_evaluation=True,
    **fields,
  )
  return algo.replace(eval_callback=record)


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


@pytest.mark.slow
@pytest.mark.parametrize("env_name", ENVS)
def test_every_update_matches_rejax(env_name):
  """rejax's real training; at every update the two steps agree within float32 rounding."""
  algo, final, runs = lockstep_runs(env_name)
  n = TOTAL - FILL
  batch, actions = algo.batch_size, (int(algo.action_dim) if algo.discrete else 1)
  for i, records in enumerate(runs):
    np.testing.assert_array_equal(records["n"], np.arange(1, n + 1))
    worst = check_lockstep(records, n_terms(algo.discrete, batch, actions), algo.learning_rate)
    assert worst["n"] == n
    driven = records["next_ours" if i else "next_client"]
    # Not vacuous: alpha travelled far from its start.
    assert abs(float(driven[-1] - records["log_alpha"][0])) > 0.2
    # The driver's log_alpha is the one that trained the agent.
    pair = member(final.alpha_ts, i)
    assert np.array_equal(pair.params["log_alpha"], driven[-1])


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
