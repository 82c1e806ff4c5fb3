"""One update at batch 256, continuous and discrete, against Velora 0.2.0.

Side by side (medians of interleaved repeats, `_timing.py`), each a training
loop's update with the state threaded from call to call:

* Velora's PyTorch module (and on CUDA, when torch sees a GPU);
* the Velora-compatible class `entropy_jax.compat`, called as Velora is, from NumPy
  inputs (JAX arrays out) and from torch tensors (a module built as Velora's agents build
  it, with `optim=torch.optim.Adam`: torch tensors out); on the CPU, both again in a process
  of their own with JAX's CPU async dispatch off (`_sync_dispatch.py`), each against the
  Velora module timed beside it there;
* the fused update `jax.jit(continuous_update)` called from Python: this
  measures JAX's per-call dispatch more than the update, so a trivial jitted
  call (`x + 1`) is timed beside it as the dispatch floor;
* the update inside `lax.scan`, per update: its cost inside a user's jitted
  training step, where it runs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from benchmarks import _cli, _machine, _script

NAME = "single"
REPEATS, MIN_TIME = 9, 0.02
SHAPES = True
KINDS = ("continuous", "discrete")
VELORA_CPU = "Velora 0.2.0 (PyTorch CPU)"
VELORA_CUDA = "Velora 0.2.0 (PyTorch CUDA)"
COMPAT = "compat class, NumPy inputs"
COMPAT_TORCH = "compat class, torch inputs"
JIT = "jax.jit(fused update) called from Python"
TRIVIAL = "a trivial jitted call (x + 1), the dispatch floor"
SYNC_LABEL = "JAX CPU async dispatch off"  # The compat rows measured by `_sync_dispatch.py`, in a process of their own.


def scan_label(k: int) -> str:
  return f"inside lax.scan ({k} updates per call), per update"


def add_arguments(p) -> None:
  _cli.add_scaled(p, "--scan-k", full=1000, quick=100, help="updates per lax.scan call")


def synchronous_rows(args) -> dict[str, Any]:
  """The compat rows with JAX's CPU async dispatch off: `_sync_dispatch.py` in a fresh process with `args`."""
  argv = ["--repeats", str(args.repeats), "--min-time", str(args.min_time), "--batch", str(args.batch)]
  argv += ["--action-dim", str(args.action_dim), "--num-actions", str(args.num_actions)]
  return _script.fresh_process("_sync_dispatch", argv)


def update_inputs(kind: str, args, rng, leading: tuple[int, ...] = ()):
  """NumPy inputs of one update (`leading` axes first): `(log_probs,)` or `(probs, log_probs)`."""
  import numpy as np

  if kind == "continuous":
    return ((rng.standard_normal((*leading, args.batch)) - args.action_dim).astype(np.float32),)
  logits = rng.standard_normal((*leading, args.batch, args.num_actions))
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  return np.exp(log_probs).astype(np.float32), log_probs.astype(np.float32)


def library_methods(kind: str, dim: int, inputs: tuple, velora, compat) -> dict[str, Callable[[], Any]]:
  """Velora's module (and on CUDA, when torch sees a GPU) and the compat class from NumPy and from
  torch inputs, each one update of `inputs` per call, as `interleaved` times them."""
  i = KINDS.index(kind)
  fns: dict[str, Callable[[], Any]] = {}
  if velora is not None:
    torch = velora[2]
    v_mod = velora[i](dim)
    tin = tuple(torch.from_numpy(a) for a in inputs)
    fns[VELORA_CPU] = lambda m=v_mod, tin=tin: m.gradient_step(m.compute_loss(*tin))
    if torch.cuda.is_available():  # What a Velora user on a GPU machine runs.
      cuda = torch.device("cuda")
      g_mod = velora[i](dim, device=cuda)
      gin = tuple(t.to(cuda) for t in tin)

      def velora_cuda(m=g_mod, gin=gin, sync=torch.cuda.synchronize):
        m.gradient_step(m.compute_loss(*gin))
        return sync

      fns[VELORA_CUDA] = velora_cuda
  if compat is not None:
    c_mod = compat[i](dim)

    def compat_step(m=c_mod, inputs=inputs):
      m.gradient_step(m.compute_loss(*inputs))
      return m.alpha  # What a SAC step reads after the update.

    fns[COMPAT] = compat_step
    if velora is not None:  # torch in, torch out: as Velora's agents build and call it.
      t_mod = compat[i](dim, optim=velora[2].optim.Adam)

      def compat_torch_step(m=t_mod, tin=tin):
        m.gradient_step(m.compute_loss(*tin))
        return m.alpha.item  # What a SAC step reads after the update, waited for as torch waits.

      fns[COMPAT_TORCH] = compat_torch_step
  return fns


