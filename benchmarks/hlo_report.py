#!/usr/bin/env python3
"""What XLA makes of the updates: kernels, [N, B] temporaries, compile times.

  python benchmarks/hlo_report.py             # N=16384, B=256
  python benchmarks/hlo_report.py --n 1024 --repeats 5

For the vmapped population updates it reports, from the optimized HLO, how many
instructions read the [N, B] log_probs and whether any other [N, B] array is
built (a naive loss builds one and runs far from the memory floor). For the
update and its sub-steps it reports the number of kernels (fusions and copies
in the entry computation) and the compile time, each sub-step compiled under a
fresh name so that nothing comes from a cache: XLA's CPU compile time grows
with the number of kernels, which is what the first-call compile goal hits.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

import entropy_jax as ej
from _forms import GRAD_THEN_APPLY, grad_then_apply


def entry(hlo: str) -> list[str]:
  """The instruction lines of the entry computation of an HLO module's text."""
  body = hlo[hlo.index("\nENTRY"):]
  body = body[body.index("{") + 1:body.index("\n}")]
  return [line.strip() for line in body.splitlines() if "=" in line]


def kernels(lines: list[str]) -> int:
  """Fusions, copies and other compute in the entry (parameters, constants,
  tuples and bitcasts excluded)."""
  skip = ("parameter(", "constant(", "tuple(", "bitcast(", "get-tuple-element(")
  return sum(1 for line in lines if not any(s in line for s in skip))


def nb_report(hlo: str, n: int, b: int, dtype: str = "f32") -> dict[str, Any]:
  """How the [n, b] input is used: readers, and [n, b] values other than it."""
  lines = entry(hlo)
  shape = re.compile(rf"= {dtype}\[{n},{b}\]")
  params = [line.split(" =")[0] for line in lines if shape.search(line) and "parameter(" in line]
  temporaries = [line.split(" =")[0] for line in lines if shape.search(line) and "parameter(" not in line]
  readers = [line.split(" =")[0] for line in lines
             if any(re.search(rf"[(, ]{re.escape(p)}[,)]", line) for p in params) and "parameter(" not in line]
  return {"nb_temporaries": temporaries, "nb_readers": readers, "kernels": kernels(lines), **traffic(hlo)}


_DTYPE_BYTES = {"f64": 8, "s64": 8, "u64": 8, "f32": 4, "s32": 4, "u32": 4, "bf16": 2, "f16": 2,
                "s16": 2, "u16": 2, "s8": 1, "u8": 1, "pred": 1}


def _array_bytes(shape_text: str) -> int:
  """Bytes of an HLO array type such as `f32[16384,256]{1,0}` (0 for tuples)."""
  m = re.match(r"(\w+)\[([\d,]*)\]", shape_text)
  if not m or m.group(1) not in _DTYPE_BYTES:
    return 0
  size = 1
  for d in filter(None, m.group(2).split(",")):
    size *= int(d)
  return size * _DTYPE_BYTES[m.group(1)]


def traffic(hlo: str) -> dict[str, int]:
  """Bytes each kernel of the entry reads (its operands) and writes, summed.

  An upper bound on memory traffic (a kernel may read an operand partly, or
  from cache), but exact in what it counts: a buffer read by k kernels is
  counted k times, which is what duplicated elementwise work costs.
  """
  lines = entry(hlo)
  sizes = {}
  for line in lines:
    name, rest = line.replace("ROOT ", "").split(" = ", 1)
    sizes[name] = _array_bytes(rest)
  reads = writes = 0
  skip = ("parameter(", "constant(", "tuple(", "bitcast(", "get-tuple-element(")
  for line in lines:
    if any(t in line for t in skip):
      continue
    name, rest = line.replace("ROOT ", "").split(" = ", 1)
    call = rest[rest.index("(") + 1:]
    depth, args = 1, ""
    for ch in call:
      depth += ch == "("
      depth -= ch == ")"
      if depth == 0:
        break
      args += ch
    operands = re.findall(r"%[\w.\-]+", args)
    reads += sum(sizes.get(o, 0) for o in operands)
    writes += sizes[name]
  return {"read_bytes": reads, "written_bytes": writes}


