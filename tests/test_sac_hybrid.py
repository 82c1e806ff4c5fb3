"""The hybrid-action SAC example: a continuous torque beside a discrete gear, a temperature per part.

Its structure and default targets, one update against a NumPy reference
(the soft value with the gear's exact expectation, each part's entropy, and
each temperature's first Adam step in the direction of its own entropy gap),
and a short Pendulum run that must swing up.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

for _module in ("gymnax", "flashbax", "distrax"):  # The examples extra.
  pytest.importorskip(_module)

import entropy_jax as ej  # noqa: E402
from examples import sac_hybrid as sh  # noqa: E402

# The learning run: two members. The study's 8 seeds score -133 to -166 over their last 10 episodes at 11,000 steps
# (the random warm-up policy: -1,055 to -1,397).
STEPS = 11_000
RETURN_BAR = -400.0
SMALL = sh.Config(hidden=(8,), batch_size=5, buffer_size=16, learning_starts=8)


def _batch(sac, rng, b=5):
  return sh.Transition(
    obs=jnp.asarray(rng.normal(size=(b, sac.obs_dim)), jnp.float32),
    u=jnp.asarray(rng.uniform(-1, 1, size=(b, 1)), jnp.float32),
    gear=jnp.asarray([0, 1, 1, 0, 1][:b], jnp.int32),
    reward=jnp.asarray(rng.normal(size=b), jnp.float32),
    next_obs=jnp.asarray(rng.normal(size=(b, sac.obs_dim)), jnp.float32),
    terminated=jnp.asarray([0, 0, 1, 0, 0][:b], jnp.float32),
  )


def test_structure_targets_and_torque():
  sac = sh.SAC(SMALL)
  assert sac.structure == (ej.Continuous(1), ej.Categorical(len(sh.GEARS)))
  torque_state, gear_state = sac.init_entropy()  # entropy_jax: one state per part
  assert float(torque_state.target) == -1.0
  assert float(gear_state.target) == pytest.approx(0.6 * math.log(2))
  shared = sh.SAC(SMALL._replace(shared=True)).init_entropy()
  assert float(shared.target) == pytest.approx(-1.0 + 0.6 * math.log(2))
  np.testing.assert_allclose(sac.torque(jnp.array([[0.5], [-1.0]]), jnp.array([0, 1])), [[0.25], [-2.0]])


@pytest.mark.parametrize("shared", [False, True], ids=["per_part", "shared"])
def test_update_matches_a_numpy_reference(shared):
  sac = sh.SAC(SMALL._replace(shared=shared))
  entropy = sac.init_entropy()
  if not shared:  # different alphas per part, so that the test sees which one each term uses
    entropy = (entropy[0].replace(log_alpha=jnp.log(jnp.float32(0.3))), entropy[1])
  alpha_u, alpha_g = (0.5, 0.5) if shared else (0.3, 0.5)
  agent = jax.jit(sac.init)(jax.random.key(3), entropy)
  agent = agent.replace(target_critic=jax.tree.map(lambda p: p * 1.5 + 0.1, agent.target_critic))
  batch, key = _batch(sac, np.random.default_rng(0)), jax.random.key(7)
  new, metrics = jax.jit(sac.update)(agent, batch, key)

  k_next, k_pi = jax.random.split(key)  # the update's own draws, to replay the sampled torques
  pi_u, pi_g = sac.actor.apply(agent.actor.params, batch.next_obs)
  next_u, next_log_u = (np.asarray(x, np.float64) for x in pi_u.sample_and_log_prob(seed=k_next))
  p_next = np.asarray(pi_g.probs, np.float64)
  q_next = np.asarray(sac.critic.apply(agent.target_critic, batch.next_obs, jnp.float32(next_u)), np.float64).min(0)
  v_next = np.sum(p_next * (q_next - alpha_g * np.log(p_next)), -1) - alpha_u * next_log_u
  y = np.asarray(batch.reward) + 0.99 * (1 - np.asarray(batch.terminated)) * v_next
  q = np.asarray(sac.critic.apply(agent.critic.params, batch.obs, batch.u), np.float64)
  q_a = q[:, np.arange(5), np.asarray(batch.gear)]
  np.testing.assert_allclose(metrics["critic_loss"], 0.5 * np.sum(np.mean((q_a - y) ** 2, -1)), rtol=1e-4)

  pi_u, pi_g = sac.actor.apply(agent.actor.params, batch.obs)
  _, log_u = pi_u.sample_and_log_prob(seed=k_pi)
  p = np.asarray(pi_g.probs, np.float64)
  h = np.array([-np.mean(log_u), np.mean(-np.sum(p * np.log(p), -1))])  # (torque, gear)
  np.testing.assert_allclose(metrics["entropy"], h, rtol=1e-5)
  # entropy_jax: Adam's first step moves each log_alpha by -lr * sign of its own gap (shared: the summed gap).
  lr, targets = sac.cfg.alpha_lr, np.array([-1.0, 0.6 * math.log(2)])
  if shared:
    np.testing.assert_allclose(new.entropy.log_alpha - math.log(0.5), -lr * np.sign(h.sum() - targets.sum()), atol=1e-6)
  else:
    moved = [float(n.log_alpha - o.log_alpha) for n, o in zip(new.entropy, agent.entropy)]
    np.testing.assert_allclose(moved, -lr * np.sign(h - targets), atol=1e-6)


@pytest.mark.slow
def test_pendulum_swings_up_with_a_temperature_per_part():
  sac = sh.SAC()
  entropy = jax.tree.map(lambda x: jnp.stack([x] * 2), sac.init_entropy())
  population = jax.jit(jax.vmap(sac.init))(jax.random.split(jax.random.key(0), 2), entropy)
  population, history = sh.train(sac, population, STEPS, progress=False)
  returns, _ = jax.jit(jax.vmap(lambda a, k: sh.evaluate(sac, a, k, 4)))(
    population, jax.random.split(jax.random.key(1), 2)
  )
  # Row 0 is the uniform-random warm-up policy's return.
  assert np.all(history["return"][0] < -900), history["return"][0]
  assert np.all(history["return"][-1] > RETURN_BAR), history["return"][-1]
  assert np.all(np.asarray(returns).mean(1) > RETURN_BAR), returns
  # Each part's entropy ends near its own target: -1 for the torque, 0.6 log 2 for the gear.
  np.testing.assert_allclose(history["entropy"][-1], np.broadcast_to([-1.0, 0.6 * math.log(2)], (2, 2)), atol=0.15)
