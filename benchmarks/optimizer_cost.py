#!/usr/bin/env python3
"""What the optimizer costs in a vmapped population update, against the floor.

Issue 2's vmapped update, `apply_gradients(state, grad(continuous_loss))`
over N members x 256 log_probs, with three optimizers side by side (medians
of interleaved repeats, see `_timing.py`), and the bare `jnp.sum` over the
same `[N, 256]` array as the memory-bound floor:

  * `optax.adam(3e-4)`, the default of `init_entropy_state`;
  * the compat modules' Adam (`entropy_jax.optimizers`, PyTorch's defaults,
    bias correction computed as `-expm1(t * log b)` instead of a `pow`);
  * `optax.sgd(3e-4)`, which keeps no per-member statistics.

Two rows bound what any optimizer could reach: the gradient alone (the
row reduction over `[N, 256]`, no optimizer step at all), and optax's Adam
bias correction alone (`1 - b1**count` and `1 - b2**count` over the `[N]`
per-member step counts: two float `pow`s per member).

  python benchmarks/optimizer_cost.py [--n 16384] [--repeats 15]
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


def main(argv=None) -> dict[str, float]:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--n", type=int, default=16384, help="population size (default 16384)")
  parser.add_argument("--batch", type=int, default=256, help="log_probs per member (default 256)")
  parser.add_argument("--repeats", type=int, default=15, help="timed samples per method (default 15)")
  parser.add_argument("--min-time", type=float, default=0.05, help="seconds per sample at least (default 0.05)")
  args = parser.parse_args(argv)
  if args.n < 1 or args.batch < 1 or args.repeats < 1 or not args.min_time > 0:
    parser.error(f"--n, --batch and --repeats must be >= 1 and --min-time > 0; got {vars(args)}")

  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  import entropy_jax as ej
  from entropy_jax import optimizers
  from _forms import grad_then_apply
  from _timing import interleaved

  x = jax.device_put(np.random.default_rng(0).standard_normal((args.n, args.batch), dtype=np.float32) - 6)
  update = jax.jit(jax.vmap(grad_then_apply))
  floor = jax.jit(jnp.sum)
  fns = {"floor: jnp.sum": lambda: floor(x)}
  grad_only = jax.jit(jax.vmap(jax.grad(ej.continuous_loss)))
  log_alpha = jnp.zeros((args.n,), jnp.float32)
  target = jnp.full((args.n,), -6.0, jnp.float32)
  fns["the gradient alone (no step)"] = lambda: grad_only(log_alpha, x, target)
  # What optax.adam computes from the per-member counts (b1 = 0.9, b2 = 0.999).
  bias_correction = jax.jit(lambda count: (1 - 0.9**count, 1 - 0.999**count))
  counts = jnp.arange(1, args.n + 1, dtype=jnp.int32)
  fns["Adam's bias correction alone ([N] pows)"] = lambda: bias_correction(counts)
  for name, tx in (
      ("optax.adam(3e-4) (the default)", optax.adam(3e-4)),
      ("compat Adam (-expm1 bias correction)", optimizers.make("Adam", 3e-4, "optimizer_cost")[1]),
      ("optax.sgd(3e-4)", optax.sgd(3e-4)),
  ):
    pop = jax.jit(lambda tx=tx: ej.init_population(-6.0, size=args.n, optimizer=tx))()
    fns[name] = lambda pop=pop: update(pop, x)
  timings = interleaved(fns, repeats=args.repeats, min_time=args.min_time)
  base = timings["floor: jnp.sum"].median
  print(f"N = {args.n:,} x {args.batch} log_probs on {jax.default_backend()}, medians of {args.repeats}:")
  ratios = {}
  for name, t in timings.items():
    ratios[name] = t.median / base
    print(f"  {name:40s} {t.median * 1e6:9.1f} us  {ratios[name]:5.2f}x floor")
  return ratios


if __name__ == "__main__":
  main()