def compile_seconds(fn: Callable, args: tuple, repeats: int, tag: str) -> tuple[float, int]:
  """Median compile time of `fn` under fresh names, and its kernel count."""
  times, count = [], 0
  for r in range(repeats):
    def fresh(*a, fn=fn):
      return fn(*a)
    fresh.__name__ = fresh.__qualname__ = f"{tag}_{r}"
    lowered = jax.jit(fresh).lower(*args)
    t0 = time.perf_counter()
    compiled = lowered.compile()
    times.append(time.perf_counter() - t0)
    count = kernels(entry(compiled.as_text()))
  return statistics.median(times), count


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="benchmarks/hlo_report.py", description=__doc__.split("\n\n")[0])
  p.add_argument("--n", type=int, default=16384, help="population size for the vmapped updates")
  p.add_argument("--batch", type=int, default=256, help="log_probs per member")
  p.add_argument("--repeats", type=int, default=5, help="compiles per sub-step; the median is reported")
  args = p.parse_args(argv)
  if args.n < 1 or args.batch < 1 or args.repeats < 1:
    p.error(f"--n, --batch and --repeats must be >= 1; got {args.n}, {args.batch}, {args.repeats}")

  n, b = args.n, args.batch
  pop = ej.init_population(-6.0, size=n)
  x = jnp.zeros((n, b), jnp.float32)
  forms = {
      GRAD_THEN_APPLY: jax.vmap(grad_then_apply),
      "vmap(continuous_update)": jax.vmap(ej.continuous_update),
  }
  nbytes = n * b * 4
  floor = traffic(jax.jit(jnp.sum).lower(x).compile().as_text())
  print(f"Population N={n} x B={b} ({jax.default_backend()}): uses of the [N, B] log_probs in the optimized HLO,"
        f" and bytes read + written by all kernels (the floor, jnp.sum: {floor['read_bytes'] + floor['written_bytes']:,})")
  for name, fn in forms.items():
    r = nb_report(jax.jit(fn).lower(pop, x).compile().as_text(), n, b)
    moved = r["read_bytes"] + r["written_bytes"]
    print(f"  {name}: {len(r['nb_readers'])} instruction(s) read it {r['nb_readers']};"
          f" other [N, B] arrays built: {r['nb_temporaries'] or 'none'}; {r['kernels']} kernels;"
          f" {moved:,} bytes moved = {moved / nbytes:.2f}x the log_probs"
          f" ({(moved - nbytes) / n:.0f} bytes per member besides them)")

  state = ej.init_entropy_state(-6.0)
  sgd_state = ej.init_entropy_state(-6.0, optimizer=optax.sgd(3e-4))
  lp = jnp.zeros((b,), jnp.float32)
  grad = jnp.float32(0.5)

  def adam_step(s, g):
    updates, opt_state = s.tx.update(g, s.opt_state, s.log_alpha)
    return optax.apply_updates(s.log_alpha, updates), opt_state

  steps = {
      "trivial: x * 2 + 1": (lambda v: v * 2.0 + 1.0, (lp,)),
      "value_and_grad(continuous_loss)": (jax.value_and_grad(ej.continuous_loss), (state.log_alpha, lp, state.target)),
      "optax adam update + apply_updates": (adam_step, (state, grad)),
      "apply_gradients (adam)": (ej.apply_gradients, (state, grad)),
      "continuous_update (sgd)": (ej.continuous_update, (sgd_state, lp)),
      "continuous_update (adam)": (ej.continuous_update, (state, lp)),
  }
  jax.jit(lambda v: v - 1.0).lower(lp).compile()  # Start the compiler up first.
  print(f"Compile time (median of {args.repeats}, fresh names) and kernels:")
  for i, (name, (fn, a)) in enumerate(steps.items()):
    seconds, count = compile_seconds(fn, a, args.repeats, f"step{i}")
    print(f"  {name:36s} {seconds * 1e3:8.1f} ms  {count:3d} kernels")
  return 0


if __name__ == "__main__":
  sys.exit(main())
