"""entropy_jax in SBX's SAC (sbx-rl 0.28.0): step for step against SBX's own temperature.

SBX's real training (`SAC.learn`: SB3's collection and replay buffer on
gymnasium's Pendulum-v1, SBX's networks, losses and jitted `_train`) runs
twice with the same seed: once with SBX's temperature driving, once with
entropy_jax's. At every update both temperature steps are taken from the same
entropy and compared within float32 rounding (see `tests/_integrations.py`).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import sbx
from _integrations import Lockstep, capture, check_lockstep, empty_record, strong

from examples.integrations.sbx_sac import (
  EntropySAC,
  SbxEntropyState,
  temperature_gradient,
)

TOTAL = 1_200
LEARNING_STARTS = 100
SEED = 0
# SBX's gradient is `(entropy - target) * exp(-x) * exp(x)` (the backward pass
# of log(exp(x))), entropy_jax's `entropy - target`: one subtraction, two
# products and two `exp`s (2 units each), within 10 units of rounding.
N_TERMS = 10


class LockstepSAC(EntropySAC):
  """`EntropySAC` carrying SBX's `TrainState` beside its `EntropyState`."""

  def __init__(self, *args, ours_drives: bool = False, **kwargs):
    self.ours_drives = ours_drives
    self.records: list[dict] = []
    super().__init__(*args, **kwargs)

  def _setup_model(self) -> None:
    sbx.SAC._setup_model(self)  # SBX's own, with its TrainState
    client = self.ent_coef_state
    client = client.replace(params={"log_ent_coef": strong(client.params["log_ent_coef"])})
    self.ent_coef_state = Lockstep(
      client=client,
      ours=self.init_entropy_state(),
      record=empty_record(),
      ours_drives=jnp.asarray(self.ours_drives),
      key="log_ent_coef",
    )

  @staticmethod
  @jax.jit
  def update_temperature(target_entropy, ent_coef_state, entropy):
    pair = ent_coef_state
    client, ours = pair.synced()
    client_next, _ = sbx.SAC.update_temperature(target_entropy, client, entropy)
    ours_next, loss = EntropySAC.update_temperature(target_entropy, ours, entropy)
    probe = client.replace(tx=capture(), opt_state=capture().init(client.params))
    g_client = sbx.SAC.update_temperature(target_entropy, probe, entropy)[0].opt_state
    g_ours = temperature_gradient(ours.log_alpha, ours, entropy)
    abs_terms = jnp.abs(entropy) + jnp.abs(ours.target)
    pair = pair.stepped(
      client, ours, client_next, ours_next, g_client["log_ent_coef"], g_ours, abs_terms, jnp.zeros(())
    )
    return pair, loss

  def train(self, gradient_steps: int, batch_size: int) -> None:
    super().train(gradient_steps, batch_size)
    self.records.append(jax.device_get(self.ent_coef_state.record))


def make(cls, **kwargs):
  return cls("MlpPolicy", "Pendulum-v1", learning_starts=LEARNING_STARTS, seed=SEED, **kwargs)


@functools.cache
def lockstep_run(ours_drives: bool):
  model = make(LockstepSAC, ours_drives=ours_drives)
  model.learn(TOTAL)
  records = {k: np.stack([r[k] for r in model.records]) for k in model.records[0]}
  return model, records


def test_initial_state_is_sbx_s_with_an_entropy_state():
  """`EntropySAC`'s set-up: SBX's, with an `EntropyState` in the place of SBX's
  `TrainState` at the same log_alpha, optimizer state and target."""
  for ent_coef in ("auto", "auto_0.1"):
    theirs, ours = make(sbx.SAC, ent_coef=ent_coef), make(EntropySAC, ent_coef=ent_coef)
    state, client = ours.ent_coef_state, theirs.ent_coef_state
    assert isinstance(state, SbxEntropyState) and state.loss_form == "log"
    assert np.array_equal(state.log_alpha, client.params["log_ent_coef"])
    assert np.float32(state.target) == np.float32(theirs.target_entropy) == -1.0
    ours_opt, their_opt = jax.tree.leaves(state.opt_state), jax.tree.leaves(client.opt_state)
    assert len(ours_opt) == len(their_opt) == 3  # Adam's count, mu, nu
    # SBX's alpha read (apply_fn on params) gives the same bits from either state.
    read = lambda s: s.apply_fn({"params": s.params})
    assert np.array_equal(read(state), read(client))
    for a, b in zip(
      ours_opt + jax.tree.leaves(ours.policy.actor_state.params),
      their_opt + jax.tree.leaves(theirs.policy.actor_state.params),
    ):
      np.testing.assert_array_equal(a, b)


def test_fixed_temperature_is_refused():
  with pytest.raises(ValueError, match="EntropySAC: `ent_coef` must be 'auto'"):
    make(EntropySAC, ent_coef=0.2)


@pytest.mark.slow
@pytest.mark.parametrize("ours_drives", [False, True])
def test_every_update_matches_sbx(ours_drives):
  """SBX's real training; at every update the two steps agree within float32 rounding."""
  model, records = lockstep_run(ours_drives)
  n = TOTAL - LEARNING_STARTS
  np.testing.assert_array_equal(records["n"], np.arange(1, n + 1))
  worst = check_lockstep(records, N_TERMS, model.lr_schedule(1))
  assert worst["n"] == n
  driven = records["next_ours" if ours_drives else "next_client"]
  assert abs(float(driven[-1] - records["log_alpha"][0])) > 0.2  # not vacuous
  pair = model.ent_coef_state
  assert np.array_equal(pair.params["log_ent_coef"], driven[-1])


@pytest.mark.slow
def test_actor_and_critic_read_the_entropy_state_as_sbx_reads_its_own():
  """SBX's actor and critic steps: bit-identical outputs from either alpha state."""
  model, _ = lockstep_run(True)
  pair = model.ent_coef_state
  client = pair.client.replace(params={"log_ent_coef": pair.ours.log_alpha})
  ours = pair.ours  # the SbxEntropyState that drove this run
  data = model.replay_buffer.sample(model.batch_size)
  obs, act = data.observations.numpy(), data.actions.numpy()
  nxt, done, rew = data.next_observations.numpy(), data.dones.numpy().ravel(), data.rewards.numpy().ravel()
  disc = np.full_like(rew, model.gamma)
  policy, key = model.policy, jax.random.key(1)
  critic = [
    sbx.SAC.update_critic(policy.actor_state, policy.qf_state, s, obs, act, nxt, rew, done, disc, key)[0].params
    for s in (client, ours)
  ]
  actor = [sbx.SAC.update_actor(policy.actor_state, policy.qf_state, s, obs, key)[0].params for s in (client, ours)]
  for a, b in zip(jax.tree.leaves((critic[0], actor[0])), jax.tree.leaves((critic[1], actor[1]))):
    np.testing.assert_array_equal(a, b)
