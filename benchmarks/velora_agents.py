"""Velora's own agents, one whole training step, with Velora's temperature modules and with the compat classes.

`NeuroFlowCT` (Pendulum-v1, continuous) and `NeuroFlow` (CartPole-v1, discrete) from `velora.models.nf.agent`,
each built twice from the same seed: with Velora's `EntropyModule`s, and with `entropy_jax.compat`'s swapped in
by name (as `tests/test_compat_velora_agents.py` does). Velora's discrete default target is negative, so its
`NeuroFlow` is given the port's default (as that test does): both sides then train alike and do the same work.
Side by side in one process:

* the agent's `_train_step`, what `train()` runs once per environment step: a replay sample, the critics', the
  actor's and the temperature's updates, and the target networks;
* the temperature module alone, called as that step calls it: `alpha` read twice (the critics' target and the
  actor's loss), `compute_loss` on the step's log-probabilities, `gradient_step`, the loss detached;
* the same module call right after a training step of another agent, as it runs inside `_train_step`: between
  two temperature updates torch's work runs for milliseconds, and what it leaves in the caches is its own.

Each configuration runs in a process of its own: JAX's CPU async dispatch on (JAX's default) and off
(`jax_cpu_enable_async_dispatch=False`, set before JAX's first computation, as docs/velora.md advises for a
PyTorch loop). torch runs on `--torch-threads` threads (default 1, as the tests run Velora): on a small shared
machine torch's OpenMP threads spin-wait for one another, and a training step's time then follows the other
processes' load more than anything measured here.

Paired samples: a training step lasts milliseconds and the load of a shared machine drifts over seconds, so the
two sides are sampled back to back (`--repeats` pairs, the order alternating), each pair's ratio is taken, and
the median of those ratios is reported, for the wall-clock time and for the process's CPU time (all its
threads: torch's, JAX's workers, Python). `_timing.interleaved`'s medians of each side, taken seconds apart,
moved by 20% from run to run here.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import threading
import time
from typing import Any

from benchmarks import _cli, _script

NAME = "agents"
REPEATS, MIN_TIME = 41, 0.03
SHAPES = False
AGENTS = {"NeuroFlowCT": "Pendulum-v1", "NeuroFlow": "CartPole-v1"}
CONFIGS = {"async": "JAX CPU async dispatch on (default)", "sync": "JAX CPU async dispatch off"}
VELORA, COMPAT, CONTROL = "Velora's modules", "compat classes", "Velora's modules, a third agent"
STEP, ALONE, AFTER = "training step", "temperature module alone", "module alone after a training step"
WARMUP = 256  # Transitions in the replay buffer before timing.


def add_arguments(p) -> None:
  p.add_argument("--agent-batch", type=_cli.positive_int, default=128, help="the training batch (default 128)")
  p.add_argument("--torch-threads", type=_cli.positive_int, default=1, help="torch's threads (default 1)")
  p.add_argument("--child", choices=list(CONFIGS), default=None, help="(internal) measure one configuration")


@contextlib.contextmanager
def swapped(agent_module, compat):
  """`velora.models.nf.agent` with the compat classes in place of Velora's, restored afterwards."""
  names = ("EntropyModule", "EntropyModuleDiscrete")
  saved = {n: getattr(agent_module, n) for n in names}
  try:
    for n in names:
      setattr(agent_module, n, getattr(compat, n))
    yield
  finally:
    for n, cls in saved.items():
      setattr(agent_module, n, cls)


def build(name: str, ours: bool):
  """Agent `name` (Velora's modules, or the compat classes when `ours`), its replay buffer filled as
  `train()` fills it, from a seeded reset."""
  import torch
  import velora.models.nf.agent as agent_module
  from velora.gym.wrap import add_core_env_wrappers

  from entropy_jax import compat
  from entropy_jax.targets import discrete_target

  with swapped(agent_module, compat) if ours else contextlib.nullcontext():
    agent = getattr(agent_module, name)(AGENTS[name], 20, 20, device=torch.device("cpu"), seed=0)
  if name == "NeuroFlow" and not ours:  # Velora's discrete target is negative; both train with the port's, so
    agent.entropy.target = torch.tensor(discrete_target(agent.action_dim))  # that both do the same work.
  env = add_core_env_wrappers(agent.env, agent.device)
  state, _ = env.reset(seed=0)
  hidden = None
  for _ in range(WARMUP):
    action, hidden = agent.predict(state, hidden, train_mode=True)
    next_state, reward, terminated, truncated, _ = env.step(action)
    agent.buffer.add(state, action, reward, next_state, terminated or truncated, hidden)
    state = next_state
    if terminated or truncated:
      (state, _), hidden = env.reset(), None
  return agent


