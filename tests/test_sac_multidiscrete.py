"""The MultiDiscrete SAC example: its pieces, its update against NumPy, and a short learning run.

The update is checked against a NumPy reference of the branching critic's
soft value, critic loss and actor loss, with an alpha per branch; the first
Adam step of each branch's temperature must move by `-lr * sign(H_k - target_k)`,
and, with one shared temperature, by the sign of the summed gap. A short
Swimmer-misc run must leave the random policy far behind.
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
from examples import sac_multidiscrete as sm  # noqa: E402

# The learning run: two Swimmer-misc members. Measured with this seed: the random warm-up policy's returns 67 and 48,
# the greedy policy's 266 and 364 after 42,000 steps; the study's 10 seeds end at 339 +- 82 after 50,000.
STEPS = 42_000
RANDOM_MAX = 100.0
GREEDY_BAR = 150.0
SMALL = sm.Config(hidden=(8,), bins=5, batch_size=6, num_envs=2, buffer_size=16, learning_starts=8)


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _batch(sac, rng, b=6):
  return sm.Transition(
    obs=jnp.asarray(rng.normal(size=(b, sac.obs_dim)), jnp.float32),
    action=jnp.asarray(rng.integers(0, sac.nvec, size=(b, sac.branches)), jnp.int32),
    reward=jnp.asarray(rng.uniform(size=b), jnp.float32),
    next_obs=jnp.asarray(rng.normal(size=(b, sac.obs_dim)), jnp.float32),
    terminated=jnp.asarray([0, 0, 1, 0, 0, 0][:b], jnp.float32),
  )


def test_structure_shapes_and_bins():
  sac = sm.SAC(SMALL)
  assert sac.branches == 2 and sac.structure == ej.MultiCategorical((5, 5))
  np.testing.assert_allclose(sac.bins_to_action(jnp.array([[0, 4], [2, 1]])), [[-1.0, 1.0], [0.0, -0.5]])
  agent = jax.jit(sac.init)(jax.random.key(0), sac.init_entropy())
  obs = jnp.zeros((3, sac.obs_dim))
  assert sac.actor.apply(agent.actor.params, obs).logits.shape == (3, 2, 5)
  assert sac.critic.apply(agent.critic.params, obs).shape == (2, 3, 2, 5)
  # entropy_jax: one stacked state, a temperature per branch with target 0.6 log 5 each.
  np.testing.assert_allclose(agent.entropy.target, [0.6 * math.log(5)] * 2, rtol=1e-6)
  shared = sm.SAC(SMALL._replace(shared=True)).init_entropy()
  assert shared.log_alpha.shape == () and shared.target == pytest.approx(2 * 0.6 * math.log(5))
  # Warm-up fills the buffer with one [K] bin vector per environment step.
  agent = jax.jit(sac.warmup)(agent)
  stored = np.asarray(agent.buffer.experience.action[0, : SMALL.learning_starts])
  assert stored.shape == (8, 2) and stored.min() >= 0 and stored.max() < 5
  assert int(agent.steps) == SMALL.learning_starts


def _log(p):
  """`log p`, 0 where `p` is 0 (a padded bin), so that `p log p` is 0 there."""
  return np.log(np.where(p > 0, p, 1.0))


@pytest.mark.parametrize("shared", [False, True], ids=["per_branch", "shared"])
def test_update_matches_a_numpy_reference(shared):
  """Ragged branches (5 and 3 bins): the padded bin is masked in the policy, the critic and the temperature."""
  sac = sm.SAC(SMALL._replace(shared=shared, bins=(5, 3)))
  alphas = np.array([0.4, 0.4]) if shared else np.array([0.3, 0.7])  # what each branch's actor term uses
  log_alpha = jnp.log(jnp.float32(0.4) if shared else jnp.float32(alphas))
  agent = jax.jit(sac.init)(jax.random.key(3), sac.init_entropy().replace(log_alpha=log_alpha))
  agent = agent.replace(target_critic=jax.tree.map(lambda p: p * 1.5 + 0.1, agent.target_critic))
  batch = _batch(sac, np.random.default_rng(0))
  new, metrics = jax.jit(sac.update)(agent, batch)

  a = alphas[None, :, None]  # [1, K, 1]
  p_next = _softmax(np.asarray(sac.actor.apply(agent.actor.params, batch.next_obs).logits, np.float64))
  q_next = np.asarray(sac.critic.apply(agent.target_critic, batch.next_obs), np.float64).min(0)  # [B, K, N]
  v_next = np.sum(p_next * (q_next - a * _log(p_next)), axis=(1, 2))
  y = np.asarray(batch.reward) + 0.99 * (1 - np.asarray(batch.terminated)) * v_next
  q = np.asarray(sac.critic.apply(agent.critic.params, batch.obs), np.float64)  # [2, B, K, N]
  act = np.asarray(batch.action)
  q_a = np.stack([q[:, np.arange(6), k, act[:, k]] for k in range(2)], -1).sum(-1)  # Q = sum_k Q_k(s, a_k)
  np.testing.assert_allclose(metrics["critic_loss"], 0.5 * np.sum(np.mean((q_a - y) ** 2, -1)), rtol=1e-5)

  q_new = np.asarray(sac.critic.apply(new.critic.params, batch.obs), np.float64).min(0)
  p = _softmax(np.asarray(sac.actor.apply(agent.actor.params, batch.obs).logits, np.float64))
  actor_loss = np.mean(np.sum(p * (a * _log(p) - q_new), axis=(1, 2)))
  np.testing.assert_allclose(metrics["actor_loss"], actor_loss, rtol=1e-5, atol=1e-6)
  h = np.mean(-np.sum(p * _log(p), -1), 0)  # [K], the exact entropy of each branch
  # A ragged branch's padded bins have probability 0, and its actions stay within its own bins.
  assert np.all(p[:, ~sac.mask] == 0) and np.all(np.asarray(batch.action) < sac.nvec)
  np.testing.assert_allclose(metrics["branch_entropy"], h, rtol=1e-5)
  # entropy_jax: Adam's first step moves log_alpha by -lr * sign(gap), per branch or for the summed gap.
  gap = h.sum() - np.asarray(agent.entropy.target) if shared else h - np.asarray(agent.entropy.target)
  np.testing.assert_allclose(new.entropy.log_alpha - log_alpha, -sac.cfg.alpha_lr * np.sign(gap), atol=1e-6)
  # The temperature loss `log_alpha * (H - target)` (Christodoulou 2019, eq. 11), summed over the branches.
  np.testing.assert_allclose(metrics["alpha_loss"], np.sum(np.asarray(log_alpha, np.float64) * gap), rtol=1e-5)


@pytest.mark.parametrize("steps, chunk", [(1_999, 1_000), (3_000, 1_001)])
def test_train_rejects_budgets_off_the_chunk_grid(steps, chunk):
  with pytest.raises(ValueError, match="train: total_steps - learning_starts"):
    sm.train(sm.SAC(), None, steps, chunk=chunk)


@pytest.mark.slow
def test_swimmer_learns_far_beyond_the_random_policy():
  sac = sm.SAC(sm.Config(env_name="Swimmer-misc"))
  entropy = jax.tree.map(lambda x: jnp.stack([x] * 2), sac.init_entropy())
  population = jax.jit(jax.vmap(sac.init))(jax.random.split(jax.random.key(0), 2), entropy)
  population, history = sm.train(sac, population, STEPS, progress=False)
  greedy = jax.jit(jax.vmap(lambda a, k: sm.evaluate(sac, a, k, 4)))(population, jax.random.split(jax.random.key(1), 2))
  # Row 0 is the uniform-random warm-up policy's return.
  assert np.all(history["return"][0] < RANDOM_MAX), history["return"][0]
  assert np.all(np.asarray(greedy).mean(1) > GREEDY_BAR), greedy
  # Each branch's entropy ends within 0.15 nats of its target 0.6 log 11.
  np.testing.assert_allclose(history["entropy"][-1], 0.6 * math.log(11), atol=0.15)
  assert np.all(np.asarray(population.entropy.skipped) == 0)
