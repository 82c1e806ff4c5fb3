"""A tiny version of the continuous SAC example, asserting learning signals.

One short population run (two Pendulum agents, fixed seed) is shared by the
learning tests: its deterministic policy must beat the uniform-random policy
by far, and each member's alpha must move the way its entropy gap says (down
for a reachable low target, up for a target above the policy's entropy). A
sign error, a frozen alpha or a broken fused update fails these.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

for _module in ("gymnax", "flashbax", "distrax"):  # The examples extra.
  pytest.importorskip(_module)

from examples import sac_continuous  # noqa: E402
from examples.sac_continuous import SAC, Config, Transition, evaluate, train  # noqa: E402

LOW_TARGET, HIGH_TARGET = -1.0, 0.6  # max entropy of a tanh-squashed 1-D action: log 2 = 0.69
STEPS = 3_500  # per member: 1,000 random warm-up steps + 2,500 SAC steps


@pytest.fixture(scope="module")
def sac():
  return SAC(Config())


@pytest.fixture(scope="module")
def trained(sac):
  population = sac.init_population(jax.random.key(0), [LOW_TARGET, HIGH_TARGET], [1e-3, 1e-3])
  population, history = train(sac, population, STEPS, chunk=500, progress=False)
  returns = jax.jit(jax.vmap(lambda a, k: evaluate(sac, a, k, episodes=4)))(
    population, jax.random.split(jax.random.key(1), 2)
  )
  return population, history, np.asarray(returns)


@pytest.mark.slow
def test_returns_improve_far_beyond_random_policy(trained):
  _, history, returns = trained
  # The first history row is after 1,000 uniform-random steps: 5 random episodes each.
  random_return = history["return"][0]
  assert np.all(random_return < -900), random_return
  # The member with the usual target (-action_dim) has learned to swing up and hold.
  learned = returns[0].mean()
  assert learned > -400, returns
  assert learned > random_return[0] + 600, (returns, random_return)


@pytest.mark.slow
def test_alpha_follows_the_entropy_gap(trained):
  _, history, _ = trained
  alpha, entropy, target = history["alpha"], history["entropy"], history["target"]
  assert alpha[0, 0] == pytest.approx(1.0) and alpha[0, 1] == pytest.approx(1.0)
  # Each member trained against its own target throughout.
  np.testing.assert_array_equal(target, np.broadcast_to(np.float32([LOW_TARGET, HIGH_TARGET]), target.shape))
  # Low target: entropy starts above it, so alpha falls, and the policy's
  # entropy comes down to within 0.3 nats of the target.
  assert np.all(np.diff(alpha[:, 0]) < 0), alpha[:, 0]
  assert alpha[-1, 0] < 0.5
  assert abs(entropy[-1, 0] - LOW_TARGET) < 0.3, entropy[:, 0]
  # High target: entropy stays below it, so alpha rises at every chunk.
  assert np.all(entropy[1:, 1] < HIGH_TARGET), entropy[:, 1]
  assert np.all(np.diff(alpha[:, 1]) > 0), alpha[:, 1]
  assert alpha[-1, 1] > 2.0
  # And the temperature reached the policy: the high-target policy is more random.
  assert np.all(entropy[-2:, 1] > entropy[-2:, 0] + 1.0), entropy
  assert np.all(np.asarray(trained[0].entropy.skipped) == 0)


def test_one_fused_update_moves_log_alpha_by_adam_first_step(sac):
  """First Adam step: log_alpha moves by exactly -lr * sign(H - target)."""
  lr = 0.01
  pop = sac.init_population(jax.random.key(3), [-1.0, 5.0], [lr, lr])
  k_obs, k_act, k_next = jax.random.split(jax.random.key(4), 3)
  shape = (2, sac.cfg.batch_size)
  batch = Transition(
    obs=jax.random.normal(k_obs, (*shape, sac.obs_dim)),
    action=jax.random.uniform(k_act, (*shape, 1), minval=-1, maxval=1),
    reward=-jnp.ones(shape),
    next_obs=jax.random.normal(k_next, (*shape, sac.obs_dim)),
    terminated=jnp.zeros(shape),
  )
  new, metrics = jax.jit(jax.vmap(sac.update))(pop, batch)
  gap = np.asarray(metrics["entropy"]) - np.array([-1.0, 5.0])
  assert gap[0] > 0 > gap[1]  # a fresh policy's entropy lies between the two targets
  step = np.asarray(new.entropy.log_alpha - pop.entropy.log_alpha)
  np.testing.assert_allclose(step, -lr * np.sign(gap), rtol=1e-4)
  np.testing.assert_array_equal(new.entropy.step, [1, 1])
  np.testing.assert_allclose(metrics["alpha"], np.exp(np.asarray(new.entropy.log_alpha)), rtol=1e-6)
  # The critics and the actor moved as well (one fused update step).
  moved = jax.tree.map(lambda a, b: np.any(np.asarray(a) != np.asarray(b)), new.actor.params, pop.actor.params)
  assert all(jax.tree.leaves(moved))


@pytest.mark.slow
def test_summary_counts_alpha_moves(trained):
  _, history, _ = trained
  updates_per_chunk = 500
  rises, falls = history["alpha_rises"][1:], history["alpha_falls"][1:]
  assert np.all(rises + falls <= updates_per_chunk)
  # Low target: alpha mostly fell; high target: it mostly rose.
  assert falls[:, 0].sum() > 5 * rises[:, 0].sum()
  assert rises[:, 1].sum() > 5 * falls[:, 1].sum()
  # The chunk's peak is at least where alpha started and ended the chunk.
  peak = history["alpha_peak"][1:]
  assert np.all(peak >= np.maximum(history["alpha"][:-1], history["alpha"][1:]) * (1 - 1e-6))


def test_episode_stats_match_numpy():
  rewards = np.arange(1.0, 26.0, dtype=np.float32)
  dones = np.zeros(25, bool)
  dones[[2, 5, 9, 12, 14, 17, 19, 22, 23, 24]] = True
  stats = sac_continuous.EpisodeStats(jnp.zeros(1), jnp.zeros(4), jnp.zeros((), jnp.int32))  # one environment
  assert np.isnan(stats.mean_recent())
  record = jax.jit(lambda s, r, d: s.record(r, d))
  for r, d in zip(rewards, dones):
    stats = record(stats, r[None], d[None])
  ends = np.flatnonzero(dones)
  returns = [rewards[a + 1 : b + 1].sum() for a, b in zip(np.r_[-1, ends[:-1]], ends)]
  assert int(stats.count) == len(returns)
  assert float(stats.mean_recent()) == pytest.approx(np.mean(returns[-4:]))


@pytest.mark.parametrize("steps, chunk", [(999, 500), (2_100, 300)])
def test_train_rejects_budgets_off_the_chunk_grid(sac, steps, chunk):
  with pytest.raises(ValueError, match="train: total_steps - learning_starts"):
    train(sac, None, steps, chunk=chunk)


def test_each_member_steps_num_envs_environments_and_stores_each_transition():
  cfg = Config(hidden=(8,), num_envs=2, batch_size=4, buffer_size=64, learning_starts=8)
  sac = SAC(cfg)
  population = jax.jit(jax.vmap(sac.warmup))(sac.init_population(jax.random.key(0), [-1.0], [3e-4]))
  assert population.obs.shape == (1, 2, sac.obs_dim) and int(population.steps[0]) == 8
  stored = population.buffer.experience
  # 4 warm-up steps of 2 environments: 8 items, in step order and env order within a step.
  assert int(population.buffer.current_index[0]) == 8
  obs, next_obs = np.asarray(stored.obs[0, 0, :8]), np.asarray(stored.next_obs[0, 0, :8])  # [member, 1, items]
  # Pendulum never ends in 4 steps: each item's next observation is the same env's observation 2 items later.
  np.testing.assert_array_equal(obs[2:], next_obs[:-2])
  assert not np.array_equal(obs[0::2], obs[1::2])  # two environments, two trajectories
  np.testing.assert_array_equal(np.asarray(population.obs[0]), next_obs[-2:])
  population, _ = jax.jit(jax.vmap(lambda a: sac.train_chunk(a, 4)))(population)
  assert int(population.steps[0]) == 12 and int(population.entropy.step[0]) == 2
