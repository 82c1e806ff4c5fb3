"""What XLA makes of the population update: its loops over [N], bytes, compile times.

From the optimized HLO of each population update that `benchmarks.population`
times, over N members x B log_probs (the default optimizer, `optax.adam`,
the fused `continuous_update`, the minimal population Adam over `[N]`, and
the default and the minimal form with their state donated), it lists
the kernels of the entry computation: the loops over `[N]` (fusions and
copies, one per output array, since XLA's CPU backend fuses no two outputs
into one loop), how many instructions read the `[N, B]` log_probs and
whether any other `[N, B]` array is built, and the bytes all kernels read
and write per member. Then the compile time and kernel count of the update
and its sub-steps, each compiled under a fresh name so that nothing comes
from a cache: XLA's CPU compile time grows with the number of kernels.

Its readers of HLO text (`entry`, `kernels`, `n_loops`, `traffic`,
`collectives`) are the project's one HLO reader: the sharding tests use
`collectives` to check that a sharded population update never communicates.
"""

from __future__ import annotations

import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from benchmarks import _cli, _script, population
from benchmarks._forms import MINIMAL

NAME = "hlo"
REPEATS, MIN_TIME = 5, 0.0  # --repeats: compiles per sub-step.
SHAPES = True
_SKIP = ("parameter(", "constant(", "tuple(", "bitcast(", "get-tuple-element(")
_DTYPE_BYTES = {
  "f64": 8,
  "s64": 8,
  "u64": 8,
  "f32": 4,
  "s32": 4,
  "u32": 4,
  "bf16": 2,
  "f16": 2,
  "s16": 2,
  "u16": 2,
  "s8": 1,
  "u8": 1,
  "pred": 1,
}
# The opcodes that move data between devices; their async forms add -start / -done.
COLLECTIVES = (
  "all-reduce",
  "all-gather",
  "all-to-all",
  "reduce-scatter",
  "collective-permute",
  "collective-broadcast",
  "ragged-all-to-all",
  "send",
  "recv",
)
_COLLECTIVE = re.compile(r"=\s*[^=]*?\b(" + "|".join(map(re.escape, COLLECTIVES)) + r")(?:-start|-done)?\(")


def entry(hlo: str) -> list[str]:
  """The instruction lines of the entry computation of an HLO module's text."""
  body = hlo[hlo.index("\nENTRY") :]
  body = body[body.index("{") + 1 : body.index("\n}")]
  return [line.strip() for line in body.splitlines() if "=" in line]


def collectives(hlo: str) -> list[str]:
  """The cross-device operations in all computations of an HLO module's text, in order.

  Empty when the program never communicates. `hlo`: e.g. `jax.jit(f).lower(x).compile().as_text()`.
  """
  return [m.group(1) for m in _COLLECTIVE.finditer(hlo)]


def _split(line: str) -> tuple[str, str]:
  name, rest = line.replace("ROOT ", "").split(" = ", 1)
  return name, rest


def _operands(rest: str) -> list[str]:
  """The `%names` inside the outermost parentheses of an instruction."""
  call = rest[rest.index("(") + 1 :]
  depth, args = 1, ""
  for ch in call:
    depth += ch == "("
    depth -= ch == ")"
    if depth == 0:
      break
    args += ch
  return re.findall(r"%[\w.\-]+", args)


def kernels(lines: list[str]) -> int:
  """Fusions, copies and other compute in the entry (parameters, constants,
  tuples and bitcasts excluded)."""
  return sum(1 for line in lines if not any(s in line for s in _SKIP))


def n_loops(hlo: str, n: int) -> list[dict[str, Any]]:
  """The entry's kernels whose result is one `[n]` array: name, kind, and
  how many of their operands are `[n]` arrays."""
  lines = entry(hlo)
  shape = re.compile(rf"^\w+\[{n}\]")
  is_n = {_split(line)[0] for line in lines if shape.match(_split(line)[1])}
  out = []
  for line in lines:
    if any(s in line for s in _SKIP):
      continue
    name, rest = _split(line)
    if name in is_n:
      kind = "copy" if re.match(r"^\w+\[\d+\]\{[\d,]*\} copy\(", rest) else "fusion"
      out.append({"name": name, "kind": kind, "n_operands": sum(o in is_n for o in _operands(rest))})
  return out


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
  sizes = {_split(line)[0]: _array_bytes(_split(line)[1]) for line in lines}
  reads = writes = 0
  for line in lines:
    if any(t in line for t in _SKIP):
      continue
    name, rest = _split(line)
    reads += sum(sizes.get(o, 0) for o in _operands(rest))
    writes += sizes[name]
  return {"read_bytes": reads, "written_bytes": writes}


def nb_report(hlo: str, n: int, b: int, dtype: str = "f32") -> dict[str, Any]:
  """How the `[n, b]` input is used: readers, and `[n, b]` values other than it."""
  lines = entry(hlo)
  shape = re.compile(rf"= {dtype}\[{n},{b}\]")
  params = [line.split(" =")[0] for line in lines if shape.search(line) and "parameter(" in line]
  temporaries = [line.split(" =")[0] for line in lines if shape.search(line) and "parameter(" not in line]
  readers = [
    line.split(" =")[0]
    for line in lines
    if any(re.search(rf"[(, ]{re.escape(p)}[,)]", line) for p in params) and "parameter(" not in line
  ]
  return {"nb_temporaries": temporaries, "nb_readers": readers, "kernels": kernels(lines), **traffic(hlo)}


