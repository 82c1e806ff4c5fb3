"""A tiny run of the discrete SAC example, and its update against NumPy.

One small population (fixed seed, a few thousand CartPole steps) is trained
once per module; the tests then assert learning signals that a broken entropy
update or a broken agent would fail. The update step is checked against a
NumPy reference, and the MinAtar set-up (flattened grids stored as uint8)
against the environment's own observations.
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
from examples import sac_discrete as sd  # noqa: E402

STEPS = 5_000
CHUNK = 500
# Unbounded: the paper target shows its climb. Batch 128 (the example uses 256) keeps the test fast.
CFG = sd.Config(buffer_size=10_000, max_alpha=None, batch_size=128)
UPDATES = (STEPS - CFG.learning_starts) // CFG.num_envs
# Members: a low ratio 0.15 (two seeds), Velora's negative target, the paper's 0.98 log(A).
NAMES = ["low", "low", "velora", "paper"]


@pytest.fixture(scope="module")
def run():
  sac = sd.SAC(CFG)
  paper = ej.discrete_target(2, ej.PAPER_DISCRETE_TARGET_RATIO)
  targets = np.array([ej.discrete_target(2, 0.15)] * 2 + [ej.velora_discrete_target(2), paper], np.float32)
  lrs = np.full(4, 1e-3, np.float32)
  population = sac.init_population(jax.random.key(0), targets, lrs)
  population, history = sd.train(sac, population, STEPS, chunk=CHUNK, progress=False)
  return sac, population, history


def _member(history, name):
  return [i for i, n in enumerate(NAMES) if n == name]


@pytest.mark.slow
def test_returns_beat_a_random_policy_by_far(run):
  _, _, history = run
  # Row 0 is after the warm-up of uniform random actions: its mean return over
  # the last 10 episodes is the random policy's (~22 on CartPole).
  baseline = float(np.mean(history["return"][0]))
  assert 10.0 < baseline < 35.0, history["return"][0]
  low = history["return"][-1, _member(history, "low")]
  assert np.all(low > 5 * baseline), (low, baseline)


@pytest.mark.slow
def test_velora_target_lowers_alpha_at_every_single_update(run):
  _, _, history = run
  (i,) = _member(history, "velora")
  assert history["alpha_rises"][:, i].sum() == 0
  assert history["alpha_falls"][:, i].sum() == UPDATES
  # Whatever the policy did (its entropy moved a lot), alpha only fell.
  entropy = history["entropy"][1:, i]
  assert entropy.max() - entropy.min() > 0.1, entropy
  assert np.all(np.diff(history["alpha"][:, i]) < 0)


@pytest.mark.slow
def test_alpha_moves_as_the_entropy_gap_says(run):
  _, _, history = run
  per_chunk = CHUNK // CFG.num_envs
  rose = history["alpha_rises"][1:] == per_chunk  # alpha rose at every update
  fell = history["alpha_falls"][1:] == per_chunk  # ... fell at every update
  gap = history["entropy"][1:] - history["target"][1:]  # chunk-mean H - target
  assert rose.sum() >= 5 and fell.sum() >= 5, (rose, fell)
  assert np.all(gap[rose] < 0), gap[rose]
  assert np.all(gap[fell] > 0), gap[fell]
  # The paper's target (0.98 log 2) sits above what a learning policy keeps:
  # alpha climbs at every update from the second chunk on, without a bound.
  (p,) = _member(history, "paper")
  assert np.all(rose[1:, p]), history["alpha_rises"][:, p]
  assert history["alpha"][-1, p] > 5 * CFG.initial_alpha, history["alpha"][:, p]
  # The low ratio (0.15 log 2) lets the policy commit: entropy ends well below log 2,
  # and alpha stays within a factor 3 of where it started.
  low = _member(history, "low")
  assert np.all(history["entropy"][-1, low] < 0.5 * math.log(2)), history["entropy"][-1]
  ratio = history["alpha"][:, low] / CFG.initial_alpha
  assert np.all((ratio > 1 / 3) & (ratio < 3)), ratio


def test_update_losses_match_a_numpy_reference():
  """Critic target, critic and actor losses, with the exact sum over actions."""
  sac = sd.SAC(sd.Config(hidden=(8,), batch_size=5, num_envs=1, buffer_size=8))
  agent = jax.jit(sac.init)(jax.random.key(3), ej.init_entropy_state(0.3, initial_alpha=0.7))
  rng = np.random.default_rng(0)
  batch = sd.Transition(
    obs=jnp.asarray(rng.normal(size=(5, 4)), jnp.float32),
    action=jnp.asarray([0, 1, 1, 0, 1], jnp.int32),
    reward=jnp.ones(5, jnp.float32),
    next_obs=jnp.asarray(rng.normal(size=(5, 4)), jnp.float32),
    terminated=jnp.asarray([0, 0, 1, 0, 0], jnp.float32),
  )
  # A different target network, so that the test sees which one is used.
  agent = agent.replace(target_critic=jax.tree.map(lambda p: p * 1.5 + 0.1, agent.target_critic))
  new, metrics = jax.jit(sac.update)(agent, batch)

  alpha = 0.7
  logits = np.asarray(sac.actor.apply(agent.actor.params, batch.obs).logits, np.float64)
  next_logits = np.asarray(sac.actor.apply(agent.actor.params, batch.next_obs).logits, np.float64)

  def softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

  q = np.asarray(sac.critic.apply(agent.critic.params, batch.obs), np.float64)
  q_next_target = np.asarray(sac.critic.apply(agent.target_critic, batch.next_obs), np.float64)
  p_next = softmax(next_logits)
  v_next = np.sum(p_next * (q_next_target.min(0) - alpha * np.log(p_next)), -1)
  y = 1.0 + 0.99 * (1 - np.asarray(batch.terminated)) * v_next
  q_a = q[:, np.arange(5), np.asarray(batch.action)]
  critic_loss = 0.5 * np.sum(np.mean((q_a - y) ** 2, -1))
  np.testing.assert_allclose(metrics["critic_loss"], critic_loss, rtol=1e-5)

  q_new = np.asarray(sac.critic.apply(new.critic.params, batch.obs), np.float64).min(0)
  p = softmax(logits)
  actor_loss = np.mean(np.sum(p * (alpha * np.log(p) - q_new), -1))
  np.testing.assert_allclose(metrics["actor_loss"], actor_loss, rtol=1e-5, atol=1e-6)
  # The temperature saw the exact entropy of the pre-update policy.
  np.testing.assert_allclose(metrics["entropy"], np.mean(-np.sum(p * np.log(p), -1)), rtol=1e-5)
  gap = np.mean(-np.sum(p * np.log(p), -1)) - 0.3
  assert (float(new.entropy.log_alpha) < math.log(0.7)) == (gap > 0)


def test_minatar_grids_are_stored_flat_as_uint8():
  cfg = sd.Config(
    env_name="Breakout-MinAtar",
    hidden=(8,),
    num_envs=2,
    batch_size=4,
    buffer_size=64,
    learning_starts=8,
    obs_dtype="uint8",
  )
  sac = sd.SAC(cfg)
  assert (sac.num_actions, sac.obs_dim) == (3, 400)
  agent = sac.init_population(jax.random.key(0), [0.1], [3e-4])
  agent = jax.jit(jax.vmap(sac.warmup))(agent)
  stored = agent.buffer.experience
  assert stored.obs.dtype == jnp.uint8 and stored.obs.shape[-1] == 400
  filled = np.asarray(stored.obs[0, : cfg.learning_starts])
  assert set(np.unique(filled)) <= {0, 1} and filled.any()
  # The member's current observations are the environments' [10, 10, 4] grids, flattened.
  obs = jax.vmap(sac.env.get_obs)(jax.tree.map(lambda x: x[0], agent.env_state))
  np.testing.assert_array_equal(agent.obs[0], np.asarray(obs).reshape(2, -1))
  assert int(agent.steps[0]) == cfg.learning_starts


def test_episode_stats_file_every_env_into_one_ring():
  record = jax.jit(lambda s, r, d: s.record(r, d))
  stats = sd.EpisodeStats(jnp.array([5.0, 1.0]), jnp.zeros(3), jnp.zeros((), jnp.int32))
  # Both envs finish in the same step: 5+1 and 1+2 are filed in env order.
  stats = record(stats, jnp.array([1.0, 2.0]), jnp.array([True, True]))
  np.testing.assert_allclose(stats.recent, [6.0, 3.0, 0.0])
  np.testing.assert_allclose(stats.current, [0.0, 0.0])
  assert int(stats.count) == 2
  stats = record(stats, jnp.array([4.0, 1.0]), jnp.array([False, True]))
  stats = record(stats, jnp.array([1.0, 7.0]), jnp.array([True, True]))
  # Ring of 3: [6, 3] + 1 + 5 + 7 -> slots hold [5, 7, 1] after wrapping.
  np.testing.assert_allclose(stats.recent, [5.0, 7.0, 1.0])
  assert int(stats.count) == 5
  np.testing.assert_allclose(stats.mean_recent(), (5.0 + 7.0 + 1.0) / 3)


def test_evaluate_stops_counting_at_the_episode_end():
  sac = sd.SAC(sd.Config(hidden=(8,), num_envs=1, batch_size=4, buffer_size=8))
  agent = jax.jit(sac.init)(jax.random.key(0), ej.init_entropy_state(0.3))
  # An actor that always pushes left: zero weights, logits [10, -10].
  params = jax.tree.map(jnp.zeros_like, agent.actor.params)
  params["params"]["MLP_0"]["Dense_1"]["bias"] = jnp.array([10.0, -10.0])
  agent = agent.replace(actor=agent.actor.replace(params=params))
  returns = jax.jit(lambda k: sd.evaluate(sac, agent, k, 3))(jax.random.key(0))

  def reference(key):
    k_reset, k_run = jax.random.split(key)
    _, state = sac.env.reset(k_reset, sac.env_params)
    total = 0.0
    for k in jax.random.split(k_run, sac.env_params.max_steps_in_episode):
      _, k_env = jax.random.split(k)
      _obs, state, reward, terminated, truncated, _ = sac.env.step(k_env, state, 0, sac.env_params)
      total += float(reward)
      if terminated or truncated:
        return total
    return total

  expected = [reference(k) for k in jax.random.split(jax.random.key(0), 3)]
  np.testing.assert_allclose(returns, expected)
  # Always pushing left ends a CartPole episode after a few dozen steps, with reward 1 per step.
  assert all(5 <= r < 100 for r in expected), expected


@pytest.mark.parametrize("steps, chunk", [(999, 500), (1_100, 25), (2_000, 300)])
def test_train_rejects_budgets_off_the_chunk_grid(steps, chunk):
  with pytest.raises(ValueError, match="train: total_steps - learning_starts"):
    sd.train(sd.SAC(), None, steps, chunk=chunk)
