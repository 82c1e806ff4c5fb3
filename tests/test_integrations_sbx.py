"""entropy_jax's SBX `SAC`, `TQC` and `CrossQ` (sbx-rl 0.28.0), against SBX's own temperature.

- Lockstep (each agent): SBX's real training (`learn`: SB3's collection and
  replay buffer on gymnasium's Pendulum-v1, SBX's networks, losses and jitted
  `_train`), SBX's temperature driving. At
  every update SBX's `update_temperature` and the integration class's take
  their steps from the same entropy, and the whole temperature state after
  them is compared within float32 rounding.
- Open-loop replay (each agent): the SBX-driven run is SBX's own training; its
  entropies go through the class's `update_temperature` from the class's
  initial state, never re-synchronized.
- Features (SAC): a target schedule, bounds that bind and the alpha-form loss,
  inside SBX's training, against closed forms and the core's own update.
- Library mutants: faults in `entropy_jax.apply_gradients` fail these checks.

See `tests/_integrations.py`.
"""

from __future__ import annotations

import functools

import pytest

sbx = pytest.importorskip("sbx")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from _integrations import (  # noqa: E402
  Lockstep,
  check_lockstep,
  check_replay,
  client_state_trace,
  empty_record,
  per_update,
  recording,
  replay,
  state_trace,
  strong,
  with_recording,
)
from _integrations_features import (  # noqa: E402
  BOUNDS,
  LIBRARY_MUTANTS,
  SCHEDULE,
  Recorded,
  check_features,
  core_state,
  schedule_closed_form,
)

import entropy_jax as ej  # noqa: E402
from entropy_jax.integrations import sbx as ej_sbx  # noqa: E402

SEED = 0
LEARNING_STARTS = 100
UPDATES = 400  # temperature updates per lockstep run
FEATURE_UPDATES = 250
# Small networks: the temperature step does not depend on their size, the test time does.
POLICY_KWARGS = {"net_arch": [64, 64]}
AGENTS = {"SAC": (sbx.SAC, ej_sbx.SAC), "TQC": (sbx.TQC, ej_sbx.TQC), "CrossQ": (sbx.CrossQ, ej_sbx.CrossQ)}
# CrossQ steps its actor and temperature every third update by default; one in
# one gives as many temperature updates for the time.
AGENT_KWARGS = {"SAC": {}, "TQC": {}, "CrossQ": {"policy_delay": 1}}
# SBX's gradient is `(entropy - target) * exp(-x) * exp(x)` (the backward pass
# of log(exp(x))), entropy_jax's `entropy - target`: one subtraction, two
# products and two `exp`s (2 units each), within 10 units of rounding.
N_TERMS = 10
# Both gradients are `entropy - target` up to that rounding; measured over the
# three agents: 1 to 4 ulp.
REPLAY_ULPS = {"log_alpha": 8, "mu": 8, "nu": 8, "target": 0}
FEATURES = {**BOUNDS, "alpha_loss_form": "alpha"}  # with the target schedule `SCHEDULE`


@functools.cache
def lockstep_class(agent: str) -> type:
  """The integration's `agent` carrying SBX's `TrainState` beside its `EntropyState` (see `Lockstep`)."""
  client_cls, ours_cls = AGENTS[agent]

  class LockstepAgent(ours_cls):
    def __init__(self, *args, **kwargs):
      self.records: list[dict] = []
      super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
      client_cls._setup_model(self)  # SBX's own, with its TrainState
      client = self.ent_coef_state
      params = {"log_ent_coef": strong(client.params["log_ent_coef"])}
      tx = recording(client.tx)
      client = client.replace(params=params, tx=tx, opt_state=tx.init(params))
      self.ent_coef_state = Lockstep(
        client=client,
        ours=with_recording(self.init_entropy_state()),
        record=empty_record(),
        ours_drives=jnp.asarray(False),  # SBX's temperature trains the agent
        key="log_ent_coef",
      )

    @staticmethod
    @jax.jit
    def update_temperature(target_entropy, ent_coef_state, entropy):
      pair = ent_coef_state
      client, ours = pair.synced()
      client_next, _ = client_cls.update_temperature(target_entropy, client, entropy)
      ours_next, loss = ours_cls.update_temperature(target_entropy, ours, entropy)
      abs_terms = jnp.abs(entropy) + jnp.abs(ours.target)
      return pair.stepped(client, ours, client_next, ours_next, entropy, target_entropy, abs_terms, 0.0), loss

    def train(self, gradient_steps: int, batch_size: int) -> None:
      super().train(gradient_steps, batch_size)
      self.records.append(jax.device_get(self.ent_coef_state.record))

  return LockstepAgent


