"""The discrete target study, end to end on a small budget, and alpha's direction per rule.

With small agents on CartPole-v1, `main` runs once per module under the three
rules whose targets move (linear anneal, staircase, TES-SAC), and `run_rules`
trains the six fixed-ratio rules together as one population. The tests then
read what they produced: the target each member used must be what its rule
says at that update, alpha must move the way the entropy gap says under every
rule, Velora's target must lower alpha at every update, and the bound must hold.
"""

from __future__ import annotations

import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

for _module in ("gymnax", "flashbax", "distrax"):  # The examples extra.
  pytest.importorskip(_module)

import entropy_jax as ej  # noqa: E402
from examples import discrete_target_study as study  # noqa: E402
from examples import target_rules  # noqa: E402
from examples.sac_discrete import Config  # noqa: E402

DROP_EVERY = 100  # updates per drop here (the study's is target_rules.UPDATES_PER_DROP)
CARTPOLE = study.Task(
  "CartPole-v1", Config(hidden=(32, 32), batch_size=64, buffer_size=5_000, learning_starts=400), 2_400, 400, 2
)
MOVING = ["linear", "staircase", "tes"]
FIXED = ["paper", "cleanrl", "mid", "low", "low_bounded", "velora"]


@pytest.fixture(scope="module")
def out(tmp_path_factory):
  folder = str(tmp_path_factory.mktemp("study"))
  with pytest.MonkeyPatch.context() as mp:
    mp.setitem(study.TASKS, "cartpole", CARTPOLE)
    mp.setattr(target_rules, "UPDATES_PER_DROP", DROP_EVERY)
    study.main(["--tasks", "cartpole", "--rules", *MOVING, "--out", folder])
  return folder


@pytest.fixture(scope="module")
def fixed():
  runs = study.run_rules(CARTPOLE, [target_rules.RULES[r] for r in FIXED], progress=False)
  return {r: h for r, (h, _) in zip(FIXED, runs)}


def _history(out, task, rule):
  with np.load(os.path.join(out, f"{task.name}_{rule}.npz")) as f:
    return dict(f)


def _updates(history, task):
  return (history["steps"][:, 0] - task.cfg.learning_starts) // task.cfg.num_envs


