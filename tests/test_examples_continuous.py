"""Tiny versions of the continuous SAC examples, asserting learning signals.

One short population run (two Pendulum agents, fixed seed) is shared by the
learning tests: its deterministic policy must beat the uniform-random policy
by far, and each member's alpha must move the way its entropy gap says (down
for a reachable low target, up for a target above the policy's entropy). A
sign error, a frozen alpha or a broken fused update fails these. The PBT tests
check exploit/explore on hand-made scores, leaf by leaf.
"""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from examples import common  # noqa: E402
from examples import demo  # noqa: E402
from examples import pbt  # noqa: E402
from examples.sac_continuous import OWN_FIELDS, SAC, Config, train_population  # noqa: E402

LOW_TARGET, HIGH_TARGET = -1.0, 0.6   # max entropy of a tanh-squashed 1-D action: log 2 = 0.69
STEPS = 3_500                          # per member: 1,000 random warm-up steps + 2,500 SAC steps


@pytest.fixture(scope="module")
def sac():
  return SAC(Config())


@pytest.fixture(scope="module")
def trained(sac):
  population, history = train_population(
      sac, jax.random.key(0), [LOW_TARGET, HIGH_TARGET], [1e-3, 1e-3], STEPS, chunk=500,
      progress=False,
  )
  returns = jax.jit(jax.vmap(lambda a, k: sac.evaluate(a, k, episodes=4)))(
      population, jax.random.split(jax.random.key(1), 2)
  )
  return population, history, np.asarray(returns)


def test_returns_improve_far_beyond_random_policy(trained):
  _, history, returns = trained
  # The first history row is after 1,000 uniform-random steps: 5 random episodes each.
  random_return = history["return"][0]
  assert np.all(random_return < -900), random_return
  # The member with the usual target (-action_dim) has learned to swing up and hold.
  learned = returns[0].mean()
  assert learned > -400, returns
  assert learned > random_return[0] + 600, (returns, random_return)


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
  batch = common.Transition(
      obs=jax.random.normal(k_obs, shape + (sac.obs_dim,)),
      action=jax.random.uniform(k_act, shape + (1,), minval=-1, maxval=1),
      reward=-jnp.ones(shape), next_obs=jax.random.normal(k_next, shape + (sac.obs_dim,)),
      terminated=jnp.zeros(shape),
  )
  new, metrics = jax.jit(jax.vmap(sac.update))(pop, batch, jax.random.split(jax.random.key(5), 2))
  gap = np.asarray(metrics["entropy"]) - np.array([-1.0, 5.0])
  assert gap[0] > 0 > gap[1]  # a fresh policy's entropy lies between the two targets
  step = np.asarray(new.entropy.log_alpha - pop.entropy.log_alpha)
  np.testing.assert_allclose(step, -lr * np.sign(gap), rtol=1e-4)
  np.testing.assert_array_equal(new.entropy.step, [1, 1])
  np.testing.assert_allclose(metrics["alpha"], np.exp(np.asarray(new.entropy.log_alpha)), rtol=1e-6)
  # The critics and the actor moved as well (one fused update step).
  moved = jax.tree.map(lambda a, b: np.any(np.asarray(a) != np.asarray(b)), new.actor.params,
                       pop.actor.params)
  assert all(jax.tree.leaves(moved))


# ----------------------------------------------------------------------- PBT --

@pytest.fixture(scope="module")
def population(sac):
  """Four distinct members: own seeds, targets, alpha learning rates, log_alpha."""
  # Two calls of the 2-member initialiser already compiled for `trained`.
  halves = [sac.init_population(jax.random.key(7), [-2.0, -1.5], [1e-4, 3e-4]),
            sac.init_population(jax.random.key(8), [-1.0, -0.5], [1e-3, 3e-3])]
  pop = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), *halves)
  return pop.replace(entropy=pop.entropy.replace(log_alpha=jnp.array([0.1, 0.2, 0.3, 0.4])))


def _np(x):
  if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
    x = jax.random.key_data(x)
  return np.asarray(x)


def _member_leaves(tree, i):
  return [_np(x)[i] for x in jax.tree.leaves(tree)]


def test_pbt_exploit_copies_best_members_state_and_keeps_own_experience(population):
  scores = jnp.array([-300.0, -150.0, -900.0, jnp.nan])  # NaN (no episode yet) ranks worst
  rng = common.ExploreRange()
  step = jax.jit(lambda k, p, s: common.pbt_exploit_explore(k, p, s, 2, rng, OWN_FIELDS))
  new, source = step(jax.random.key(0), population, scores)
  # Worst two: 3 (NaN) then 2 (-900); best two: 1 (-150) then 0 (-300).
  # The worst copies the best: 3 <- 1, 2 <- 0.
  np.testing.assert_array_equal(source, [0, 1, 0, 1])
  learned = ("actor", "critic", "target_critic")
  for dst, src in [(0, 0), (1, 1), (2, 0), (3, 1)]:
    for f in learned:
      for a, b in zip(_member_leaves(getattr(new, f), dst), _member_leaves(getattr(population, f), src)):
        np.testing.assert_array_equal(a, b)
    # Entropy state: log_alpha, Adam moments, counters copied from the source.
    for name in ("log_alpha", "step", "skipped", "log_alpha_min", "log_alpha_max"):
      assert np.asarray(getattr(new.entropy, name))[dst] == np.asarray(getattr(population.entropy, name))[src]
    adam_new = optax.tree_utils.tree_get(new.entropy.opt_state, "mu")
    adam_src = optax.tree_utils.tree_get(population.entropy.opt_state, "mu")
    assert np.asarray(adam_new)[dst] == np.asarray(adam_src)[src]
    # Own experience stays with the member.
    for f in OWN_FIELDS:
      for a, b in zip(_member_leaves(getattr(new, f), dst), _member_leaves(getattr(population, f), dst)):
        np.testing.assert_array_equal(a, b)
  # Kept members are bit-identical, hyperparameters included.
  for i in (0, 1):
    for a, b in zip(_member_leaves(new, i), _member_leaves(population, i)):
      np.testing.assert_array_equal(a, b)