class FeaturesSAC(ej_sbx.SAC):
  """The integration's `SAC`, recording the entropy of each temperature step and the state after it."""

  def __init__(self, *args, **kwargs):
    self.records: list[dict] = []
    super().__init__(*args, **kwargs)

  def _setup_model(self) -> None:
    super()._setup_model()
    self.start = self.ent_coef_state
    self.ent_coef_state = Recorded(inner=with_recording(self.start), stat=jnp.zeros(()))

  @staticmethod
  @jax.jit
  def update_temperature(target_entropy, ent_coef_state, entropy):
    inner, loss = ej_sbx.SAC.update_temperature(target_entropy, ent_coef_state.inner, entropy)
    return Recorded(inner=inner, stat=jnp.asarray(entropy, jnp.float32)), loss

  def train(self, gradient_steps: int, batch_size: int) -> None:
    super().train(gradient_steps, batch_size)
    self.records.append(jax.device_get(self.ent_coef_state.trace()))


def make(cls, **kwargs):
  kwargs.setdefault("policy_kwargs", dict(POLICY_KWARGS))  # SB3 adds to the dict it is given
  return cls("MlpPolicy", "Pendulum-v1", learning_starts=LEARNING_STARTS, seed=SEED, **kwargs)


def stacked(records: list[dict], key: str) -> dict[str, np.ndarray]:
  return per_update({k: np.stack([r[k] for r in records]) for k in records[0]}, key)


@pytest.fixture(scope="module")
def lockstep():
  """`agent -> (model, per-update records)`: SBX's training, its temperature driving; each run once per module."""

  @functools.cache
  def run(agent: str):
    model = make(lockstep_class(agent), **AGENT_KWARGS[agent])
    model.learn(LEARNING_STARTS + UPDATES)
    return model, stacked(model.records, "n")

  return run


@pytest.fixture(scope="module")
def features():
  """`FeaturesSAC` trained with a schedule, bounds and the alpha form: `(model, per-update trace)`."""
  model = make(FeaturesSAC, entropy_target=ej.linear_schedule(*SCHEDULE), **FEATURES)
  model.learn(LEARNING_STARTS + FEATURE_UPDATES)
  return model, stacked(model.records, "count")


@functools.cache
def initial_states(agent: str):
  """The alpha states SBX's agent and the class start from."""
  client_cls, ours_cls = AGENTS[agent]
  client = make(client_cls, **AGENT_KWARGS[agent]).ent_coef_state
  client = client.replace(params={"log_ent_coef": strong(client.params["log_ent_coef"])})
  return client, make(ours_cls, **AGENT_KWARGS[agent]).ent_coef_state


def replayed(agent: str, records: dict, target: float) -> dict[str, dict[str, np.ndarray]]:
  """The recorded entropies, open loop, through SBX's own `update_temperature` and the class's, side by side."""
  client_cls, ours_cls = AGENTS[agent]
  client, ours = initial_states(agent)
  client_trace = lambda s: client_state_trace(s, target, "log_ent_coef")
  return replay(
    records["stat"],
    client=(client, lambda s, e: client_cls.update_temperature(target, s, e)[0], client_trace),
    ours=(ours, lambda s, e: ours_cls.update_temperature(target, s, e)[0], state_trace),
  )


def features_replayed(model, entropies) -> dict[str, dict[str, np.ndarray]]:
  """Entropies through the class's `update_temperature` from the features run's initial state, and
  through the core's `continuous_update` from a state the core builds with the same features."""
  core = core_state(optax.adam(model.lr_schedule(1)), "alpha")
  target = model.target_entropy
  return replay(
    entropies,
    ours=(with_recording(model.start), lambda s, e: ej_sbx.SAC.update_temperature(target, s, e)[0], state_trace),
    core=(core, lambda s, e: ej.continuous_update(s, -e[None])[0], state_trace),
  )


