"""entropy_jax in SBX's SAC, TQC and CrossQ (sbx-rl 0.28.0), against SBX's own temperature.

- Lockstep (SAC): SBX's real training (`learn`: SB3's collection and replay
  buffer on gymnasium's Pendulum-v1, SBX's networks, losses and jitted
  `_train`), twice with the same seed, SBX's temperature driving, then
  entropy_jax's. At every update both temperature steps are taken from the
  same entropy, and the whole temperature state after them (log_alpha, Adam's
  count, mu and nu) is compared within float32 rounding.
- Open-loop replay (SAC, TQC, CrossQ): each agent's own training, recorded
  (the entropy each temperature step took, and SBX's state after it),
  replayed through `entropy_jax.continuous_update` from the integration's
  initial state without re-synchronizing; and wrong temperatures the replay
  must reject.

See `tests/_integrations.py`.
"""

from __future__ import annotations

import functools

import pytest

sbx = pytest.importorskip("sbx")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _integrations import (  # noqa: E402
  Lockstep,
  Recorded,
  capture,
  check_lockstep,
  check_replay,
  empty_record,
  mutations,
  replay,
  strong,
  temperature_updates,
  ulps,
)

import entropy_jax as ej  # noqa: E402
from entropy_jax.integrations import sbx as ej_sbx  # noqa: E402

SEED = 0
LEARNING_STARTS = 100
LOCKSTEP_TOTAL = 500
REPLAY_TOTAL = 1_150
# Small networks: the temperature step does not depend on their size, the test time does.
POLICY_KWARGS = {"net_arch": [64, 64]}
# SBX's gradient is `(entropy - target) * exp(-x) * exp(x)` (the backward pass
# of log(exp(x))), entropy_jax's `entropy - target`: one subtraction, two
# products and two `exp`s (2 units each), within 10 units of rounding.
N_TERMS = 10
# Both gradients are `entropy - target` up to that rounding; measured over the
# three agents: log_alpha 1 to 4 ulp, mu and nu 2 to 3.
REPLAY_ULPS = {"log_alpha": 8, "mu": 8, "nu": 8}
AGENTS = {"SAC": (sbx.SAC, ej_sbx.SAC), "TQC": (sbx.TQC, ej_sbx.TQC), "CrossQ": (sbx.CrossQ, ej_sbx.CrossQ)}


class LockstepSAC(ej_sbx.SAC):
  """entropy_jax's `SAC` carrying SBX's `TrainState` beside its `EntropyState`."""

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
    ours_next, loss = ej_sbx.SAC.update_temperature(target_entropy, ours, entropy)
    probe = client.replace(tx=capture(), opt_state=capture().init(client.params))
    g_client = sbx.SAC.update_temperature(target_entropy, probe, entropy)[0].opt_state
    g_ours = jax.grad(ej_sbx.temperature_loss)(ours.log_alpha, ours, entropy)
    abs_terms = jnp.abs(entropy) + jnp.abs(ours.target)
    pair = pair.stepped(
      client, ours, client_next, ours_next, g_client["log_ent_coef"], g_ours, abs_terms, jnp.zeros(())
    )
    return pair, loss

  def train(self, gradient_steps: int, batch_size: int) -> None:
    super().train(gradient_steps, batch_size)
    self.records.append(jax.device_get(self.ent_coef_state.record))


@functools.cache
def recorder(client: type) -> type:
  """`client` (SBX's own agent), its `TrainState` carrying the entropy of its last temperature step."""

  class Recorder(client):
    def __init__(self, *args, **kwargs):
      self.records: list[dict] = []
      super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
      super()._setup_model()
      self.ent_coef_state = Recorded(inner=self.ent_coef_state, stat=jnp.zeros(()), key="log_ent_coef")

    @staticmethod
    @jax.jit
    def update_temperature(target_entropy, ent_coef_state, entropy):
      inner, loss = client.update_temperature(target_entropy, ent_coef_state.inner, entropy)
      return Recorded(inner=inner, stat=jnp.asarray(entropy, jnp.float32), key="log_ent_coef"), loss

    def train(self, gradient_steps: int, batch_size: int) -> None:
      super().train(gradient_steps, batch_size)
      self.records.append(jax.device_get(self.ent_coef_state.trace()))

  return Recorder


def make(cls, **kwargs):
  kwargs.setdefault("policy_kwargs", dict(POLICY_KWARGS))  # SB3 adds to the dict it is given
  return cls("MlpPolicy", "Pendulum-v1", learning_starts=LEARNING_STARTS, seed=SEED, **kwargs)