@pytest.mark.slow
def test_writes_results_plots_and_histories(out):
  with open(os.path.join(out, "results.json")) as f:
    results = json.load(f)
  assert results["meta"]["tasks"] == {"CartPole-v1": {"steps": CARTPOLE.steps, "seeds": 2}}
  assert list(results["results"]["CartPole-v1"]) == MOVING
  for row in results["results"]["CartPole-v1"].values():
    assert row["seeds"] == 2 and np.isfinite(row["final_return_mean"]) and row["seconds"] > 0
  assert not os.path.exists(os.path.join(out, "CartPole-v1_fixed.png"))  # no fixed rule ran
  with open(os.path.join(out, "CartPole-v1_annealed.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"
  for rule in MOVING:
    h = _history(out, CARTPOLE, rule)
    assert h["return"].shape == (CARTPOLE.steps // CARTPOLE.chunk, CARTPOLE.seeds)
  # --resume reads the histories back instead of training again.
  again = study.main(["--tasks", "cartpole", "--rules", *MOVING, "--out", out, "--resume"])
  assert again == results["results"]


@pytest.mark.slow
@pytest.mark.parametrize("rule", MOVING + FIXED)
def test_alpha_moves_as_the_entropy_gap_says(out, fixed, rule):
  h = fixed[rule] if rule in fixed else _history(out, CARTPOLE, rule)
  per_chunk = CARTPOLE.chunk // CARTPOLE.cfg.num_envs
  rose = h["alpha_rises"][1:] == per_chunk  # alpha rose at every update of the chunk
  fell = h["alpha_falls"][1:] == per_chunk
  gap = h["entropy_gap"][1:]  # the chunk's mean H - target, the sign of d loss / d log alpha
  assert rose.sum() + fell.sum() >= 2, (h["alpha_rises"], h["alpha_falls"])
  assert np.all(gap[rose] < 0), gap[rose]
  assert np.all(gap[fell] > 0), gap[fell]


@pytest.mark.slow
def test_linear_and_staircase_targets_follow_their_schedules(out):
  updates = (CARTPOLE.steps - CARTPOLE.cfg.learning_starts) // CARTPOLE.cfg.num_envs
  schedules = {
    "linear": ej.linear_schedule(
      target_rules.PAPER_RATIO, target_rules.LOW_RATIO, int(updates * target_rules.ANNEAL_FRACTION), num_actions=2
    ),
    "staircase": ej.annealed_discrete_target(2, steps_per_drop=DROP_EVERY),
  }
  for rule, schedule in schedules.items():
    h = _history(out, CARTPOLE, rule)
    k = _updates(h, CARTPOLE)
    expected = np.asarray([schedule(jnp.int32(i)) for i in k])
    np.testing.assert_allclose(h["target"], np.repeat(expected[:, None], CARTPOLE.seeds, 1), rtol=1e-6)
  # The linear anneal ends at the low ratio half-way through the run.
  assert _history(out, CARTPOLE, "linear")["target"][-1, 0] == pytest.approx(
    target_rules.LOW_RATIO * math.log(2), rel=1e-6
  )


@pytest.mark.slow
def test_tes_drops_by_the_decay_and_never_faster_than_its_staircase(out):
  h = _history(out, CARTPOLE, "tes")
  start = target_rules.PAPER_RATIO * math.log(2)
  drops = np.log(h["target"] / start) / math.log(ej.tes_sac.TES_DECAY)
  np.testing.assert_allclose(drops, np.round(drops), atol=1e-4)  # whole drops of 0.9 only
  assert np.all(np.diff(np.round(drops), axis=0) >= 0)
  np.testing.assert_array_equal(np.round(drops[-1]), h["tes_drops"][0])
  assert np.all(np.round(drops) <= _updates(h, CARTPOLE)[:, None] // DROP_EVERY)


@pytest.mark.slow
def test_fixed_targets_velora_lowers_alpha_at_every_update_and_the_bound_holds(fixed):
  for rule in FIXED:
    ratio = target_rules.RULES[rule].ratio
    expected = ej.velora_discrete_target(2) if rule == "velora" else ratio * math.log(2)
    np.testing.assert_allclose(fixed[rule]["target"], expected, rtol=1e-6)
  updates = (CARTPOLE.steps - CARTPOLE.cfg.learning_starts) // CARTPOLE.cfg.num_envs
  velora = fixed["velora"]
  assert velora["alpha_rises"].sum() == 0
  np.testing.assert_array_equal(velora["alpha_falls"].sum(axis=0), updates)
  assert np.all(fixed["low_bounded"]["alpha_peak"] <= target_rules.LOW_MAX_ALPHA * (1 + 1e-6))


def test_summary_reads_a_runaway_alpha_as_unbounded():
  chunks, seeds, per_chunk = 8, 2, 100
  h = {
    "steps": np.repeat(np.arange(chunks + 1)[:, None] * 200, seeds, 1),
    "return": np.ones((chunks + 1, seeds)),
    "entropy": np.full((chunks + 1, seeds), 0.1),
    "target": np.full((chunks + 1, seeds), 0.6),
    "alpha": np.repeat(np.geomspace(0.1, 50.0, chunks + 1)[:, None], seeds, 1),
    "alpha_rises": np.full((chunks + 1, seeds), per_chunk),
    "alpha_falls": np.zeros((chunks + 1, seeds), int),
  }
  h["alpha_peak"] = h["alpha"]
  s = study.summarize(h, {"greedy": np.ones(seeds), "seconds": 1.0, "updates": chunks * per_chunk})
  assert s["bounded_seeds"] == 0 and s["alpha_rising_share_last_quarter"] == pytest.approx(1.0)
  assert s["entropy_minus_target_mean"] == pytest.approx(-0.5)
  h["alpha_rises"] = np.full((chunks + 1, seeds), per_chunk // 2)
  h["alpha"] = np.full((chunks + 1, seeds), 0.05)
  s = study.summarize(h, {"greedy": np.ones(seeds), "seconds": 1.0, "updates": chunks * per_chunk})
  assert s["bounded_seeds"] == seeds and s["auc_mean"] == pytest.approx(1.0)