def check_sbx_features(model, trace) -> dict:
  entropy = trace["stat"].astype(np.float64)
  closed = {"schedule": schedule_closed_form, "form": "alpha", "n_terms": N_TERMS}
  return check_features(trace, model.start, entropy, np.abs(entropy), **closed, **FEATURES)


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
@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_every_update_matches_sbx(lockstep, agent):
  """SBX's real training; at every update the class's step agrees with SBX's within float32 rounding."""
  model, records = lockstep(agent)
  np.testing.assert_array_equal(records["n"], np.arange(1, UPDATES + 1))
  worst = check_lockstep(records, N_TERMS, model.lr_schedule(1))
  print(agent, "lockstep, largest ratios to the rounding bounds:", worst)
  assert abs(float(records["next_client"][-1] - records["log_alpha"][0])) > 0.1  # not vacuous
  assert np.array_equal(model.ent_coef_state.params["log_ent_coef"], records["next_client"][-1])


@pytest.mark.slow
@pytest.mark.parametrize("agent", sorted(AGENTS))
def test_replay_of_sbx_training_through_the_class_matches(lockstep, agent):
  """SBX's own training's entropies, open loop through SBX's and the class's temperature: the whole state
  within a few ulp at every update."""
  model, records = lockstep(agent)
  runs = replayed(agent, records, model.target_entropy)
  # The record is SBX's: its own method, replayed, retraces its count and log_alpha.
  np.testing.assert_array_equal(runs["client"]["count"], records["count_client"])
  assert np.max(np.abs(runs["client"]["log_alpha"] - records["next_client"])) < 1e-5
  worst = check_replay(runs["client"], runs["ours"], REPLAY_ULPS)
  print(agent, "replay, largest differences in ulp:", worst)
  assert abs(float(records["next_client"][-1])) > 0.1  # alpha travelled from 1


@pytest.mark.slow
def test_schedule_bounds_and_alpha_form_inside_sbx(features):
  """SBX's training with a target schedule, bounds that bind and the alpha-form loss: every
  update's step count, target, gradient and bound against closed forms; the class, fed the
  same entropies, against the core's `continuous_update` from a state the core builds."""
  model, trace = features
  print("features:", check_sbx_features(model, trace))
  runs = features_replayed(model, trace["stat"])
  check_replay(runs["core"], runs["ours"], REPLAY_ULPS)


@pytest.mark.slow
def test_actor_and_critic_read_the_entropy_state_as_sbx_reads_its_own(lockstep):
  """SBX's actor and critic steps: bit-identical outputs from either alpha state."""
  model, _ = lockstep("SAC")
  pair = model.ent_coef_state
  client = pair.client.replace(params={"log_ent_coef": pair.ours.log_alpha})
  ours = pair.ours  # the class's SbxEntropyState, stepped beside SBX's
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


# Last in the file: it clears jax's caches, and what runs after it compiles anew.
@pytest.mark.slow
@pytest.mark.parametrize("mutant", sorted(LIBRARY_MUTANTS))
def test_a_fault_in_the_library_fails_the_checks(lockstep, features, monkeypatch, mutant):
  """The recorded runs replayed through the class with `entropy_jax.apply_gradients` mutated: the checks fail."""
  make_mutant, message = LIBRARY_MUTANTS[mutant]
  model, trace = features
  sac, records = lockstep("SAC")
  jax.clear_caches()  # the class's jitted method was traced with the library as it is
  monkeypatch.setattr(ej, "apply_gradients", make_mutant(ej.apply_gradients))
  try:
    with pytest.raises(AssertionError, match=message):
      if mutant == "moments not stored":
        runs = replayed("SAC", records, sac.target_entropy)
        check_replay(runs["client"], runs["ours"], REPLAY_ULPS)
      else:
        ours = features_replayed(model, trace["stat"])["ours"]
        check_sbx_features(model, {**ours, "stat": trace["stat"]})
  finally:
    monkeypatch.undo()
    jax.clear_caches()
