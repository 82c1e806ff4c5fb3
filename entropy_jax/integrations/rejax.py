"""rejax's SAC with its temperature driven by entropy_jax (rejax 0.1.3).

rejax keeps `log_alpha` in a flax `TrainState`, `ts.alpha_ts`, and updates it
in `SAC.update_alpha(ts, logprob)` with the alpha-form loss
`-alpha * (log pi + target)` (summed over actions, weighted by the policy, for
discrete actions) through the networks' optimizer chain,
`optax.chain(optax.clip(max_grad_norm), optax.adam(learning_rate))`. Its actor
and critic losses read the temperature as `exp(ts.alpha_ts.params["log_alpha"])`.

`EntropySAC` subclasses `rejax.SAC` and changes only that:

- `init_state` returns rejax's train state with an `EntropyState` as
  `alpha_ts` (a `RejaxEntropyState`, which also answers rejax's
  `params["log_alpha"]` read);
- `update_alpha` differentiates `entropy_jax.continuous_loss` /
  `entropy_jax.discrete_loss` and steps with `entropy_jax.apply_gradients`.

With the default fields it reproduces rejax's temperature (loss form,
optimizer chain, initial alpha 1, target). The other fields reach what rejax
has no setting for: bounds, a target schedule, another optimizer or loss form.

Two client-side fixes ship here as well, each opt-in or automatic where rejax
cannot run otherwise:

- gymnax 1.0's `env.step` returns six values (`terminated` and `truncated`
  apart); rejax 0.1.3 unpacks gymnax 0.0.9's five. `EntropySAC.create` wraps
  such an environment in `FiveTupleStep`; `rejax_env` does the same for
  rejax's own `SAC`.
- `stable_log_probs=True` computes rejax's discrete log-probabilities as
  `log_softmax(logits)` instead of `log(softmax(logits))` (see
  `EntropySAC.update_actor`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

import entropy_jax as ej
from entropy_jax.integrations._client import require
from entropy_jax.state import LossForm

#: The rejax version this module is tested with; another one warns once on import.
TESTED_VERSION = "0.1.3"
require("rejax", "rejax", TESTED_VERSION, "entropy_jax.integrations.rejax")
import gymnax  # noqa: E402  (rejax's dependency)
import rejax  # noqa: E402  (after the check, which names the extra when it is missing)

__all__ = [
  "TESTED_VERSION",
  "EntropySAC",
  "FiveTupleStep",
  "RejaxEntropyState",
  "as_rejax_state",
  "five_tuple_env",
  "rejax_env",
]

Target = float | Callable[[jax.Array], jax.Array]


class RejaxEntropyState(ej.EntropyState):
  """An `EntropyState` that rejax's losses read as they read their alpha `TrainState`.

  rejax's `update_actor` and `update_critic` compute the temperature as
  `exp(ts.alpha_ts.params["log_alpha"])`. Every entropy_jax function takes and
  returns this class unchanged.
  """

  @property
  def params(self) -> dict[str, jax.Array]:
    """`log_alpha` in the layout of rejax's alpha `TrainState`, read as `params["log_alpha"]`."""
    return {"log_alpha": self.log_alpha}


def as_rejax_state(state: ej.EntropyState) -> RejaxEntropyState:
  """The same fields (one state, or a stacked population) as a `RejaxEntropyState`."""
  return RejaxEntropyState(**{f.name: getattr(state, f.name) for f in dataclasses.fields(state)})


