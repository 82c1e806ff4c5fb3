"""What the optimizer costs in a vmapped population update, against the floor.

The grad-then-apply form `vmap(apply_gradients(grad(continuous_loss)))` over
N members x 256 log_probs with several optimizers, side by side (medians of
interleaved repeats, `_timing.py`), as multiples of the `jnp.sum` floor over
the same `[N, 256]` array:

* `entropy_jax.adam(3e-4)`, the default (bias correction `-expm1(t log b)`);
* `optax.adam(3e-4)` (bias correction `1 - b**t`, a float `pow`);
* `optax.sgd(3e-4)`, which keeps no per-member statistics;
* `optax.set_to_zero()`, a fixed alpha: what `apply_gradients` costs around
  an optimizer that does nothing;
* the minimal population Adam over `[N]` (`_forms.minimal_update`).

Three rows bound them from below: the gradient alone (the row reduction over
`[N, 256]`, no step), and each Adam's bias correction alone over the `[N]`
per-member step counts (two `pow`s per member for optax, two `expm1`s for the
default).
"""

from __future__ import annotations

import math
import sys
from typing import Any

from benchmarks import _cli, _script
from benchmarks._forms import GRAD_THEN_APPLY, MINIMAL

NAME = "optimizer"
REPEATS, MIN_TIME = 15, 0.05
SHAPES = True
FLOOR = "floor: jnp.sum"


def add_arguments(p) -> None:
  _cli.add_scaled(p, "--optimizer-n", full=16384, quick=1024, help="population size")


def run(args, notes: list[str]) -> dict[str, Any]:
  del notes
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  import entropy_jax as ej
  from benchmarks import _forms
  from benchmarks._timing import interleaved

  n, b = args.optimizer_n, args.batch
  target = ej.continuous_target(args.action_dim)
  x = jax.device_put(np.random.default_rng(0).standard_normal((n, b), dtype=np.float32) - args.action_dim)
  targets = jnp.full((n,), target, jnp.float32)
  counts = jnp.arange(1, n + 1, dtype=jnp.int32)
  floor = jax.jit(jnp.sum)
  grad_only = jax.jit(jax.vmap(jax.grad(ej.continuous_loss)))
  pow_correction = jax.jit(lambda c: (1 - 0.9**c, 1 - 0.999**c))
  expm1_correction = jax.jit(
    lambda c: (-jnp.expm1(c.astype(jnp.float32) * math.log(0.9)), -jnp.expm1(c.astype(jnp.float32) * math.log(0.999)))
  )
  update = jax.jit(jax.vmap(_forms.grad_then_apply))
  minimal = jax.jit(_forms.minimal_update)
  mini = _forms.minimal_init(n)
  fns = {
    FLOOR: lambda: floor(x),
    "the gradient alone (no step)": lambda: grad_only(jnp.zeros((n,)), x, targets),
    "optax.adam's bias correction alone ([N] pows)": lambda: pow_correction(counts),
    "entropy_jax.adam's bias correction alone ([N] expm1s)": lambda: expm1_correction(counts),
  }
  for name, tx in (
    ("entropy_jax.adam(3e-4) (the default)", None),
    ("optax.adam(3e-4)", optax.adam(3e-4)),
    ("optax.sgd(3e-4)", optax.sgd(3e-4)),
    ("optax.set_to_zero() (a fixed alpha)", optax.set_to_zero()),
  ):
    pop = jax.jit(lambda tx=tx: ej.init_population(target, size=n, optimizer=tx))()
    fns[name] = lambda pop=pop: update(pop, x)
  fns[MINIMAL] = lambda: minimal(mini, x, targets)
  timings = interleaved(fns, repeats=args.repeats, min_time=args.min_time)
  base = timings[FLOOR].median
  print(f"  N = {n:,} x {b} log_probs on {jax.default_backend()}, medians of {args.repeats}:")
  rows = {}
  for name, t in timings.items():
    rows[name] = {"seconds": t.median, "x_floor": t.median / base, "timing": t.as_dict()}
    print(f"    {name:54s} {_cli.fmt_time(t.median):>10s}  {t.median / base:5.2f}x floor", flush=True)
  return {NAME: {"n": n, "batch": b, "rows": rows}}


def markdown(results: dict[str, Any], args: dict[str, Any]) -> list[str]:
  del args
  r = results[NAME]
  lines = [
    f"## Optimizer cost: {GRAD_THEN_APPLY} over N = {r['n']:,} x {r['batch']} log_probs",
    "",
  ]
  rows = [[name, _cli.fmt_time(row["seconds"]), f"{row['x_floor']:.2f}"] for name, row in r["rows"].items()]
  return lines + _cli.table(["method", "time", "x floor"], rows)


def main(argv: list[str] | None = None) -> int:
  return _script.standalone(sys.modules[__name__], argv)


if __name__ == "__main__":
  sys.exit(main())
