"""Velora 0.2.0's own agents, run with entropy_jax.compat's classes swapped in by the import alone.

`velora.models.nf.agent` imports `EntropyModule` and `EntropyModuleDiscrete` by name; the tests
patch those two names, build `NeuroFlowCT` (gymnasium Pendulum-v1) and `NeuroFlow` (CartPole-v1)
from the same seed as with Velora's own modules, and run the agents' own training step
(`_train_step`, what `train()` calls once per environment step) on the same transitions.
Nothing else is touched: the agents mix `alpha` into their torch losses, call `.detach()` on the
loss `compute_loss` returns, and put `config()` into Velora's pydantic `ModelDetails`.

The environment is stepped here as `train()` steps it, but from a seeded reset (Velora's
`buffer.warm` resets its vectorized copies unseeded, so two runs of Velora alone differ). Two
runs of Velora alone then agree bit for bit, and with the port alpha agrees within 1e-4 relative
at every step (measured: about 2e-7, an ulp or two of float32 feeding back through the networks).
"""

import pathlib
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gymnasium")
agent_module = pytest.importorskip("velora.models.nf.agent")
from velora.gym.wrap import add_core_env_wrappers  # noqa: E402  (after the importorskips)

from entropy_jax import compat  # noqa: E402
from entropy_jax.targets import discrete_target  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

RTOL = 1e-4
STEPS, WARMUP, BATCH = 100, 64, 32
# A tenfold faster alpha than the agents' default 3e-4, so that alpha moves by about 30% in
# 100 steps and the comparison sees it move.
ALPHA_LR = 3e-3
AGENTS = {"NeuroFlowCT": "Pendulum-v1", "NeuroFlow": "CartPole-v1"}
NAMES = ("EntropyModule", "EntropyModuleDiscrete")


def build(name, monkeypatch, swapped):
  """Velora's agent `name`, with the port's classes in place of Velora's when `swapped`."""
  with monkeypatch.context() as patch:
    if swapped:
      for cls in NAMES:
        patch.setattr(agent_module, cls, getattr(compat, cls))
    return getattr(agent_module, name)(AGENTS[name], 20, 20, alpha_lr=ALPHA_LR, device=torch.device("cpu"), seed=0)


def train(agent, steps=STEPS):
  """`train()`'s loop from a seeded reset: act, store, and one `_train_step` per step after the warm-up.

  Returns alpha after each training step, and the last step's losses.
  """
  env = add_core_env_wrappers(agent.env, agent.device)
  state, _ = env.reset(seed=0)
  hidden, alphas, losses = None, [], {}
  for t in range(WARMUP + steps):
    action, hidden = agent.predict(state, hidden, train_mode=True)
    next_state, reward, terminated, truncated, _ = env.step(action)
    agent.buffer.add(state, action, reward, next_state, terminated or truncated, hidden)
    state = next_state
    if terminated or truncated:
      (state, _), hidden = env.reset(), None
    if t >= WARMUP:
      losses = agent._train_step(BATCH)
      alphas.append(agent.entropy.alpha.item())
  return np.array(alphas), losses


@pytest.mark.parametrize("name", AGENTS)
def test_velora_agents_train_alike_with_the_swapped_import(name, monkeypatch):
  # Each agent trains right after it is built: the seed given to the constructor sets torch's
  # global generator, which the training consumes.
  velora = build(name, monkeypatch, swapped=False)
  if name == "NeuroFlow":
    # Velora's discrete target, 0.98 * log(1/A), is negative; the port's default is
    # 0.6 * log(A) (docs: "Coming from Velora"). Both runs use the port's here.
    velora.entropy.target = torch.tensor(discrete_target(velora.action_dim))
  want, v_losses = train(velora)
  ours = build(name, monkeypatch, swapped=True)
  assert type(velora.entropy).__module__ == "velora.models.nf.modules"
  assert type(ours.entropy) is getattr(compat, type(velora.entropy).__name__)
  assert repr(ours.entropy) == repr(velora.entropy)
  assert float(ours.entropy.target) == float(velora.entropy.target)
  # config() went into Velora's pydantic ModelDetails.
  assert ours.config.model_details.entropy.lr == velora.config.model_details.entropy.lr == ALPHA_LR
  got, o_losses = train(ours)

  assert len(got) == STEPS and np.all(np.isfinite(got))
  np.testing.assert_allclose(got, want, rtol=RTOL, atol=0)
  assert want[-1] < 0.9  # alpha moved, so the comparison means something
  # What the agent touched is torch: the losses it detached, alpha it mixed into its losses.
  assert all(isinstance(v, torch.Tensor) for v in o_losses.values())
  assert isinstance(ours.entropy.alpha, torch.Tensor) and isinstance(ours.entropy.log_alpha, torch.Tensor)
  np.testing.assert_allclose(float(o_losses["entropy"]), float(v_losses["entropy"]), rtol=1e-3)
  assert int(ours.entropy.state.step) == STEPS


def test_velora_train_runs_a_few_episodes(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)  # train() writes its metrics database here
  agent = build("NeuroFlow", monkeypatch, swapped=True)
  agent.train(32, n_episodes=3, max_steps=50, display_count=3, log_freq=3)
  steps = int(agent.entropy.state.step)
  assert steps > 3 and int(agent.entropy.state.skipped) == 0
  assert 0.0 < agent.entropy.alpha.item() < 1.0


def test_the_docs_agent_example_runs(monkeypatch, tmp_path):
  # docs/velora.md shows a Velora agent with the swapped import (a ```py block: it needs Velora).
  page = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "velora.md").read_text()
  (block,) = [b for b in re.findall(r"^```py\n(.*?)^```", page, flags=re.DOTALL | re.MULTILINE) if "NeuroFlow" in b]
  monkeypatch.chdir(tmp_path)
  for cls in NAMES:  # The block swaps the two names; they are restored afterwards.
    monkeypatch.setattr(agent_module, cls, getattr(agent_module, cls))
  namespace = {"__name__": "docs_velora"}
  exec(compile(block, "docs/velora.md", "exec"), namespace)
  assert isinstance(namespace["agent"].entropy, compat.EntropyModule)
  assert isinstance(namespace["agent"].entropy.alpha, torch.Tensor)
