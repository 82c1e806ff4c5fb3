"""The demo script (examples/demo.py): the population it trains, its files, and its ablation.

The demo runs once at a small size. Its saved history must be exactly the
history of the agent's own population run with the same seed (the demo adds
nothing to the training), its summary must count the members at the bar from
that reference, its plots must be PNG files, and under Velora's negative
target the ablation's alpha must fall at every update.
"""

import json
import os

import jax
import numpy as np
import pytest

for _module in ("gymnax", "flashbax", "distrax"):  # The examples extra.
  pytest.importorskip(_module)

from examples import demo  # noqa: E402
from examples.sac_continuous import SAC, default_population, train  # noqa: E402

MEMBERS, STEPS, CHUNK, ABLATION_STEPS = 2, 2_000, 500, 2_000


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("demo"))
  args = ["--out", out, "--members", str(MEMBERS), "--steps", str(STEPS), "--chunk", str(CHUNK)]
  demo.main([*args, "--ablation-steps", str(ABLATION_STEPS)])
  return out


@pytest.fixture(scope="module")
def reference():
  sac = SAC()
  population = sac.init_population(jax.random.key(0), *default_population(sac, MEMBERS))
  return train(sac, population, STEPS, chunk=CHUNK, progress=False)[1]


@pytest.mark.slow
def test_history_is_the_agents_own_run(run, reference):
  with np.load(os.path.join(run, "history.npz")) as f:
    history = dict(f)
  assert sorted(history) == sorted(reference)
  for name, values in reference.items():
    np.testing.assert_array_equal(history[name], values, err_msg=name)


@pytest.mark.slow
def test_summary_counts_the_reference_members_at_the_bar(run, reference):
  with open(os.path.join(run, "summary.json")) as f:
    summary = json.load(f)
  final = reference["return"][-1]
  assert summary["members_at_bar"] == int(np.sum(final >= demo.RETURN_BAR))
  np.testing.assert_array_equal(np.float32(summary["final_return"]), final)
  assert summary["members"] == MEMBERS and summary["steps_per_member"] == STEPS


@pytest.mark.slow
def test_plots_are_pngs(run):
  for name in ("return.png", "alpha.png", "entropy.png", "discrete_targets.png"):
    with open(os.path.join(run, name), "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n", name


@pytest.mark.slow
def test_velora_target_lowers_alpha_at_every_ablation_update(run):
  with open(os.path.join(run, "discrete_targets.json")) as f:
    ablation = json.load(f)
  assert list(ablation) == list(demo.ABLATION_RULES)
  cfg = demo.study.TASKS["cartpole"].cfg
  updates = demo.ABLATION_SEEDS * (ABLATION_STEPS - cfg.learning_starts) // cfg.num_envs  # 2 x 500
  # Velora's target, 0.98 log(1/A), lies below every policy's entropy: alpha falls at each update.
  assert ablation["velora"]["alpha_falls"] == updates and ablation["velora"]["alpha_rises"] == 0
  for rule in demo.ABLATION_RULES:
    assert ablation[rule]["alpha_falls"] + ablation[rule]["alpha_rises"] <= updates
