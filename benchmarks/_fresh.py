"""One compile-and-import measurement in a fresh Python process; prints JSON.

Run by `benchmarks.compile_import`, several times (the median is reported),
so that nothing imported or compiled earlier is in any cache:

  python -m benchmarks._fresh [--n N] [--batch B] [--action-dim D] [--num-actions A]
                              [--cache DIR] [--only T1,T2]

In order, in one process: the seconds to `import jax, optax, flax, chex` (the
baseline) and then the seconds that `import entropy_jax` adds on top of them;
then for each of `jit(continuous_update)`, `jit(discrete_update)` and
`jit(vmap(continuous_update))` over N members, the seconds of its first call
(tracing, lowering, compiling and running it) and of a steady-state call
afterwards, and, for scale, the first call of a trivial jitted function
compiled right after it (`--only` picks some of continuous, discrete,
population). The state and inputs are created before each first
call, so backend start-up is not counted; no two measurements share a jitted
function, so none reuses another's compiled code.

With `--cache DIR`, jax's persistent compilation cache in DIR is used instead
(every program cached, however small): run once to fill it, then again to time
a first call that loads the compiled program rather than compiling it.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

TARGETS = ("continuous", "discrete", "population")


def parse_args(argv: list[str]):
  # Only the standard library: `import jax` is what is measured.
  from benchmarks import _cli

  p = _cli.parser("_fresh", __doc__)
  p.add_argument("--n", type=_cli.positive_int, default=1024, help="members of the population target (default 1024)")
  _cli.add_shapes(p)
  p.add_argument("--cache", default=None, metavar="DIR", help="use jax's persistent compilation cache in DIR")
  p.add_argument(
    "--only",
    type=_cli.subset_of(TARGETS, "compile target(s)"),
    default=list(TARGETS),
    help="comma-separated subset of " + ",".join(TARGETS) + " (default all)",
  )
  return p.parse_args(argv)


def use_cache(cache) -> None:
  """Sets jax's persistent compilation cache up (in `cache`), or off."""
  if cache is None:  # Nothing may come from a persistent compilation cache.
    os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
    os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "false"
  else:
    os.environ["JAX_ENABLE_COMPILATION_CACHE"] = "true"
    os.environ["JAX_COMPILATION_CACHE_DIR"] = cache
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"


def measure_import() -> dict:
  t0 = time.perf_counter()
  import chex  # noqa: F401
  import flax  # noqa: F401
  import jax  # noqa: F401
  import optax  # noqa: F401

  t1 = time.perf_counter()
  import entropy_jax  # noqa: F401

  t2 = time.perf_counter()
  return {"baseline_s": t1 - t0, "added_s": t2 - t1}


def measure_compile(which: str, n: int, batch: int, action_dim: int, num_actions: int) -> dict:
  import jax
  import jax.numpy as jnp

  import entropy_jax as ej

  key = jax.random.key(0)
  if which == "continuous":
    state = ej.init_entropy_state(ej.continuous_target(action_dim))
    args = (state, jax.random.normal(key, (batch,)) - action_dim)
    fn = jax.jit(ej.continuous_update)
  elif which == "discrete":
    state = ej.init_entropy_state(ej.discrete_target(num_actions))
    log_probs = jax.nn.log_softmax(jax.random.normal(key, (batch, num_actions)))
    args = (state, jnp.exp(log_probs), log_probs)
    fn = jax.jit(ej.discrete_update)
  elif which == "population":
    state = ej.init_population(ej.continuous_target(action_dim), size=n)
    args = (state, jax.random.normal(key, (n, batch)) - action_dim)
    fn = jax.jit(jax.vmap(ej.continuous_update))
  else:
    raise ValueError(f"measure_compile: unknown target {which!r}; expected one of {TARGETS}.")
  jax.block_until_ready(args)

  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  first = time.perf_counter() - t0
  steady = []
  for _ in range(5):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    steady.append(time.perf_counter() - t0)
  # For scale: the first call of a trivial jitted function, compiled now.
  t0 = time.perf_counter()
  jax.block_until_ready(jax.jit(lambda v: v * 2.0 + 1.0)(args[1]))
  trivial = time.perf_counter() - t0
  return {
    "first_call_s": first,
    "trivial_first_call_s": trivial,
    "steady_call_s": statistics.median(steady),
    "compile_s": first - statistics.median(steady),
    "backend": jax.default_backend(),
  }


def main(argv: list[str]) -> int:
  args = parse_args(argv)
  use_cache(args.cache)
  result = {"import": measure_import()}
  for which in args.only:
    result[which] = measure_compile(which, args.n, args.batch, args.action_dim, args.num_actions)
  print(json.dumps(result))
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
