"""rejax's SAC with its temperature driven by entropy_jax.

rejax (`rejax==0.1.3`) keeps `log_alpha` in a flax `TrainState` named
`alpha_ts` and updates it in `SAC.update_alpha(ts, logprob)` with the
alpha-form loss `-alpha * (log pi + target)` (summed over actions, weighted by
the policy, for discrete actions), through the same optimizer chain as the
networks, `optax.chain(optax.clip(max_grad_norm), optax.adam(learning_rate))`.
Its actor and critic losses read the temperature as
`exp(ts.alpha_ts.params["log_alpha"])`.

`EntropySAC` subclasses `rejax.SAC` and changes two things only:

- `initialize_network_params` (rejax's init hook) puts an `EntropyState` where
  rejax put its alpha `TrainState`: `ts.alpha_ts` is a `RejaxEntropyState`,
  an `EntropyState` that also answers rejax's `params["log_alpha"]` read;
- `update_alpha` differentiates `entropy_jax.continuous_loss` /
  `entropy_jax.discrete_loss` and steps with `entropy_jax.apply_gradients`
  (what `continuous_update` / `discrete_update` fuse; the gradient is a method
  of its own, `alpha_gradient`, so that it can be checked against rejax's).

rejax's training loop, networks, losses, replay buffer and `vmap(train)` are
untouched. With the default fields the swap reproduces rejax's own
temperature (same loss form, optimizer chain, initial alpha and target); the
fields `alpha_optimizer`, `initial_alpha`, `min_alpha`, `max_alpha`,
`entropy_target` and `alpha_loss_form` reach what rejax has no setting for.

rejax 0.1.3 unpacks five values from a gymnax `env.step` (gymnax 0.0.9);
gymnax 1.0 returns six (`terminated` and `truncated` apart). `rejax_env` wraps
such an environment so that it returns rejax's five, with
`done = terminated | truncated` as gymnax 0.0.9 computes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gymnax
import jax
import jax.numpy as jnp
import optax
import rejax
from flax import struct
from rejax.algos.algorithm import register_init

import entropy_jax as ej

Target = float | Callable[[jax.Array], jax.Array]


class RejaxEntropyState(ej.EntropyState):
  """An `EntropyState` that rejax's losses can read as they read a TrainState.

  rejax's `update_actor` and `update_critic` compute the temperature as
  `exp(ts.alpha_ts.params["log_alpha"])`; `params` gives them `log_alpha`.
  Every entropy_jax function takes and returns this class unchanged.
  """

  @property
  def params(self) -> dict[str, jax.Array]:
    """`{"log_alpha": log_alpha}`, the layout of rejax's alpha `TrainState`."""
    return {"log_alpha": self.log_alpha}


def as_rejax_state(state: ej.EntropyState) -> RejaxEntropyState:
  """The same fields (a single state or a stacked population) as a `RejaxEntropyState`."""
  return RejaxEntropyState(**{f.name: getattr(state, f.name) for f in dataclasses.fields(state)})


class EntropySAC(rejax.SAC):
  """`rejax.SAC` whose temperature is an `EntropyState` updated by entropy_jax.

  Attributes (besides rejax's own):
    alpha_optimizer: the optax transformation of `log_alpha`; `None` uses
      rejax's chain, `optax.chain(optax.clip(max_grad_norm),
      optax.adam(learning_rate))`.
    initial_alpha: the starting temperature (rejax starts at 1).
    min_alpha, max_alpha: optional bounds on alpha (rejax has none).
    entropy_target: the target entropy, a number or a schedule of the update
      count; `None` uses rejax's `target_entropy` (`-action_dim`, or
      `target_entropy_ratio * log(A)` for `A` discrete actions).
    alpha_loss_form: `"alpha"` (rejax's) or `"log"`.
  """

  alpha_optimizer: optax.GradientTransformation | None = struct.field(pytree_node=False, default=None)
  initial_alpha: float = struct.field(pytree_node=False, default=1.0)
  min_alpha: float | None = struct.field(pytree_node=False, default=None)
  max_alpha: float | None = struct.field(pytree_node=False, default=None)
  entropy_target: Target | None = struct.field(pytree_node=False, default=None)
  alpha_loss_form: str = struct.field(pytree_node=False, default="alpha")

  def init_entropy_state(self) -> RejaxEntropyState:
    """The `EntropyState` this agent starts from (also used by `initialize_network_params`)."""
    tx = self.alpha_optimizer
    if tx is None:  # rejax's own chain for every TrainState, alpha's included
      tx = optax.chain(optax.clip(self.max_grad_norm), optax.adam(learning_rate=self.learning_rate))
    target = self.target_entropy if self.entropy_target is None else self.entropy_target
    return as_rejax_state(
      ej.init_entropy_state(
        target,
        initial_alpha=self.initial_alpha,
        optimizer=tx,
        min_alpha=self.min_alpha,
        max_alpha=self.max_alpha,
        loss_form=self.alpha_loss_form,
      )
    )

  @register_init
  def initialize_network_params(self, rng: jax.Array) -> dict[str, Any]:
    """rejax's networks and optimizers, with an `EntropyState` as `alpha_ts`."""
    values = super().initialize_network_params(rng)
    values["alpha_ts"] = self.init_entropy_state()
    return values

  def alpha_gradient(self, state: ej.EntropyState, logprob: jax.Array) -> jax.Array:
    """`d loss / d log_alpha` of entropy_jax's temperature loss, as rejax calls it.

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
    """rejax's temperature step, done by entropy_jax: `apply_gradients(alpha_gradient)`.

    Args:
      ts: rejax's train state; `ts.alpha_ts` is a `RejaxEntropyState`.
      logprob: as for `alpha_gradient`.

    Returns:
      `ts` with the updated `alpha_ts`.
    """
    state = ts.alpha_ts
    return ts.replace(alpha_ts=ej.apply_gradients(state, self.alpha_gradient(state, logprob)))


def log_alpha(alpha_ts: Any) -> jax.Array:
  """`log_alpha` of either agent's `ts.alpha_ts` (rejax's TrainState or ours)."""
  return alpha_ts.params["log_alpha"]


# ------------------------------------------------------------ environments --


class FiveTupleStep:
  """A gymnax environment whose `step` returns rejax 0.1.3's five values.

  `step` returns `(obs, state, reward, done, info)` with
  `done = terminated | truncated`, which is what gymnax 0.0.9 returns as
  `done`; every other attribute is the wrapped environment's.
  """

  def __init__(self, env: Any):
    self.env = env

  def __getattr__(self, name: str) -> Any:
    if name == "env":  # not yet set (copy.deepcopy builds without __init__)
      raise AttributeError(name)
    return getattr(self.env, name)

  def reset(self, key: jax.Array, params: Any = None):
    return self.env.reset(key, params)

  def step(self, key: jax.Array, state: Any, action: Any, params: Any = None):
    obs, state, reward, terminated, truncated, info = self.env.step(key, state, action, params)
    return obs, state, reward, jnp.logical_or(terminated, truncated), info


def rejax_env(name: str, **kwargs: Any) -> tuple[Any, Any]:
  """`gymnax.make(name)`, wrapped in `FiveTupleStep` when its step returns six values.

  Returns:
    `(env, env_params)`, to pass to `SAC.create(env=env, env_params=env_params)`.
  """
  env, params = gymnax.make(name, **kwargs)
  key = jax.random.key(0)
  _, state = env.reset(key, params)
  action = env.action_space(params).sample(key)
  if len(jax.eval_shape(env.step, key, state, action, params)) == 6:
    env = FiveTupleStep(env)
  return env, params