def population_forms(n: int, b: int, action_dim: int) -> dict[str, tuple[Callable, tuple]]:
  """name -> (jitted function, arguments) of each population update of the
  population benchmark, ready to lower; the donated ones donate their state."""
  import jax
  import jax.numpy as jnp
  import optax

  import entropy_jax as ej
  from benchmarks import _forms

  target = ej.continuous_target(action_dim)
  x = jnp.zeros((n, b), jnp.float32)
  pop = ej.init_population(target, size=n)
  pop_optax = ej.init_population(target, size=n, optimizer=optax.adam(3e-4))
  mini, targets = _forms.minimal_init(n), jnp.full((n,), target)
  library = jax.vmap(_forms.grad_then_apply)
  return {
    population.DEFAULT: (jax.jit(library), (pop, x)),
    population.OPTAX: (jax.jit(library), (pop_optax, x)),
    population.FUSED: (jax.jit(jax.vmap(ej.continuous_update)), (pop, x)),
    population.DEFAULT_DONATED: (jax.jit(library, donate_argnums=0), (pop, x)),
    MINIMAL: (jax.jit(_forms.minimal_update), (mini, x, targets)),
    population.MINIMAL_DONATED: (jax.jit(_forms.minimal_update, donate_argnums=0), (mini, x, targets)),
  }


def describe(hlo: str, n: int, b: int) -> dict[str, Any]:
  """The kernels, `[n]` loops and bytes per member of a population update's HLO."""
  r = nb_report(hlo, n, b)
  loops = n_loops(hlo, n)
  moved = r["read_bytes"] + r["written_bytes"]
  return {
    "kernels": r["kernels"],
    "n_loops": len(loops),
    "copies": sum(lp["kind"] == "copy" for lp in loops),
    "n_operands_read": sum(lp["n_operands"] for lp in loops),
    # Loops reading more than four [N] arrays: the clamped log_alpha and the skip verdict.
    "wide_loops": sum(lp["n_operands"] > 4 for lp in loops),
    "loops": loops,
    "nb_readers": r["nb_readers"],
    "nb_temporaries": r["nb_temporaries"],
    "bytes_per_member_besides_log_probs": (moved - n * b * 4) / n,
  }


def compile_seconds(fn: Callable, args: tuple, repeats: int, tag: str) -> tuple[float, int]:
  """Median compile time of `fn` under fresh names, and its kernel count."""
  import jax

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


def add_arguments(p) -> None:
  p.add_argument("--hlo-n", type=_cli.positive_int, default=16384, help="population size (default 16384)")


def run(args, notes: list[str]) -> dict[str, Any]:
  del notes
  import jax
  import jax.numpy as jnp
  import optax

  import entropy_jax as ej

  n, b = args.hlo_n, args.batch
  forms = {}
  print(
    f"  N={n} x B={b} ({jax.default_backend()}): kernels of the optimized HLO's entry, loops over [N]"
    " (copies among them), [N] operands those loops read, and bytes read + written per member besides the"
    " log_probs:"
  )
  for name, (fn, fargs) in population_forms(n, b, args.action_dim).items():
    forms[name] = describe(fn.lower(*fargs).compile().as_text(), n, b)
    d = forms[name]
    print(
      f"    {name}: {d['kernels']} kernels, {d['n_loops']} [N] loops ({d['copies']} copies),"
      f" {d['n_operands_read']} [N] operands, {d['bytes_per_member_besides_log_probs']:.0f} bytes per member;"
      f" {len(d['nb_readers'])} reader(s) of the log_probs, other [N, B] arrays: {d['nb_temporaries'] or 'none'}"
    )

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
    "entropy_jax.adam update + apply_updates": (adam_step, (state, grad)),
    "apply_gradients (entropy_jax.adam)": (ej.apply_gradients, (state, grad)),
    "continuous_update (optax.sgd)": (ej.continuous_update, (sgd_state, lp)),
    "continuous_update (entropy_jax.adam)": (ej.continuous_update, (state, lp)),
  }
  jax.jit(lambda v: v - 1.0).lower(lp).compile()  # Start the compiler up first.
  print(f"  Compile time (median of {args.repeats}, fresh names) and kernels of one member's update:")
  compiles = {}
  for i, (name, (fn, fargs)) in enumerate(steps.items()):
    seconds, count = compile_seconds(fn, fargs, args.repeats, f"step{i}")
    compiles[name] = {"compile_s": seconds, "kernels": count}
    print(f"    {name:42s} {seconds * 1e3:8.1f} ms  {count:3d} kernels")
  every_form = {
    "most_log_probs_readers": max(len(d["nb_readers"]) for d in forms.values()),
    "other_nb_arrays": sum(len(d["nb_temporaries"]) for d in forms.values()),
  }
  return {NAME: {"n": n, "batch": b, "forms": forms, "every_form": every_form, "compile": compiles}}


def markdown(results: dict[str, Any], args: dict[str, Any]) -> list[str]:
  del args
  r = results[NAME]
  lines = [
    f"## The optimized HLO of the population update, N = {r['n']:,} x {r['batch']}",
    "",
  ]
  head = ["form", "kernels", "loops over [N] (copies)", "[N] operands read", "bytes per member besides the log_probs"]
  rows = [
    [
      name,
      str(d["kernels"]),
      f"{d['n_loops']} ({d['copies']})",
      str(d["n_operands_read"]),
      f"{d['bytes_per_member_besides_log_probs']:.0f}",
    ]
    for name, d in r["forms"].items()
  ]
  lines += [*_cli.table(head, rows), ""]
  rows = [[name, f"{c['compile_s'] * 1e3:.1f} ms", str(c["kernels"])] for name, c in r["compile"].items()]
  return lines + _cli.table(["one member's update", "compile", "kernels"], rows)


def main(argv: list[str] | None = None) -> int:
  return _script.standalone(sys.modules[__name__], argv)


if __name__ == "__main__":
  sys.exit(main())
