"""Two processes on localhost, joined by jax.distributed, each owning half the
population: the gathered result must equal the single-process run bit for bit.

The test starts the processes itself (`_multihost_worker.py`), on a coordinator
port picked at run time, bounds them with a timeout, and kills and reaps them
in a `finally`, whatever happens.
"""

from __future__ import annotations

import os
import pathlib
import re
import socket
import subprocess
import sys
import time

import _multihost_worker as worker
import jax
import numpy as np
import pytest

from benchmarks import hlo_report
from entropy_jax.update import continuous_update

pytestmark = pytest.mark.slow  # two real processes: about 20 s to start

WORKER = pathlib.Path(worker.__file__).resolve()
NUM_PROCESSES = 2
DEVICES_PER_PROCESS = 4
TIMEOUT_S = 240  # a hang guard only: the run takes ~10-30 s on 2 busy cores


def _free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _worker_env(devices: int) -> dict[str, str]:
  env = dict(os.environ)
  flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
  env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _tail(path: pathlib.Path, chars: int = 3000) -> str:
  return path.read_text(errors="replace")[-chars:] if path.exists() else "<no log>"


def run_processes(argvs, logs, timeout_s, env, procs=None):
  """Runs one process per argv to completion; kills and reaps them all on exit.

  Returns the exit codes. Raises `TimeoutError` (with the logs) if they do not
  all finish within `timeout_s`. The `Popen`s are appended to `procs` if given.
  """
  procs = [] if procs is None else procs
  try:
    for argv, log in zip(argvs, logs):
      with open(log, "wb") as f:
        procs.append(subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=WORKER.parent))
    deadline = time.monotonic() + timeout_s
    codes = []
    for proc in procs:
      try:
        codes.append(proc.wait(timeout=max(deadline - time.monotonic(), 0.1)))
      except subprocess.TimeoutExpired:
        raise TimeoutError(
          f"worker pid {proc.pid} still running after {timeout_s} s; logs:\n"
          + "\n".join(f"--- {log}\n{_tail(log)}" for log in logs)
        ) from None
    return codes
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
      proc.wait()


def _worker_argvs(address, prefix):
  return [[sys.executable, str(WORKER), address, str(NUM_PROCESSES), str(i), str(prefix)] for i in range(NUM_PROCESSES)]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("multihost")
  logs = [tmp / f"worker{i}.log" for i in range(NUM_PROCESSES)]
  argvs = _worker_argvs(f"127.0.0.1:{_free_port()}", tmp / "out")
  codes = run_processes(argvs, logs, TIMEOUT_S, _worker_env(DEVICES_PER_PROCESS))
  assert codes == [0] * NUM_PROCESSES, "workers failed:\n" + "\n".join(
    f"--- {log} (exit {code})\n{_tail(log)}" for log, code in zip(logs, codes)
  )
  return [dict(np.load(tmp / f"out.{i}.npz")) for i in range(NUM_PROCESSES)]


@pytest.fixture(scope="module")
def reference():
  """The same updates in this one process on one CPU device, by jit(vmap), one
  block of `N / 8` members at a time: the program each of the 8 devices runs.

  (All `N` members in one block may differ in the last bits: XLA:CPU's
  reduction order depends on the array's shape; see tests/test_sharding.py.)
  """
  population, log_probs, weights = worker.inputs()
  update = jax.jit(jax.vmap(lambda s, lp, w: continuous_update(s, lp, weights=w)))
  size = worker.N // (NUM_PROCESSES * DEVICES_PER_PROCESS)
  blocks = []
  for start in range(0, worker.N, size):
    block = jax.tree.map(lambda x, start=start: x[start : start + size], (population, log_probs, weights))
    block = jax.device_put(block, jax.devices("cpu")[0])  # the workers' platform
    blocks.append(worker.run(lambda s, lp, weights: update(s, lp, weights), *block))
  state, metrics = jax.tree.map(lambda *xs: np.concatenate(xs), *blocks)
  return {
    jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in jax.tree_util.tree_leaves_with_path((state, metrics))
  }


def test_processes_each_own_half_of_the_global_mesh(two_process_results):
  half = worker.N // NUM_PROCESSES
  rows_per_device = worker.N // (NUM_PROCESSES * DEVICES_PER_PROCESS)
  for i, result in enumerate(two_process_results):
    assert int(result["process_index"]) == i
    assert int(result["process_count"]) == NUM_PROCESSES
    assert int(result["device_count"]) == NUM_PROCESSES * DEVICES_PER_PROCESS
    for name in ("jit", "shard_map"):
      expected = np.arange(i * half, (i + 1) * half, rows_per_device)
      np.testing.assert_array_equal(result[f"{name}/local_row_starts"], expected)


@pytest.mark.parametrize("name", ["jit", "shard_map"])
def test_gathered_result_equals_single_process_run_bitwise(two_process_results, reference, name):
  assert len(reference) > 10
  # The state moved: the comparison is not between two copies of the input.
  start = worker.inputs()[0].log_alpha
  assert not np.array_equal(reference["[0].log_alpha"], np.asarray(start))
  assert np.all(reference["[0].step"] == worker.STEPS)
  for i, result in enumerate(two_process_results):
    got = {k[len(name) + 1 :]: v for k, v in result.items() if k.startswith(f"{name}/[")}
    assert got.keys() == reference.keys()
    for key, expected in reference.items():
      assert got[key].dtype == expected.dtype and got[key].shape == expected.shape, (i, key)
      assert got[key].tobytes() == expected.tobytes(), f"process {i}: {key}: {got[key]} != {expected}"


def test_compiled_multihost_update_has_no_collectives(two_process_results):
  for result in two_process_results:
    for name in ("jit", "shard_map"):
      assert hlo_report.collectives(str(result[f"{name}/hlo"])) == []


def test_a_hung_worker_is_killed_and_reaped(tmp_path):
  # Process 0 of 2 with no partner waits for it at initialize: it must be
  # killed at the timeout, and the error must carry its log.
  port = _free_port()
  argv = _worker_argvs(f"127.0.0.1:{port}", tmp_path / "out")[:1]
  log = tmp_path / "lonely.log"
  procs = []
  started = time.monotonic()
  with pytest.raises(TimeoutError, match=r"still running after 3 s; logs:"):
    run_processes(argv, [log], 3, _worker_env(1), procs)
  assert time.monotonic() - started < 60
  assert len(procs) == 1
  # Reaped (returncode set by wait) after being killed by SIGKILL.
  assert procs[0].returncode == -9, procs[0].returncode
  with pytest.raises(ChildProcessError):
    os.waitpid(procs[0].pid, os.WNOHANG)
  assert not (tmp_path / "out.0.npz").exists()