def methods(name: str, batch: int) -> dict[str, Any]:
  """`{(side, measurement): callable}`: the training step and the module alone, Velora's and ours, and a third
  agent with Velora's modules, built after the other two: the control, which tells what two agents of the same
  kind differ by with no difference in their modules."""
  import torch

  fns = {}
  for side, ours in ((VELORA, False), (COMPAT, True), (CONTROL, False)):
    agent = build(name, ours)
    sample = agent.buffer.sample(batch)
    out = agent.actor.forward(sample.states, sample.hiddens)
    inputs = (out[1],) if name == "NeuroFlowCT" else (out[1], torch.log(out[1] + 1e-8))  # As `_train_step`.
    inputs = tuple(x.detach() for x in inputs)

    def train_step(agent=agent):
      agent._train_step(batch)

    def module_alone(m=agent.entropy, inputs=inputs):
      m.alpha, m.alpha  # noqa: B018  (the critics' target and the actor's loss read it)
      loss = m.compute_loss(*inputs)
      m.gradient_step(loss)
      loss.detach()

    fns[(side, STEP)], fns[(side, ALONE)] = train_step, module_alone
  return fns


def child(args) -> dict[str, Any]:
  """One configuration, in this (fresh) process: `{agent: {measurement: {side: seconds}, ratios}}`."""
  import jax

  if args.child == "sync":
    jax.config.update("jax_cpu_enable_async_dispatch", False)  # Before the CPU client exists.
  import torch

  torch.set_num_threads(args.torch_threads)
  out: dict[str, Any] = {"torch_threads": torch.get_num_threads()}
  for name in AGENTS:
    fns = methods(name, args.agent_batch)
    out[name] = {what: paired(fns[(VELORA, what)], fns[(COMPAT, what)], args) for what in (STEP, ALONE)}
    out[name]["control"] = paired(fns[(VELORA, STEP)], fns[(CONTROL, STEP)], args)
    out[name][AFTER] = after_step({side: fns[(side, ALONE)] for side in (VELORA, COMPAT)}, fns[(CONTROL, STEP)], args)
    out[name]["other_threads_cpu_share"] = other_threads(fns[(COMPAT, STEP)])
  return out


def after_step(alone: dict[str, Any], step, args) -> dict[str, Any]:
  """Median seconds of one call of each side's module right after `step` (a training step of another agent), the
  sides alternating, `3 * repeats` calls each, and the ratio of the medians (compat / Velora)."""
  times: dict[str, list[float]] = {side: [] for side in alone}
  for _ in range(3 * args.repeats):
    for side, module_call in alone.items():
      step()
      t = time.perf_counter()
      module_call()
      times[side].append(time.perf_counter() - t)
  out: dict[str, Any] = {side: statistics.median(t) for side, t in times.items()}
  return {**out, "ratio": out[COMPAT] / out[VELORA], "calls": 3 * args.repeats}


def other_threads(fn, calls: int = 100) -> float | None:
  """The share of this process's CPU time, over `calls` calls of `fn`, spent outside the calling thread (JAX's
  worker threads, torch's); None where the kernel does not report threads (`/proc/self/task`)."""
  import os

  def ticks() -> dict[str, int]:
    out = {}
    for tid in os.listdir("/proc/self/task"):
      with contextlib.suppress(OSError):
        fields = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        out[tid] = int(fields[11]) + int(fields[12])  # utime + stime
    return out

  if not os.path.isdir("/proc/self/task"):
    return None
  before = ticks()
  for _ in range(calls):
    fn()
  spent = {tid: t - before.get(tid, 0) for tid, t in ticks().items()}
  total = sum(spent.values())
  return (total - spent.get(str(threading.get_native_id()), 0)) / total if total else None


def paired(velora, compat, args) -> dict[str, Any]:
  """Median seconds of each side, and the medians of the per-pair ratios (compat / Velora) of wall and CPU time."""
  from benchmarks._timing import calibrate

  sides = {VELORA: velora, COMPAT: compat}
  for f in (velora, compat, velora, compat):  # Warm-up: compilation, caches.
    f()
  inner = max(calibrate(f, args.min_time) for f in sides.values())
  wall: dict[str, list[float]] = {VELORA: [], COMPAT: []}
  cpu: dict[str, list[float]] = {VELORA: [], COMPAT: []}
  for i in range(args.repeats):
    for side in (VELORA, COMPAT) if i % 2 == 0 else (COMPAT, VELORA):
      w, c = time.perf_counter(), time.process_time()
      for _ in range(inner):
        sides[side]()
      wall[side].append((time.perf_counter() - w) / inner)
      cpu[side].append((time.process_time() - c) / inner)
  ratio = [b / a for a, b in zip(wall[VELORA], wall[COMPAT])]
  cpu_ratio = [b / a for a, b in zip(cpu[VELORA], cpu[COMPAT])]
  out: dict[str, Any] = {side: statistics.median(wall[side]) for side in sides}
  out.update(ratio=statistics.median(ratio), cpu_ratio=statistics.median(cpu_ratio), pairs=args.repeats, inner=inner)
  out["ratio_quartiles"] = statistics.quantiles(ratio, n=4)[::2]
  return out


