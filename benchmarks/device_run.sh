#!/usr/bin/env bash
# The benchmark suite on a GPU machine that reaches no package registry.
#
#   bash benchmarks/device_run.sh [extra python -m benchmarks.run flags]
#
# That machine's image already has jax (with CUDA), optax, flax, chex, torch
# and matplotlib, and reaches no package registry. Velora and the examples'
# libraries travel as wheels in $WHEELS (default .whl/, git-ignored), which
# are installed into /tmp/site here. Results go to $OUT (default
# /tmp/entropy_jax_gpu): the suite, with populations
# up to N = 2**20.
set -uo pipefail
out=${OUT:-/tmp/entropy_jax_gpu}
wheels=${WHEELS:-.whl}
mkdir -p "$out"
if compgen -G "$wheels/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$wheels"/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem,driver_version --format=csv \
  2>&1 | tee "$out/nvidia_smi.txt"
python3 - <<'EOF' || exit 1
import jax, optax, flax, chex
print("jax", jax.__version__, jax.devices(), "optax", optax.__version__, "flax", flax.__version__, "chex", chex.__version__)
import entropy_jax as ej
s, m = jax.jit(ej.continuous_update)(ej.init_entropy_state(-6.0), jax.numpy.full((256,), -5.0))
print("smoke: alpha after one update", float(m["alpha"]), "on", s.log_alpha.devices())
EOF
timeout "${BENCH_TIMEOUT:-540}" python3 -m benchmarks.run --max-n 1048576 --out "$out/gpu" "$@" \
  2>&1 | tee "$out/run_log.txt"
