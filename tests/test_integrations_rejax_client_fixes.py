"""The client-side fixes `entropy_jax.integrations.rejax` ships for rejax 0.1.3: the gymnax 1.0
step adapter (`FiveTupleStep`) and `stable_log_probs`."""

from __future__ import annotations

import pytest

rejax = pytest.importorskip("rejax")

import gymnax  # noqa: E402  (rejax's dependency)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import entropy_jax as ej  # noqa: E402
from entropy_jax.integrations.rejax import EntropySAC, FiveTupleStep, rejax_env  # noqa: E402

SEED = 0


def make(**fields):
  env, params = rejax_env("CartPole-v1")
  return EntropySAC.create(env=env, env_params=params, total_timesteps=700, fill_buffer=100, buffer_size=700, **fields)


def test_create_adapts_a_gymnax_1_environment_to_rejax_s_five_values():
  """`EntropySAC.create(env=name)` wraps gymnax 1.0's six-value step; `done = terminated | truncated`."""
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
  plain = make(entropy_target=ej.discrete_target(2))
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