def run(args, notes: list[str]) -> dict[str, Any]:
  del notes
  argv = ["--repeats", str(args.repeats), "--min-time", str(args.min_time), "--agent-batch", str(args.agent_batch)]
  argv += ["--torch-threads", str(args.torch_threads)]
  results: dict[str, Any] = {"batch": args.agent_batch, "torch_threads": args.torch_threads}
  for config in CONFIGS:
    results[config] = _script.fresh_process("velora_agents", [*argv, "--child", config])
    for line in lines(results, config):
      print("  " + line, flush=True)
  return {NAME: results}


def lines(r: dict[str, Any], config: str) -> list[str]:
  out = []
  for name in AGENTS:
    step, alone, after = r[config][name][STEP], r[config][name][ALONE], r[config][name][AFTER]
    out.append(
      f"{name} ({AGENTS[name]}), {CONFIGS[config]}: training step {_cli.fmt_time(step[VELORA])} with Velora's"
      f" modules, {_cli.fmt_time(step[COMPAT])} with the compat classes ({step['ratio']:.3f}x, CPU time"
      f" {step['cpu_ratio']:.3f}x); module alone {_cli.fmt_time(alone[VELORA])} and {_cli.fmt_time(alone[COMPAT])}"
      f" ({alone['ratio']:.2f}x, CPU time {alone['cpu_ratio']:.2f}x); right after a training step"
      f" {_cli.fmt_time(after[VELORA])} and {_cli.fmt_time(after[COMPAT])} ({after['ratio']:.2f}x);"
      f" control, a third agent with Velora's modules:"
      f" {r[config][name]['control']['ratio']:.3f}x (CPU time {r[config][name]['control']['cpu_ratio']:.3f}x);"
      f" CPU time of the compat side's training"
      f" steps outside the calling thread: {100 * (r[config][name]['other_threads_cpu_share'] or 0):.1f}%"
    )
  return out


def markdown(results: dict[str, Any], args: dict[str, Any]) -> list[str]:
  r = results[NAME]
  head = ["agent", "JAX CPU async dispatch", "training step, Velora's modules", "with the compat classes", "ratio"]
  head += ["CPU time ratio", "module alone, Velora's", "compat class", "ratio", "CPU time ratio"]
  head += ["right after a training step, Velora's", "compat class", "ratio"]
  head += ["control: a third agent, Velora's modules", "CPU time outside the calling thread"]
  rows = []
  for config in CONFIGS:
    for name in AGENTS:
      cells = [f"{name} ({AGENTS[name]})", "on (default)" if config == "async" else "off"]
      for m in (r[config][name][STEP], r[config][name][ALONE]):
        cells += [_cli.fmt_time(m[VELORA]), _cli.fmt_time(m[COMPAT]), f"{m['ratio']:.3f}x", f"{m['cpu_ratio']:.3f}x"]
      after = r[config][name][AFTER]
      cells += [_cli.fmt_time(after[VELORA]), _cli.fmt_time(after[COMPAT]), f"{after['ratio']:.2f}x"]
      control, share = r[config][name]["control"], r[config][name]["other_threads_cpu_share"]
      cells += [f"{control['ratio']:.3f}x (CPU {control['cpu_ratio']:.3f}x)"]
      rows.append([*cells, "-" if share is None else f"{100 * share:.1f}%"])
  title = f"## Velora's agents: one training step, batch {r['batch']}, torch on {r['torch_threads']} thread(s)"
  note = (
    "Time with the compat classes over time with Velora's modules (below 1.0x: the compat classes are faster):"
    " medians of the ratios of back-to-back pairs of samples, of wall-clock and of the process's CPU time. The"
    " control is a third agent with Velora's modules against the first: what two agents differ by alone. Right"
    " after a training step: one module call timed after a training step of another agent, medians. The last"
    " column: the share of the process's CPU time, over 100 training steps with the compat classes, spent outside"
    " the thread that calls them (JAX's worker threads, torch's)."
  )
  return [title, "", note, "", *_cli.table(head, rows)]


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  if "--child" in argv:
    p = _cli.parser("velora_agents", __doc__)
    _cli.add_timing(p, REPEATS, MIN_TIME)
    add_arguments(p)
    args = p.parse_args(argv)
    _cli.timing_defaults(args, REPEATS, MIN_TIME)
    print(json.dumps(child(args)))
    return 0
  return _script.standalone(sys.modules[__name__], argv)


if __name__ == "__main__":
  sys.exit(main())