@functools.cache
def lockstep_run(ours_drives: bool):
  model = make(LockstepSAC, ours_drives=ours_drives)
  model.learn(LOCKSTEP_TOTAL)
  records = {k: np.stack([r[k] for r in model.records]) for k in model.records[0]}
  return model, records


@functools.cache
def recorded_run(agent: str):
  """The agent's own training: per temperature update, its entropy and its state after the step.

  CrossQ steps its actor and temperature every third update by default; one
  in one here gives the replay as many temperature updates for the time.
  """
  kwargs = {"policy_delay": 1} if agent == "CrossQ" else {}
  model = make(recorder(AGENTS[agent][0]), **kwargs)
  model.learn(REPLAY_TOTAL)
  records = {k: np.stack([r[k] for r in model.records]) for k in model.records[0]}
  return temperature_updates(records), kwargs


def replayed(agent: str, optimizer=None):
  """The recorded entropies through entropy_jax's public update, from the integration's initial state."""
  records, kwargs = recorded_run(agent)
  ours = make(AGENTS[agent][1], alpha_optimizer=optimizer, **kwargs)
  update = lambda s, entropy: ej.continuous_update(s, -entropy[None])[0]
  return records, replay(ours.ent_coef_state, records["stat"], update)


@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_initial_state_is_sbx_s_with_an_entropy_state(agent):
  """The integration's set-up: SBX's, with an `EntropyState` in the place of SBX's
  `TrainState` at the same log_alpha, optimizer state and target."""
  client_cls, ours_cls = AGENTS[agent]
  for ent_coef in ("auto", "auto_0.1") if agent == "SAC" else ("auto_0.1",):
    theirs, ours = make(client_cls, ent_coef=ent_coef), make(ours_cls, ent_coef=ent_coef)
    state, client = ours.ent_coef_state, theirs.ent_coef_state
    assert isinstance(state, ej_sbx.SbxEntropyState) and state.loss_form == "log"
    assert isinstance(ours, client_cls)
    assert np.array_equal(state.log_alpha, client.params["log_ent_coef"])
    assert np.float32(state.target) == np.float32(theirs.target_entropy) == -1.0
    assert float(state.alpha) == pytest.approx(1.0 if ent_coef == "auto" else 0.1)
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
  for cls in (ej_sbx.SAC, ej_sbx.TQC, ej_sbx.CrossQ):
    with pytest.raises(ValueError, match=f"{cls.__name__}: `ent_coef` must be 'auto'"):
      make(cls, ent_coef=0.2)


@pytest.mark.slow
@pytest.mark.parametrize("ours_drives", [False, True])
def test_every_update_matches_sbx(ours_drives):
  """SBX's real training; at every update the two steps agree within float32 rounding."""
  model, records = lockstep_run(ours_drives)
  n = LOCKSTEP_TOTAL - LEARNING_STARTS
  np.testing.assert_array_equal(records["n"], np.arange(1, n + 1))
  worst = check_lockstep(records, N_TERMS, model.lr_schedule(1))
  assert worst["n"] == n
  driven = records["next_ours" if ours_drives else "next_client"]
  assert abs(float(driven[-1] - records["log_alpha"][0])) > 0.1  # not vacuous
  pair = model.ent_coef_state
  assert np.array_equal(pair.params["log_ent_coef"], driven[-1])


@pytest.mark.slow
@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_replay_of_sbx_training_matches_entropy_jax(agent):
  """The agent's own temperature, >= 1,000 updates, replayed open loop: the whole state within a few ulp."""
  records, ours = replayed(agent)
  assert records["count"].size >= 1_000
  np.testing.assert_array_equal(records["count"], np.arange(1, records["count"].size + 1))
  worst = check_replay(records, ours, REPLAY_ULPS)
  print(agent, "replay, largest differences in ulp:", worst)
  assert abs(float(records["log_alpha"][-1])) > 0.2  # alpha travelled from 1


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dropped moments", "b2=0.99", "wrong sign"])
def test_replay_rejects_a_wrong_temperature(name):
  """A wrong Adam in entropy_jax's state fails the replay, on log_alpha alone."""
  model = make(ej_sbx.SAC)
  records, ours = replayed("SAC", mutations(model.lr_schedule(1))[name])
  with pytest.raises(AssertionError, match="differs from the client's"):
    check_replay(records, ours, REPLAY_ULPS)
  assert np.max(ulps(records["log_alpha"], ours["log_alpha"])) > 1_000


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