class EntropySAC(rejax.SAC):
  """`rejax.SAC` whose temperature is an `EntropyState` stepped by entropy_jax.

  The fields below come besides rejax's own; all are optional, and their
  defaults reproduce rejax's temperature.

  Attributes:
    alpha_optimizer: the optax transformation of `log_alpha`; `None` uses
      rejax's chain, `optax.chain(optax.clip(max_grad_norm),
      optax.adam(learning_rate))`.
    initial_alpha: the starting temperature (rejax: 1).
    min_alpha: optional lower bound on alpha (rejax has none).
    max_alpha: optional upper bound on alpha.
    entropy_target: the target entropy, a number or a schedule of the update
      count; `None` uses rejax's `target_entropy` (`-action_dim`, or
      `target_entropy_ratio * log(A)` for `A` discrete actions; rejax's ratio
      is 0.98, entropy_jax's `discrete_target(A)` is 0.6 log A).
    alpha_loss_form: `"alpha"` (rejax's) or `"log"`.
    stable_log_probs: discrete actions only: compute the log-probabilities of
      the actor and critic losses as `log_softmax(logits)` (rejax computes
      `log(softmax(logits))`, which is `-inf` where a probability underflows).
  """

  alpha_optimizer: optax.GradientTransformation | None = struct.field(pytree_node=False, default=None)
  initial_alpha: float = struct.field(pytree_node=False, default=1.0)
  min_alpha: float | None = struct.field(pytree_node=False, default=None)
  max_alpha: float | None = struct.field(pytree_node=False, default=None)
  entropy_target: Target | None = struct.field(pytree_node=False, default=None)
  alpha_loss_form: LossForm = struct.field(pytree_node=False, default="alpha")
  stable_log_probs: bool = struct.field(pytree_node=False, default=False)

  @classmethod
  def create_env(cls, config: dict[str, Any]) -> tuple[Any, Any]:
    """rejax's environment set-up, wrapped in `FiveTupleStep` for gymnax >= 1.0."""
    env, env_params = super().create_env(config)
    return five_tuple_env(env, env_params), env_params

  def init_entropy_state(self) -> RejaxEntropyState:
    """The `EntropyState` this agent starts from."""
    tx = self.alpha_optimizer
    if tx is None:  # rejax's chain, the one every TrainState of its SAC uses
      tx = optax.chain(optax.clip(self.max_grad_norm), optax.adam(learning_rate=self.learning_rate))
    target = self.target_entropy if self.entropy_target is None else self.entropy_target
    state = ej.init_entropy_state(
      target,
      initial_alpha=self.initial_alpha,
      optimizer=tx,
      min_alpha=self.min_alpha,
      max_alpha=self.max_alpha,
      loss_form=self.alpha_loss_form,
    )
    return as_rejax_state(state)

  def init_state(self, rng: jax.Array) -> Any:
    """rejax's initial train state, with an `EntropyState` as `alpha_ts`.

    rejax's own alpha `TrainState` takes no randomness, so every other field
    is the one `rejax.SAC.init_state(rng)` returns, bit for bit.
    """
    return super().init_state(rng).replace(alpha_ts=self.init_entropy_state())

  def alpha_gradient(self, state: ej.EntropyState, logprob: jax.Array) -> jax.Array:
    """`d loss / d log_alpha` of entropy_jax's temperature loss.

    Args:
      state: the temperature state; its `target` and `loss_form` are used.
      logprob: `[B]` log-probs of actions sampled from the policy before its
        update (continuous), or `[B, A]` log action probabilities (discrete),
        as rejax's `update_actor` returns them.

    Returns:
      A scalar gradient.
    """

    def loss(log_alpha):
      if self.discrete:
        return ej.discrete_loss(log_alpha, jnp.exp(logprob), logprob, state.target, form=state.loss_form)
      return ej.continuous_loss(log_alpha, logprob, state.target, form=state.loss_form)

    return jax.grad(loss)(state.log_alpha)

  def update_alpha(self, ts: Any, logprob: jax.Array) -> Any:
    """rejax's temperature step, taken by entropy_jax: `apply_gradients(alpha_gradient)`."""
    state = ts.alpha_ts
    return ts.replace(alpha_ts=ej.apply_gradients(state, self.alpha_gradient(state, logprob)))

  # -------------------------------------------- discrete log-probabilities --
  # rejax's discrete actor and critic losses take `logprob = log(probs)` with
  # `probs = softmax(logits)`, then `sum_a exp(logprob) * (alpha * logprob - q)`.
  # Once an action's probability underflows float32 (a logit gap above ~104,
  # which a near-deterministic policy at a low alpha reaches), `log(0) = -inf`
  # and `exp(-inf) * (-inf) = 0 * inf` is NaN; the gradient of `log` at 0 is
  # infinite too, and the networks turn NaN for good. `log_softmax(logits)` is
  # the same value wherever `probs > 0`, and finite where it underflows, so
  # that action's term is `0 * finite = 0`, its limit. That one expression is
  # the whole change below; the rest is rejax 0.1.3's `update_actor` and
  # `update_critic`, discrete branch, as written there.

  def _log_probs(self, params: Any, obs: jax.Array) -> jax.Array:
    return jax.nn.log_softmax(self.actor.apply(params, obs, method="_action_dist").logits)

  def update_actor(self, ts: Any, mb: Any) -> tuple[Any, jax.Array]:
    """rejax's actor step; with `stable_log_probs` and discrete actions, from `log_softmax`."""
    if not (self.stable_log_probs and self.discrete):
      return super().update_actor(ts, mb)
    rng, _ = jax.random.split(ts.rng)
    ts = ts.replace(rng=rng)
    alpha = jnp.exp(ts.alpha_ts.params["log_alpha"])

    def actor_loss_fn(params):
      logprob = self._log_probs(params, mb.obs)
      qs = self.vmap_critic(ts.critic_ts.params, mb.obs)
      loss_pi = jnp.sum(jnp.exp(logprob) * (alpha * logprob - qs.min(axis=0)), axis=1)
      return loss_pi.mean(), logprob

    grads, logprob = jax.grad(actor_loss_fn, has_aux=True)(ts.actor_ts.params)
    return ts.replace(actor_ts=ts.actor_ts.apply_gradients(grads=grads)), logprob

  def update_critic(self, ts: Any, mb: Any) -> Any:
    """rejax's critic step; with `stable_log_probs` and discrete actions, from `log_softmax`."""
    if not (self.stable_log_probs and self.discrete):
      return super().update_critic(ts, mb)
    rng, _ = jax.random.split(ts.rng)
    ts = ts.replace(rng=rng)
    alpha = jnp.exp(ts.alpha_ts.params["log_alpha"])

    def critic_loss_fn(params):
      logprob = self._log_probs(ts.actor_ts.params, mb.next_obs)
      q_next = jnp.min(self.vmap_critic(ts.critic_target_params, mb.next_obs), axis=0)
      q_target = jnp.sum(jnp.exp(logprob) * (q_next - alpha * logprob), axis=1)
      take = lambda p: self.critic.apply(p, mb.obs, mb.action, method="take")
      qs = jax.vmap(take)(params)
      target = mb.reward + self.gamma * (1 - mb.done) * q_target
      return jax.vmap(lambda q: optax.l2_loss(q, target))(qs).sum(axis=0).mean()

    grads = jax.grad(critic_loss_fn)(ts.critic_ts.params)
    return ts.replace(critic_ts=ts.critic_ts.apply_gradients(grads=grads))


