"""The compat class against Velora in a fresh process with JAX's CPU async dispatch off; prints JSON.

Run by `single_update.synchronous_rows` on the CPU backend:

  python -m benchmarks._sync_dispatch [--repeats R] [--min-time T] [--batch B] [--action-dim D] [--num-actions A]

By default XLA's CPU client runs a computation of more than about 1,000
estimated flops on a worker thread (the discrete update at batch 256 is one;
the continuous update is one from a batch of about 900), and a caller that
waits for the result pays two hand-overs between threads: about 5 us by XLA's
own estimate, tens of microseconds on a small virtual machine.
`jax.config.update("jax_cpu_enable_async_dispatch", False)` runs every
computation in the calling thread instead. JAX reads it when it creates the
CPU client, so it is set here before any JAX computation, in a process of its
own. A PyTorch training loop waits for every temperature update anyway (torch
reads alpha right after it), so it loses nothing by it.

Prints `{"continuous": rows, "discrete": rows}`: the compat rows of
`single_update.library_methods`, each with its speedup over the Velora module
timed beside it in this process.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str]) -> int:
  import jax

  jax.config.update("jax_cpu_enable_async_dispatch", False)  # Before the CPU client exists.
  import numpy as np

  from benchmarks import _cli, _machine, single_update
  from benchmarks._timing import interleaved

  p = _cli.parser("_sync_dispatch", __doc__)
  _cli.add_timing(p, single_update.REPEATS, single_update.MIN_TIME)
  _cli.add_shapes(p)
  args = p.parse_args(argv)
  _cli.timing_defaults(args, single_update.REPEATS, single_update.MIN_TIME)
  velora, compat = _machine.load_libraries([])  # Run only where both import (`single_update.run`).
  rng = np.random.default_rng(0)
  out = {}
  for kind in single_update.KINDS:
    dim = args.action_dim if kind == "continuous" else args.num_actions
    fns = single_update.library_methods(kind, dim, single_update.update_inputs(kind, args, rng), velora, compat)
    rows = single_update.rows_of(interleaved(fns, repeats=args.repeats, min_time=args.min_time), {})
    velora_seconds = rows[single_update.VELORA_CPU]["seconds_per_update"]
    out[kind] = {
      name: {**row, "velora_seconds_per_update": velora_seconds}
      for name, row in rows.items()
      if name.startswith("compat")
    }
  print(json.dumps(out))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