def rows_of(timings: dict[str, Any], per_call: dict[str, int]) -> dict[str, Any]:
  """`{name: {"seconds_per_update", "timing", "speedup_vs_velora"...}}` of `interleaved`'s timings;
  `per_call` gives the updates one call of a method makes (default 1)."""
  rows = {}
  for name, t in timings.items():
    rows[name] = {"seconds_per_update": t.median / per_call.get(name, 1), "timing": t.as_dict()}
  for row in rows.values():
    for key, ref in (("speedup_vs_velora", VELORA_CPU), ("speedup_vs_velora_cuda", VELORA_CUDA)):
      if ref in rows:
        row[key] = rows[ref]["seconds_per_update"] / row["seconds_per_update"]
  return rows


def run(args, notes: list[str]) -> dict[str, Any]:
  import jax
  import jax.numpy as jnp
  import numpy as np

  import entropy_jax as ej
  from benchmarks._timing import interleaved, threaded

  velora, compat = _machine.load_libraries(notes)
  both = velora is not None and compat is not None
  synchronous = synchronous_rows(args) if both and jax.default_backend() == "cpu" else {}
  rng = np.random.default_rng(0)
  out: dict[str, Any] = {}
  for kind in KINDS:
    inputs = update_inputs(kind, args, rng)
    jin = tuple(jnp.asarray(a) for a in inputs)
    dim = args.action_dim if kind == "continuous" else args.num_actions
    target = ej.continuous_target(dim) if kind == "continuous" else ej.discrete_target(dim)
    update = ej.continuous_update if kind == "continuous" else ej.discrete_update
    fns = library_methods(kind, dim, inputs, velora, compat)
    fns[JIT] = threaded(jax.jit(update), ej.init_entropy_state(target), *jin, carry=True)
    trivial = jax.jit(lambda v: v + 1.0)
    fns[TRIVIAL] = lambda trivial=trivial, v=jin[0]: trivial(v)

    def scan_fn(state, xs, update=update):
      def body(s, x):
        s, metrics = update(s, *x)
        return s, metrics["alpha"]

      return jax.lax.scan(body, state, xs)

    xs = tuple(jnp.asarray(a) for a in update_inputs(kind, args, rng, (args.scan_k,)))
    fns[scan_label(args.scan_k)] = threaded(jax.jit(scan_fn), ej.init_entropy_state(target), xs, carry=True)

    timings = interleaved(fns, repeats=args.repeats, min_time=args.min_time)
    rows = rows_of(timings, {scan_label(args.scan_k): args.scan_k})
    # Measured in a process of their own, against the Velora module timed beside them there.
    rows.update({f"{name}, {SYNC_LABEL}": row for name, row in synchronous.get(kind, {}).items()})
    for name, row in rows.items():
      print(
        f"  {kind:10s} {name:56s} {_cli.fmt_time(row['seconds_per_update']):>10s}"
        + (f"   {row['speedup_vs_velora']:8.1f}x vs Velora" if "speedup_vs_velora" in row else "")
        + (f"   {row['speedup_vs_velora_cuda']:8.1f}x vs Velora on CUDA" if "speedup_vs_velora_cuda" in row else ""),
        flush=True,
      )
    out[kind] = rows
  return {NAME: out}


def markdown(results: dict[str, Any], args: dict[str, Any]) -> list[str]:
  results = results[NAME]
  lines = [
    f"## One update, batch {args['batch']} (continuous action_dim {args['action_dim']},"
    f" discrete A {args['num_actions']})",
    "",
  ]
  ratios = {"speedup_vs_velora": ""}
  if VELORA_CUDA in results["continuous"]:
    ratios = {"speedup_vs_velora": " (CPU)", "speedup_vs_velora_cuda": " (CUDA)"}
  head = ["method"] + [c for kind in KINDS for c in [kind] + [f"x faster than Velora{v}" for v in ratios.values()]]
  rows = []
  for name in results["continuous"]:
    cells = [name]
    for kind in KINDS:
      r = results[kind].get(name, {})
      cells += [_cli.fmt_time(r["seconds_per_update"]) if r else "-"]
      cells += [f"{r[k]:.1f}x" if k in r else "-" for k in ratios]
    rows.append(cells)
  return lines + _cli.table(head, rows)


def main(argv: list[str] | None = None) -> int:
  return _script.standalone(sys.modules[__name__], argv)


if __name__ == "__main__":
  sys.exit(main())
