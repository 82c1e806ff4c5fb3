"""Discrete SAC on gymnax CartPole-v1, alpha tuned by entropy_jax.

Discrete SAC (Christodoulou 2019, "Soft Actor-Critic for Discrete Action
Settings", arXiv:1910.07207): the critics output Q for every action, and the
soft value, the actor loss and the temperature loss take the policy's exact
expectation over actions instead of a sample. Twin critics with
Polyak-averaged targets (Fujimoto et al. 2018), a distrax Categorical policy,
a flashbax replay buffer, and the temperature update
`entropy_jax.discrete_update` fused into the one jitted update step.
Environment steps and updates run in `lax.scan` on device; a population is the
same code under `vmap`, each member with its own seed, target entropy and
alpha learning rate.

Run `python examples/sac_discrete.py --help`.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from typing import Any, NamedTuple, Optional, Sequence

if __package__ in (None, ""):  # run as a script: make `examples` importable
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import distrax
import flax.linen as nn
import gymnax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from flax.training.train_state import TrainState

from entropy_jax.state import EntropyState, init_population
from entropy_jax.targets import discrete_target
from entropy_jax.update import discrete_update
from examples import common
from examples.common import EpisodeStats, Transition

RETURN_BAR = 475.0  # CartPole-v1's "solved" threshold


class Config(NamedTuple):
  """Hyperparameters of one agent (shared by all population members)."""

  env_name: str = "CartPole-v1"
  hidden: tuple[int, ...] = (64, 64)
  num_envs: int = 2              # environments per member, stepped together
  batch_size: int = 256          # 128 learned as fast but collapsed late more often (README)
  actor_lr: float = 1e-3
  critic_lr: float = 2e-3
  gamma: float = 0.99
  tau: float = 0.05
  buffer_size: int = 50_000
  learning_starts: int = 1_000   # env steps per member of uniform-random actions
  initial_alpha: float = 0.1
  max_alpha: Optional[float] = 0.2  # upper bound on alpha (None: unbounded)


# ----------------------------------------------------------------- networks --

class Actor(nn.Module):
  """`obs [B, O] -> Categorical` over `A` actions."""

  hidden: Sequence[int]
  num_actions: int

  @nn.compact
  def __call__(self, obs: jax.Array) -> distrax.Categorical:
    return distrax.Categorical(logits=common.MLP(self.hidden, self.num_actions)(obs))


class TwinQ(nn.Module):
  """`obs [B, O] -> Q [2, B, A]`: two independent critics, a value per action."""

  hidden: Sequence[int]
  num_actions: int

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    return jnp.stack([common.MLP(self.hidden, self.num_actions)(obs) for _ in range(2)])


# -------------------------------------------------------------------- agent --

class Agent(struct.PyTreeNode):
  """Everything one discrete SAC learner carries through `lax.scan`."""

  actor: TrainState
  critic: TrainState
  target_critic: Any            # critic parameters, Polyak-averaged
  entropy: EntropyState
  buffer: Any                   # flashbax buffer state
  env_state: Any                # [E] stacked gymnax states
  obs: jax.Array                # [E, obs_dim]
  stats: EpisodeStats           # `current` is [E]; the ring is shared by the E envs
  key: jax.Array
  steps: jax.Array              # [] int32 environment steps taken (all E envs)


OWN_FIELDS = ("buffer", "env_state", "obs", "stats", "key", "steps")


def record_episodes(stats: EpisodeStats, reward: jax.Array, done: jax.Array) -> EpisodeStats:
  """`EpisodeStats.record` for `E` environments: `stats.current` is `[E]`.

  Finished episodes are filed into the one shared ring in env order, so
  `mean_recent()` is the mean over the member's last K episodes, whichever
  environment ran them.
  """
  current = []
  for e in range(reward.shape[0]):  # static and small
    one = stats.replace(current=stats.current[e]).record(reward[e], done[e])
    current.append(one.current)
    stats = one.replace(current=stats.current)
  return stats.replace(current=jnp.stack(current))


class DiscreteSAC:
  """The functions of a discrete-action SAC agent for one gymnax env.

  The object only holds static things (config, env, networks, buffer); all
  state is in `Agent`. Each method is a pure function of its arguments, so
  `jax.vmap(sac.train_chunk)` trains a population. Step counts are
  environment steps per member; each scan iteration steps `num_envs`
  environments and makes one gradient update.
  """

  def __init__(self, cfg: Config = Config()):
    self.cfg = cfg
    self.env, self.env_params = gymnax.make(cfg.env_name)
    self.num_actions = int(self.env.action_space(self.env_params).n)
    self.obs_dim = int(np.prod(self.env.observation_space(self.env_params).shape))
    self.actor = Actor(cfg.hidden, self.num_actions)
    self.critic = TwinQ(cfg.hidden, self.num_actions)
    self.buffer = common.make_buffer(cfg.buffer_size, cfg.batch_size)

  def default_target(self, ratio: float = 0.98) -> float:
    """`ratio * log(A)` (Christodoulou 2019 uses 0.98; see `default_population`)."""
    return discrete_target(self.num_actions, ratio)

  # ------------------------------------------------------------------ init --
  def init(self, key: jax.Array, entropy: EntropyState) -> Agent:
    """A fresh agent with the given entropy state (one member of a population)."""
    cfg = self.cfg
    k_actor, k_critic, k_env, key = jax.random.split(key, 4)
    obs0 = jnp.zeros((1, self.obs_dim))
    actor = TrainState.create(
        apply_fn=self.actor.apply, params=self.actor.init(k_actor, obs0),
        tx=optax.adam(cfg.actor_lr),
    )
    critic_params = self.critic.init(k_critic, obs0)
    critic = TrainState.create(
        apply_fn=self.critic.apply, params=critic_params, tx=optax.adam(cfg.critic_lr),
    )
    obs, env_state = jax.vmap(self.env.reset, (0, None))(
        jax.random.split(k_env, cfg.num_envs), self.env_params
    )
    dummy = Transition(
        obs=jnp.zeros(self.obs_dim), action=jnp.zeros((), jnp.int32),
        reward=jnp.zeros(()), next_obs=jnp.zeros(self.obs_dim), terminated=jnp.zeros(()),
    )
    stats = EpisodeStats.create()
    return Agent(
        actor=actor, critic=critic, target_critic=critic_params, entropy=entropy,
        buffer=self.buffer.init(dummy), env_state=env_state, obs=obs,
        stats=stats.replace(current=jnp.zeros((cfg.num_envs,), jnp.float32)),
        key=key, steps=jnp.zeros((), jnp.int32),
    )

  def init_population(
      self, key: jax.Array, targets: Sequence[float], alpha_lrs: Sequence[float]
  ) -> Agent:
    """`N` agents with their own seeds, `[N]` target entropies and alpha learning rates."""
    targets = jnp.asarray(targets, jnp.float32)
    entropy = init_population(
        targets, initial_alpha=self.cfg.initial_alpha, max_alpha=self.cfg.max_alpha,
        optimizer=optax.inject_hyperparams(optax.adam)(learning_rate=3e-4),
        learning_rate=jnp.asarray(alpha_lrs, jnp.float32),
    )
    keys = jax.random.split(key, targets.shape[0])
    return jax.vmap(self.init)(keys, entropy)

  # ------------------------------------------------------------ acting --
  def env_step(self, agent: Agent, random_action: bool) -> Agent:
    """One step of each of the member's `E` environments, stored in the buffer."""
    n_envs = self.cfg.num_envs
    key, k_act, k_env = jax.random.split(agent.key, 3)
    if random_action:
      action = jax.random.randint(k_act, (n_envs,), 0, self.num_actions)
    else:
      action = self.actor.apply(agent.actor.params, agent.obs).sample(seed=k_act)
    action = action.astype(jnp.int32)
    obs, env_state, reward, terminated, truncated, info = jax.vmap(
        self.env.step, (0, 0, 0, None)
    )(jax.random.split(k_env, n_envs), agent.env_state, action, self.env_params)
    transitions = Transition(
        obs=agent.obs, action=action, reward=reward.astype(jnp.float32),
        next_obs=info["final_observation"], terminated=terminated.astype(jnp.float32),
    )
    buffer = agent.buffer
    for e in range(n_envs):
      buffer = self.buffer.add(buffer, jax.tree.map(lambda x: x[e], transitions))
    return agent.replace(
        buffer=buffer, env_state=env_state, obs=obs,
        stats=record_episodes(agent.stats, reward, terminated | truncated), key=key,
        steps=agent.steps + n_envs,
    )

  # ------------------------------------------------------------ learning --
  def update(
      self, agent: Agent, batch: Transition, tune_alpha: bool = True
  ) -> tuple[Agent, dict[str, jax.Array]]:
    """One discrete SAC update on a `[B]` batch: critics, actor, then alpha.

    Christodoulou 2019, with the exact expectation over the `A` actions:
      V(s')  = sum_a pi(a|s') [min_i Q'_i(s', a) - alpha log pi(a|s')]   (eq. 10)
      J_Q    = 1/2 sum_i mean_b (Q_i(s_b, a_b) - r_b - gamma (1 - d_b) V(s'_b))^2
      J_pi   = mean_b sum_a pi(a|s_b) [alpha log pi(a|s_b) - min_i Q_i(s_b, a)]  (eq. 12)
      J_alpha: `entropy_jax.discrete_update(pi(.|s_b), log pi(.|s_b))`     (eq. 11)
    All three use the alpha from before this step.

    Args:
      agent: the learner.
      batch: a `Transition` with a leading batch axis `[B]`.
      tune_alpha: False skips the entropy update (the benchmark times the
        rest of the step with it).

    Returns:
      `(agent, metrics)` with scalar metrics.
    """
    cfg = self.cfg
    alpha = agent.entropy.alpha

    next_pi = self.actor.apply(agent.actor.params, batch.next_obs)
    next_q = jnp.min(self.critic.apply(agent.target_critic, batch.next_obs), axis=0)
    next_v = jnp.sum(next_pi.probs * (next_q - alpha * next_pi.logits), axis=-1)
    y = jax.lax.stop_gradient(batch.reward + cfg.gamma * (1.0 - batch.terminated) * next_v)

    def critic_loss(params):
      q = self.critic.apply(params, batch.obs)  # [2, B, A]
      q_a = jnp.take_along_axis(q, batch.action[None, :, None], axis=-1)[..., 0]
      return 0.5 * jnp.sum(jnp.mean((q_a - y) ** 2, axis=-1))

    q_loss, q_grads = jax.value_and_grad(critic_loss)(agent.critic.params)
    critic = agent.critic.apply_gradients(grads=q_grads)
    q_min = jnp.min(self.critic.apply(critic.params, batch.obs), axis=0)  # [B, A]

    def actor_loss(params):
      pi = self.actor.apply(params, batch.obs)
      # distrax normalises: `pi.logits` are the log-probabilities.
      loss = jnp.mean(jnp.sum(pi.probs * (alpha * pi.logits - q_min), axis=-1))
      return loss, (pi.probs, pi.logits)

    (pi_loss, (probs, log_probs)), pi_grads = jax.value_and_grad(actor_loss, has_aux=True)(
        agent.actor.params
    )
    actor = agent.actor.apply_gradients(grads=pi_grads)

    # Temperature: entropy_jax's fused loss + gradient + optax step.
    if tune_alpha:
      entropy, ent_metrics = discrete_update(agent.entropy, probs, log_probs)
    else:
      entropy = agent.entropy
      ent_metrics = {
          "alpha": alpha, "entropy": -jnp.mean(jnp.sum(probs * log_probs, axis=-1))
      }

    target_critic = optax.incremental_update(critic.params, agent.target_critic, cfg.tau)
    agent = agent.replace(
        actor=actor, critic=critic, target_critic=target_critic, entropy=entropy
    )
    metrics = {
        "critic_loss": q_loss, "actor_loss": pi_loss,
        "alpha": ent_metrics["alpha"], "entropy": ent_metrics["entropy"],
    }
    return agent, metrics

  def train_step(self, agent: Agent, tune_alpha: bool = True) -> tuple[Agent, dict]:
    """One policy step in each environment, then one update from the buffer."""
    agent = self.env_step(agent, random_action=False)
    key, k_sample = jax.random.split(agent.key)
    batch = self.buffer.sample(agent.buffer, k_sample).experience
    return self.update(agent.replace(key=key), batch, tune_alpha)

  def evaluate(self, agent: Agent, key: jax.Array, episodes: int = 10,
               policy: str = "greedy") -> jax.Array:
    """`[episodes]` returns of full episodes from fresh resets (no learning).

    `policy`: `"greedy"` takes the most probable action, `"sample"` samples
    the policy, `"random"` acts uniformly at random (the baseline).
    """
    length = self.env_params.max_steps_in_episode

    def episode(k):
      k_reset, k_run = jax.random.split(k)
      obs, env_state = self.env.reset(k_reset, self.env_params)

      def body(carry, k_t):
        obs, env_state, total, alive = carry
        k_act, k_env = jax.random.split(k_t)
        pi = self.actor.apply(agent.actor.params, obs)
        action = {
            "greedy": lambda: pi.mode(),
            "sample": lambda: pi.sample(seed=k_act),
            "random": lambda: jax.random.randint(k_act, (), 0, self.num_actions),
        }[policy]()
        obs, env_state, reward, terminated, truncated, _ = self.env.step(
            k_env, env_state, action, self.env_params
        )
        total = total + alive * reward
        return (obs, env_state, total, alive * (1.0 - (terminated | truncated))), None

      init = (obs, env_state, jnp.zeros(()), jnp.ones(()))
      (_, _, total, _), _ = jax.lax.scan(body, init, jax.random.split(k_run, length))
      return total

    return jax.vmap(episode)(jax.random.split(key, episodes))

  # ------------------------------------------------------------- chunks --
  def warmup(self, agent: Agent) -> Agent:
    """`cfg.learning_starts` uniform-random env steps (no updates), in one scan."""
    def body(a, _):
      return self.env_step(a, random_action=True), None

    n = self.cfg.learning_starts // self.cfg.num_envs
    agent, _ = jax.lax.scan(body, agent, None, length=n)
    return agent

  def train_chunk(self, agent: Agent, length: int) -> tuple[Agent, dict]:
    """`length` env steps (`length // num_envs` train steps) in one scan."""
    if length % self.cfg.num_envs:
      raise ValueError(
          f"train_chunk: length={length} env steps must be a multiple of"
          f" num_envs={self.cfg.num_envs}."
      )
    alpha_before = agent.entropy.alpha
    agent, metrics = jax.lax.scan(
        lambda a, _: self.train_step(a), agent, None, length=length // self.cfg.num_envs
    )
    return agent, self.summary(agent, metrics, alpha_before)

  @staticmethod
  def summary(agent: Agent, metrics: Optional[dict] = None,
              alpha_before: Optional[jax.Array] = None) -> dict:
    """Scalars for logging: recent return, alpha, entropy, target, steps.

    `alpha_rises` / `alpha_falls` count the updates in the chunk that raised
    / lowered alpha (so a run's alpha is monotone iff one of them sums to 0).
    """
    out = {
        "return": agent.stats.mean_recent(),
        "episodes": agent.stats.count,
        "alpha": agent.entropy.alpha,
        "target": agent.entropy.target,
        "steps": agent.steps,
        "alpha_lr": common.injected(agent.entropy.opt_state, "learning_rate"),
        "alpha_rises": jnp.zeros((), jnp.int32),
        "alpha_falls": jnp.zeros((), jnp.int32),
    }
    if metrics is not None:
      out["entropy"] = jnp.mean(metrics["entropy"])
      out["critic_loss"] = jnp.mean(metrics["critic_loss"])
      alphas = jnp.concatenate([alpha_before[None], metrics["alpha"]])
      out["alpha_rises"] = jnp.sum(jnp.diff(alphas) > 0).astype(jnp.int32)
      out["alpha_falls"] = jnp.sum(jnp.diff(alphas) < 0).astype(jnp.int32)
    return out


