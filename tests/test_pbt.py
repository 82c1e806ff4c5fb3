"""Population-based training (examples/pbt.py): exploit and explore, leaf by leaf.

Exploit and explore run on hand-made scores over a real stacked population of
four Pendulum SAC agents: exploit must copy every learned leaf of the right
member and nothing of a member's own experience, explore must stay within its
stated ranges and touch only replaced members, and the jitted hook must fire
only at its interval.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

for _module in ("gymnax", "flashbax", "distrax"):  # The examples extra.
  pytest.importorskip(_module)

from examples import pbt  # noqa: E402
from examples.pbt import OWN_FIELDS  # noqa: E402
from examples.sac_continuous import SAC, Config  # noqa: E402


@pytest.fixture(scope="module")
def sac():
  return SAC(Config())


@pytest.fixture(scope="module")
def population(sac):
  """Four distinct members: own seeds, targets, alpha learning rates, log_alpha."""
  halves = [
    sac.init_population(jax.random.key(7), [-2.0, -1.5], [1e-4, 3e-4]),
    sac.init_population(jax.random.key(8), [-1.0, -0.5], [1e-3, 3e-3]),
  ]
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
  rng = pbt.ExploreRange()
  step = jax.jit(lambda k, p, s: pbt.pbt_exploit_explore(k, p, s, 2, rng, OWN_FIELDS))
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
  rng = pbt.ExploreRange(log_lr_scale=float(np.log(1.25)), target_shift=0.25, target_min=-2.0, target_max=0.0)
  lr0 = jnp.array([1e-4, 1e-3, 1e-3, 3e-3])
  t0 = jnp.array([-1.0, -1.0, -1.9, -0.1])
  replaced = jnp.array([False, True, True, True])
  draw = jax.jit(jax.vmap(lambda k: pbt.explore_lr_and_target(k, lr0, t0, replaced, rng)))
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
  rng = pbt.ExploreRange(log_lr_scale=float(np.log(1.25)), target_shift=0.25, target_min=-3.0, target_max=0.0)
  scores = jnp.array([4.0, 3.0, 2.0, 1.0])  # 3 <- 0, 2 <- 1
  new, source = jax.jit(lambda k: pbt.pbt_exploit_explore(k, population, scores, 2, rng, OWN_FIELDS))(jax.random.key(2))
  np.testing.assert_array_equal(source, [0, 1, 1, 0])
  lr0 = np.asarray(optax.tree_utils.tree_get(population.entropy.opt_state, "learning_rate"))
  lr = np.asarray(optax.tree_utils.tree_get(new.entropy.opt_state, "learning_rate"))
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
  hook = jax.jit(pbt.make_pbt_hook(jax.random.key(0), every=4, n_replace=1, rng=pbt.explore_range(sac)))
  same = hook(pop, jnp.int32(2))
  for a, b in zip(jax.tree.leaves(same), jax.tree.leaves(pop)):
    np.testing.assert_array_equal(_np(a), _np(b))
  fired = hook(pop, jnp.int32(3))
  la = np.asarray(pop.entropy.log_alpha)
  np.testing.assert_array_equal(fired.entropy.log_alpha, la[[0, 1, 2, 0]])  # 3 copied 0
  assert float(fired.entropy.target[3]) != float(pop.entropy.target[0])


def test_script_rejects_an_interval_off_the_chunk_grid(capsys):
  with pytest.raises(SystemExit) as e:
    pbt.main(["--interval", "700", "--chunk", "500"])
  assert e.value.code == 2
  assert "must be a multiple of --chunk" in capsys.readouterr().err