def test_explore_draws_cover_the_stated_range():
  rng = common.ExploreRange(log_lr_scale=float(np.log(1.25)), target_shift=0.25,
                            target_min=-2.0, target_max=0.0)
  lr0 = jnp.array([1e-4, 1e-3, 1e-3, 3e-3])
  t0 = jnp.array([-1.0, -1.0, -1.9, -0.1])
  replaced = jnp.array([False, True, True, True])
  draw = jax.jit(jax.vmap(lambda k: common.explore_lr_and_target(k, lr0, t0, replaced, rng)))
  lr, t = (np.asarray(x) for x in draw(jax.random.split(jax.random.key(1), 2000)))
  # Kept member: untouched.
  assert np.all(lr[:, 0] == np.float32(1e-4)) and np.all(t[:, 0] == -1.0)
  ratio = lr[:, 1:] / np.asarray(lr0)[1:]
  assert np.all(ratio >= 1 / 1.25 - 1e-6) and np.all(ratio <= 1.25 + 1e-6)
  # Log-uniform: median near 1, and both ends of the range are reached.
  assert ratio.min() < 0.81 and ratio.max() > 1.23 and abs(np.median(np.log(ratio))) < 0.02
  shift = t[:, 1] - (-1.0)
  assert np.all(np.abs(shift) <= 0.25 + 1e-6) and shift.min() < -0.24 and shift.max() > 0.24
  # Clipped to [target_min, target_max] near the edges, never beyond.
  assert t[:, 2].min() == -2.0 and t[:, 3].max() == 0.0
  assert np.all((t >= -2.0) & (t <= 0.0))


def test_pbt_explore_perturbs_only_replaced_members(population):
  rng = common.ExploreRange(log_lr_scale=float(np.log(1.25)), target_shift=0.25,
                            target_min=-3.0, target_max=0.0)
  scores = jnp.array([4.0, 3.0, 2.0, 1.0])  # 3 <- 0, 2 <- 1
  new, source = jax.jit(
      lambda k: common.pbt_exploit_explore(k, population, scores, 2, rng, OWN_FIELDS)
  )(jax.random.key(2))
  np.testing.assert_array_equal(source, [0, 1, 1, 0])
  lr0 = np.asarray(common.injected(population.entropy.opt_state, "learning_rate"))
  lr = np.asarray(common.injected(new.entropy.opt_state, "learning_rate"))
  t0, t = np.asarray(population.entropy.target), np.asarray(new.entropy.target)
  np.testing.assert_array_equal(lr[:2], lr0[:2])
  np.testing.assert_array_equal(t[:2], t0[:2])
  ratio, shift = lr[2:] / lr0[[1, 0]], t[2:] - t0[[1, 0]]
  assert np.all((ratio >= 1 / 1.25 - 1e-6) & (ratio <= 1.25 + 1e-6) & (ratio != 1.0)), ratio
  assert np.all((np.abs(shift) <= 0.25 + 1e-6) & (shift != 0.0)), shift


def test_pbt_hook_fires_only_at_its_interval(sac, population):
  stats = population.stats.replace(
      recent=population.stats.recent.at[:, 0].set(jnp.array([-100.0, -200.0, -300.0, -400.0])),
      count=jnp.ones(4, jnp.int32),
  )
  pop = population.replace(stats=stats)
  hook = jax.jit(pbt.make_pbt_hook(sac, jax.random.key(0), every=4, n_replace=1,
                                   rng=pbt.explore_range(sac)))
  same = hook(pop, jnp.int32(2))
  for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(pop)):
    np.testing.assert_array_equal(_np(a), _np(b))
  fired = hook(pop, jnp.int32(3))
  la = np.asarray(pop.entropy.log_alpha)
  np.testing.assert_array_equal(fired.entropy.log_alpha, la[[0, 1, 2, 0]])  # 3 copied 0
  assert float(fired.entropy.target[3]) != float(pop.entropy.target[0])


# -------------------------------------------------------------- bookkeeping --

def test_episode_stats_match_numpy():
  rewards = np.arange(1.0, 26.0, dtype=np.float32)
  dones = np.zeros(25, bool)
  dones[[2, 5, 9, 12, 14, 17, 19, 22, 23, 24]] = True
  stats = common.EpisodeStats.create(window=4)
  assert np.isnan(stats.mean_recent())
  record = jax.jit(lambda s, r, d: s.record(r, d))
  for r, d in zip(rewards, dones):
    stats = record(stats, r, d)
  ends = np.flatnonzero(dones)
  returns = [rewards[a + 1:b + 1].sum() for a, b in zip(np.r_[-1, ends[:-1]], ends)]
  assert int(stats.count) == len(returns)
  assert float(stats.mean_recent()) == pytest.approx(np.mean(returns[-4:]))


def test_demo_writes_table_and_plots(trained, tmp_path, capsys):
  _, history, _ = trained
  paths = demo.write_plots(history, str(tmp_path))
  for p in paths:
    assert os.path.getsize(p) > 10_000
    with open(p, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  from examples.sac_continuous import report
  rows = report(history)
  assert [r[0] for r in rows] == [0, 1]
  np.testing.assert_allclose([r[2] for r in rows], history["alpha"][-1])
  text = common.print_table(["member", "return", "alpha", "entropy", "target"], rows)
  assert "alpha" in capsys.readouterr().out and len(text.splitlines()) == 4