# ------------------------------------------------------------ population --

def default_population(sac: DiscreteSAC, n: int) -> tuple[np.ndarray, np.ndarray]:
  """Per-member `[N]` targets and alpha learning rates.

  Targets are `ratio * log(A)` with ratios spread evenly over [0.05, 0.25]
  (not the paper's 0.98: see the README, "Discrete SAC on CartPole-v1"), alpha learning
  rates log-uniformly from 3e-4 to 3e-3.
  """
  ratios = np.linspace(0.05, 0.25, n) if n > 1 else np.array([0.15])
  targets = np.array([sac.default_target(float(r)) for r in ratios], np.float32)
  lrs = common.log_uniform_spread(3e-4, 3e-3, n)
  return targets, lrs


# The shared loop (examples/common.py), with this agent's defaults.
train_population = functools.partial(
    common.train_population, chunk=1_000, desc="discrete SAC CartPole"
)
report = common.report


def main(argv=None):
  parser = argparse.ArgumentParser(
      description="Train a vmapped population of discrete SAC agents on gymnax"
      " CartPole-v1, alpha tuned by entropy_jax, and print each member's final return."
  )
  parser.add_argument("--members", type=int, default=8, help="population size (default 8)")
  parser.add_argument("--steps", type=int, default=50_000,
                      help="environment steps per member (default 50000)")
  parser.add_argument("--seed", type=int, default=0, help="PRNG seed (default 0)")
  parser.add_argument("--chunk", type=int, default=1_000,
                      help="env steps per jitted scan / progress tick (default 1000)")
  parser.add_argument("--out", default=None, help="optional folder for history.npz and PNGs")
  args = parser.parse_args(argv)

  sac = DiscreteSAC()
  targets, lrs = default_population(sac, args.members)
  with common.Timer() as t:
    population, history = train_population(
        sac, jax.random.key(args.seed), targets, lrs, args.steps, chunk=args.chunk
    )
  common.print_table(["member", "return(last10)", "alpha", "entropy", "target"], report(history))
  final = history["return"][-1]
  greedy = jax.vmap(lambda a, k: sac.evaluate(a, k))(
      population, jax.random.split(jax.random.key(args.seed + 1), args.members)
  )
  print("greedy-policy evaluation (10 episodes each):", np.round(np.mean(greedy, axis=1), 1))
  print(f"{int(np.sum(final >= RETURN_BAR))}/{args.members} members at mean return"
        f" >= {RETURN_BAR:.0f} over their last 10 episodes after {args.steps} steps;"
        f" wall {t.seconds:.0f} s")
  if args.out:
    os.makedirs(args.out, exist_ok=True)
    np.savez(os.path.join(args.out, "history.npz"), **history)
    steps = history["steps"][:, 0]
    for name, logy in (("return", False), ("alpha", True), ("entropy", False)):
      common.plot_members(
          steps, history[name], title=f"discrete SAC on CartPole-v1: {name}", ylabel=name,
          path=os.path.join(args.out, f"{name}.png"), logy=logy,
          hline=RETURN_BAR if name == "return" else None,
          dashed=history["target"] if name == "entropy" else None,
      )


if __name__ == "__main__":
  main()