# -------------------------------------------------------------- environments --


class FiveTupleStep:
  """A gymnax environment whose `step` returns rejax 0.1.3's five values.

  gymnax 1.0's `step` returns `(obs, state, reward, terminated, truncated,
  info)`; rejax 0.1.3 (its training's `collect_transitions` and its
  `evaluate`) unpacks gymnax 0.0.9's `(obs, state, reward, done, info)`. This
  wrapper returns `done = terminated | truncated`, gymnax 0.0.9's `done`;
  every other attribute is the wrapped environment's.
  """

  def __init__(self, env: Any):
    self.env = env

  def __getattr__(self, name: str) -> Any:
    if name == "env":  # not yet set (copy.deepcopy builds without __init__)
      raise AttributeError(name)
    return getattr(self.env, name)

  def reset(self, key: jax.Array, params: Any = None) -> Any:
    return self.env.reset(key, params)

  def step(self, key: jax.Array, state: Any, action: Any, params: Any = None) -> Any:
    obs, state, reward, terminated, truncated, info = self.env.step(key, state, action, params)
    return obs, state, reward, jnp.logical_or(terminated, truncated), info


def five_tuple_env(env: Any, env_params: Any) -> Any:
  """`env`, wrapped in `FiveTupleStep` if its `step` returns six values."""
  key = jax.random.key(0)
  _, state = env.reset(key, env_params)
  action = env.action_space(env_params).sample(key)
  if len(jax.eval_shape(env.step, key, state, action, env_params)) == 6:
    return FiveTupleStep(env)
  return env


def rejax_env(name: str, **kwargs: Any) -> tuple[Any, Any]:
  """`gymnax.make(name, **kwargs)`, its step returning rejax's five values.

  Returns:
    `(env, env_params)`, for `rejax.SAC.create(env=env, env_params=env_params)`.
  """
  env, params = gymnax.make(name, **kwargs)
  return five_tuple_env(env, params), params
