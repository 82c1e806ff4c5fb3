"""The shared pieces of the examples (examples/common.py, training.py and plotting.py).

Episode bookkeeping against NumPy, for one environment and for several; the
evaluation loop against a hand-computed CartPole episode; the training loop's
argument check; the table and plot writers.
"""

import os

import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from examples import common, plotting, training


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
  returns = [rewards[a + 1 : b + 1].sum() for a, b in zip(np.r_[-1, ends[:-1]], ends)]
  assert int(stats.count) == len(returns)
  assert float(stats.mean_recent()) == pytest.approx(np.mean(returns[-4:]))


def test_record_each_files_every_env_into_one_ring():
  record = jax.jit(lambda s, r, d: s.record_each(r, d))
  stats = common.EpisodeStats.create(window=3, envs=2).replace(current=jnp.array([5.0, 1.0]))
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


def test_evaluate_episodes_stops_counting_at_the_episode_end():
  env, params = gymnax.make("CartPole-v1")
  # Always pushing left ends a CartPole episode after a few dozen steps, with reward 1 per step.
  returns = jax.jit(lambda k: common.evaluate_episodes(env, params, lambda obs, k: 0, k, 3))(jax.random.key(0))

  def reference(key):
    k_reset, k_run = jax.random.split(key)
    _, state = env.reset(k_reset, params)
    total = 0.0
    for k in jax.random.split(k_run, params.max_steps_in_episode):
      _, k_env = jax.random.split(k)
      _obs, state, reward, terminated, truncated, _ = env.step(k_env, state, 0, params)
      total += float(reward)
      if terminated or truncated:
        return total
    return total

  expected = [reference(k) for k in jax.random.split(jax.random.key(0), 3)]
  np.testing.assert_allclose(returns, expected)
  assert all(5 <= r < 100 for r in expected), expected


class _Agent:
  cfg = type("Cfg", (), {"learning_starts": 100})()
  num_envs = 2


@pytest.mark.parametrize("steps, chunk", [(99, 10), (1_100, 300), (1_100, 25)])
def test_train_rejects_budgets_off_the_chunk_grid(steps, chunk):
  with pytest.raises(ValueError, match="train: total_steps - learning_starts"):
    training.train(_Agent(), None, steps, chunk=chunk)


def test_print_table_and_plots(tmp_path, capsys):
  text = plotting.print_table(["member", "alpha"], [[0, 0.123456], [1, 2.0]])
  assert text.splitlines()[2].split() == ["0", "0.123"]
  assert "alpha" in capsys.readouterr().out and len(text.splitlines()) == 4
  t, n = 6, 3
  history = {
    "steps": np.repeat(np.arange(t)[:, None] * 100, n, 1),
    "return": np.linspace(-1000, -150, t * n).reshape(t, n),
    "alpha": np.geomspace(1.0, 0.05, t * n).reshape(t, n),
    "entropy": np.linspace(1.0, -1.0, t * n).reshape(t, n),
    "target": np.full((t, n), -1.0),
    "alpha_lr": np.full((t, n), 1e-3),
  }
  paths = plotting.plot_history(history, str(tmp_path), "test", bar=-200.0)
  paths.append(
    plotting.plot_groups(
      history["steps"][:, 0],
      [("return", {"a": history["return"]}, False)],
      colors={"a": "tab:blue"},
      labels={"a": "a"},
      title="t",
      path=str(tmp_path / "g.png"),
      dashed={"a": history["target"][:, 0]},
    )
  )
  for p in paths:
    assert os.path.getsize(p) > 10_000
    with open(p, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  assert plotting.member_labels(history)[1] == "1: target -1.00, lr 1.0e-03"
