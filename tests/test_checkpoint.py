"""Tests of entropy_jax.checkpoint: nothing lost, atomic under a real SIGKILL and concurrent writers, clear errors.

- Round trips keep every leaf bit for bit (single state, population with
  per-member learning rates, bounds and schedule parameters); the static
  fields come from `like`.
- A restored state continues bit-identically to a run that never stopped.
- A child process saving a large population in a loop is SIGKILLed while a
  temporary file is being written; the previous checkpoint still restores
  exactly. A save that fails leaves the old file and no temporary file.
- Two processes and two threads writing one path: every read is one whole
  checkpoint of one writer, and the file ends as one writer's last.
- Truncated files, any flipped byte, foreign files (text, PNG, `np.save`,
  another msgpack), other versions, mismatched structures and unusable values
  raise `CheckpointError` (a ValueError) naming the path and what differs.
- A file written by entropy_jax 0.1.0 restores.
- Restored arrays follow the sharding of `like` (8 devices saved, 4 restored).
- Files get the permissions the process umask gives any new file.
"""

import base64
import functools
import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _trees import assert_bit_identical
from flax import serialization
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jax.tree_util import Partial

from entropy_jax import checkpoint
from entropy_jax.checkpoint import CheckpointError, restore_checkpoint, save_checkpoint
from entropy_jax.state import init_entropy_state, init_population
from entropy_jax.update import continuous_update

ADAM = optax.adam(1e-2)
INJECTED = optax.inject_hyperparams(optax.adam)(learning_rate=1e-3)
# The directory holding the entropy_jax under test (the checkout, or site-packages
# when the suite runs against an installed wheel), for child processes.
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(checkpoint.__file__)))


def linear_target(start, slope, step):
  return start + slope * step


def schedule(start, slope):
  """A target schedule whose parameters are leaves (so they are saved)."""
  return Partial(linear_target, jnp.float32(start), jnp.float32(slope))


@functools.partial(jax.jit, static_argnums=1)
def run(state, n):
  """`n` updates on random log-probs; update `i` (counting skips) always sees the same input."""

  def body(state, i):
    lp = jax.random.normal(jax.random.fold_in(jax.random.key(0), i), (4,)) - 1.0
    lp = jnp.where(i % 7 == 6, jnp.nan, lp)  # some skipped updates too
    return continuous_update(state, lp)[0], None

  return jax.lax.scan(body, state, state.step + state.skipped + jnp.arange(n))[0]


@functools.partial(jax.jit, static_argnums=1)
def run_population(pop, n):
  def body(pop, i):
    keys = jax.random.split(jax.random.fold_in(jax.random.key(1), i), pop.log_alpha.shape[0])
    lp = jax.vmap(lambda k: jax.random.normal(k, (4,)))(keys)
    return jax.vmap(continuous_update)(pop, lp)[0], None

  return jax.lax.scan(body, pop, pop.step[0] + jnp.arange(n))[0]


def fresh_single():
  return init_entropy_state(schedule(-1.0, -1e-3), initial_alpha=0.7, optimizer=ADAM, min_alpha=1e-2, max_alpha=10.0)


def fresh_population(n=4):
  pop = init_population(
    jnp.linspace(-2.0, -1.0, n),
    initial_alpha=jnp.linspace(0.5, 2.0, n),
    optimizer=INJECTED,
    min_alpha=1e-3,
    learning_rate=jnp.geomspace(1e-4, 1e-1, n),
  )
  return pop


# ---------------------------------------------------------------------------
# Round trips and continuation.


def test_single_state_round_trip_keeps_every_leaf(tmp_path):
  state = run(fresh_single(), 15)
  assert int(state.skipped) > 0 and int(state.step) > 0
  path = tmp_path / "alpha.ckpt"
  assert save_checkpoint(path, state) == str(path)
  restored = restore_checkpoint(path, fresh_single())
  assert_bit_identical(restored, state)
  # Static fields come from `like`.
  assert restored.tx is fresh_single().tx and restored.target_schedule.func is linear_target
  alpha_form = run(fresh_single().replace(loss_form="alpha"), 15)
  save_checkpoint(path, alpha_form)
  assert_bit_identical(restore_checkpoint(path, fresh_single().replace(loss_form="alpha")), alpha_form)
  save_checkpoint(path, state)
  # Schedule parameters are leaves: they were saved, not taken from `like`.
  like = init_entropy_state(schedule(5.0, 5.0), initial_alpha=0.7, optimizer=ADAM, min_alpha=1e-2, max_alpha=10.0)
  assert_bit_identical(restore_checkpoint(path, like), state)


def test_population_round_trip_keeps_hyperparameters(tmp_path):
  pop = run_population(fresh_population(), 6)
  path = tmp_path / "pop.ckpt"
  save_checkpoint(path, pop)
  restored = restore_checkpoint(path, init_population(-1.0, optimizer=INJECTED, min_alpha=1e-3, size=4))
  assert_bit_identical(restored, pop)
  np.testing.assert_array_equal(
    restored.opt_state.hyperparams["learning_rate"], np.geomspace(1e-4, 1e-1, 4).astype(np.float32)
  )


def test_restore_into_an_abstract_like(tmp_path):
  state = run(fresh_single(), 15)
  save_checkpoint(tmp_path / "a.ckpt", state)
  like = jax.eval_shape(fresh_single)
  assert_bit_identical(restore_checkpoint(tmp_path / "a.ckpt", like), state)


def test_restored_run_continues_bit_identically(tmp_path):
  straight = run(fresh_single(), 30)
  half = run(fresh_single(), 15)
  save_checkpoint(tmp_path / "half.ckpt", half)
  resumed = run(restore_checkpoint(tmp_path / "half.ckpt", fresh_single()), 15)
  assert_bit_identical(resumed, straight)

  pop_straight = run_population(run_population(fresh_population(), 6), 6)
  pop_half = run_population(fresh_population(), 6)
  save_checkpoint(tmp_path / "pop.ckpt", pop_half)
  pop_resumed = run_population(restore_checkpoint(tmp_path / "pop.ckpt", fresh_population()), 6)
  assert_bit_identical(pop_resumed, pop_straight)


def test_restore_follows_the_sharding_of_like(tmp_path):
  devices = jax.devices()
  assert len(devices) >= 8, (
    f"needs 8 devices; jax sees {len(devices)}. tests/conftest.py and `make test` set"
    " XLA_FLAGS=--xla_force_host_platform_device_count=8 before jax starts."
  )
  mesh8 = Mesh(np.array(devices[:8]), ("pop",))
  mesh4 = Mesh(np.array(devices[4:8]), ("pop",))
  pop = fresh_population(8)
  sharded = jax.device_put(pop, NamedSharding(mesh8, PartitionSpec("pop")))
  save_checkpoint(tmp_path / "pop8.ckpt", sharded)
  like = jax.device_put(fresh_population(8), NamedSharding(mesh4, PartitionSpec("pop")))
  restored = restore_checkpoint(tmp_path / "pop8.ckpt", like)
  assert_bit_identical(restored, pop)
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(like)):
    assert got.sharding == want.sharding
    assert {d.id for d in got.sharding.device_set} == {d.id for d in devices[4:8]}


# ---------------------------------------------------------------------------
# Atomicity and concurrent writers.

CHILD = textwrap.dedent("""
    import itertools
    import sys
    import jax.numpy as jnp
    from entropy_jax.checkpoint import save_checkpoint
    from entropy_jax.state import init_population

    path, n, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    base = init_population(-1.0, size=n)
    for k in itertools.islice(itertools.count(first), count if count >= 0 else None):
      # Version k: every member's step is k and its target -k.
      save_checkpoint(path, base.replace(step=jnp.full((n,), k, jnp.int32),
                                         target=jnp.full((n,), -k, jnp.float32)))
      print(k, flush=True)
""")


def version(base, k):
  n = base.log_alpha.shape[0]
  return base.replace(step=jnp.full((n,), k, jnp.int32), target=jnp.full((n,), -k, jnp.float32))


def spawn(path, n, first, count=-1):
  """A child process saving versions `first, first + 1, ...` (`count` of them, or forever) to `path`."""
  env = dict(
    os.environ,
    PYTHONPATH=PACKAGE_PARENT + os.pathsep + os.environ.get("PYTHONPATH", ""),
    XLA_FLAGS="",
    JAX_PLATFORMS="cpu",
  )
  return subprocess.Popen(
    [sys.executable, "-c", CHILD, str(path), str(n), str(first), str(count)],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    env=env,
    cwd=os.path.dirname(path),  # not the checkout: `python -c` puts the working directory first on sys.path
  )


def temporaries(directory):
  return [f for f in os.listdir(directory) if f.endswith(".tmp")]


def test_sigkill_mid_save_leaves_the_previous_checkpoint_intact(tmp_path):
  n = 1_000_000  # ~36 MB per checkpoint: the write takes long enough to be caught.
  path = tmp_path / "pop.ckpt"
  base = init_population(-1.0, size=n)
  caught = 0
  for _ in range(4):
    child = spawn(path, n, 0)
    saved = []
    reader = threading.Thread(
      target=lambda saved=saved, child=child: saved.extend(int(line) for line in child.stdout), daemon=True
    )
    reader.start()
    deadline = time.monotonic() + 120
    try:
      while not saved:  # wait for at least one complete checkpoint
        assert child.poll() is None, child.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
      # Kill as soon as a temporary file exists: the child is inside a save.
      while not temporaries(tmp_path):
        assert time.monotonic() < deadline
        time.sleep(0.0005)
      child.send_signal(signal.SIGKILL)
    finally:
      child.kill()
      child.wait()
    reader.join(timeout=10)
    assert child.returncode == -signal.SIGKILL
    leftovers = temporaries(tmp_path)
    last = saved[-1]
    restored = restore_checkpoint(path, base)
    k = int(np.asarray(restored.step)[0])
    # The file holds a complete version: the last one reported, or the one
    # whose rename completed just before the kill.
    assert k in (last, last + 1), (k, last)
    assert_bit_identical(restored, version(base, k))
    if leftovers:  # The kill landed while the temporary file was being written.
      partial = os.path.getsize(tmp_path / leftovers[0])
      assert partial < os.path.getsize(path) or k == last
      caught += 1
      break
    # The rename won the race against the kill; try again.
  assert caught == 1, "never caught the child mid-save"


def test_a_failed_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
  path = tmp_path / "a.ckpt"
  old = run(fresh_single(), 15)
  save_checkpoint(path, old)

  def broken_fsync(fd):
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(checkpoint.os, "fsync", broken_fsync)
  with pytest.raises(OSError, match="No space left"):
    save_checkpoint(path, run(old, 15))
  monkeypatch.undo()
  assert os.listdir(tmp_path) == ["a.ckpt"]
  assert_bit_identical(restore_checkpoint(path, fresh_single()), old)
  # The rename itself fails: the target is a directory.
  (tmp_path / "a directory").mkdir()
  with pytest.raises(IsADirectoryError):
    save_checkpoint(tmp_path / "a directory", old)
  assert sorted(os.listdir(tmp_path)) == ["a directory", "a.ckpt"]
  with pytest.raises(TypeError, match=r"save_checkpoint: expected an EntropyState; got dict"):
    save_checkpoint(path, {"log_alpha": 0.0})
  assert sorted(os.listdir(tmp_path)) == ["a directory", "a.ckpt"]
  assert_bit_identical(restore_checkpoint(path, fresh_single()), old)


def test_concurrent_writers_leave_one_whole_checkpoint_and_the_last_rename_wins(tmp_path):
  n, count = 1000, 100
  path = tmp_path / "pop.ckpt"
  base = init_population(-1.0, size=n)
  save_checkpoint(path, version(base, 0))
  children = [spawn(path, n, first, 2 * count) for first in (1000, 2000)]
  for child in children:  # both processes are saving
    assert child.stdout.readline(), child.stderr.read()

  def write(first):
    for k in range(first, first + count):
      save_checkpoint(path, version(base, k))

  threads = [threading.Thread(target=write, args=(first,)) for first in (3000, 4000)]
  for thread in threads:
    thread.start()
  writers = set()
  while any(t.is_alive() for t in threads) or any(c.poll() is None for c in children):
    restored = restore_checkpoint(path, base)  # never a mix of versions or a partial file
    k = int(np.asarray(restored.step)[0])
    assert_bit_identical(restored, version(base, k))
    writers.add(k // 1000)
  for thread in threads:
    thread.join()
  for child in children:
    assert child.wait() == 0, child.stderr.read()
  assert len(writers) >= 2, writers  # the reads saw the writers interleave
  last = int(np.asarray(restore_checkpoint(path, base).step)[0])
  assert last in {1000 + 2 * count - 1, 2000 + 2 * count - 1, 3000 + count - 1, 4000 + count - 1}
  assert temporaries(tmp_path) == []


# ---------------------------------------------------------------------------
# Bad files: a clear error naming the file, never a half-loaded state.


@pytest.fixture(scope="module")
def good_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("ckpt") / "good.ckpt"
  state = run(fresh_single(), 15)
  save_checkpoint(path, state)
  return path, path.read_bytes(), state


def write(tmp_path, data):
  path = tmp_path / "bad.ckpt"
  path.write_bytes(data)
  return path


def refused(path, match=r"truncated, corrupted or not an entropy_jax checkpoint"):
  """Restoring `path` raises a CheckpointError naming the function and the file, and saying `match`."""
  with pytest.raises(CheckpointError, match=rf"^restore_checkpoint \({re.escape(str(path))}\): .*{match}"):
    restore_checkpoint(path, fresh_single())


@pytest.mark.parametrize("cut", [0, 5, 16, 31, 32, 33, 40, 100, -100, -1])
def test_truncated_file(tmp_path, good_file, cut):
  _, data, _ = good_file
  refused(write(tmp_path, data[:cut]))


def test_every_flipped_byte_is_refused(tmp_path, good_file):
  # msgpack alone reads a flipped byte inside an array as another value: the digest refuses it.
  _, data, _ = good_file
  for offset in range(len(data)):
    corrupted = bytearray(data)
    corrupted[offset] ^= 0x10
    refused(write(tmp_path, bytes(corrupted)))


def test_extra_bytes_and_foreign_files(tmp_path, good_file):
  _, data, _ = good_file
  numpy_file = io.BytesIO()
  np.save(numpy_file, np.zeros(3, np.float32))
  foreign = [
    data + b"\0",
    b"log_alpha = 0.0\n",
    b"\x89PNG\r\n\x1a\n" + bytes(64),
    numpy_file.getvalue(),
    serialization.msgpack_serialize({"params": np.zeros(3)}),
  ]
  for contents in foreign:
    refused(write(tmp_path, contents))
  with pytest.raises(FileNotFoundError):
    restore_checkpoint(tmp_path / "missing.ckpt", fresh_single())
  with pytest.raises(TypeError, match=r"`like` must be an EntropyState; got dict"):
    restore_checkpoint(write(tmp_path, data), {"log_alpha": 0.0})


# A checkpoint of `init_entropy_state(-2.0, initial_alpha=1.0)` with step 7 and 2 skipped updates, as
# entropy_jax 0.1.0 wrote it: the 16 bytes ENTROPY_JAX_CKPT, the SHA-256 digest, the msgpack payload.
FILE_0_1_0 = base64.b64decode(
  "RU5UUk9QWV9KQVhfQ0tQVI2xFLBLTDEHnweQKH9/9OWqXNz0+rKjNRD/4TfMCgn/hKZsZWF2ZXOZ2AGTkKdmbG9hdDMyxAQAAAAAxw4B"
  "k5ClaW50MzLEBAAAAADYAZOQp2Zsb2F0MzLEBAAAAADYAZOQp2Zsb2F0MzLEBAAAAADYAZOQp2Zsb2F0MzLEBAAAAMDHDgGTkKVpbnQz"
  "MsQEBwAAAMcOAZOQpWludDMyxAQCAAAA2AGTkKdmbG9hdDMyxAQAAK7C2AGTkKdmbG9hdDMyxAQAALBCqWxvc3NfZm9ybaNsb2epc2ln"
  "bmF0dXJlmZOqLmxvZ19hbHBoYZCnZmxvYXQzMpOzLm9wdF9zdGF0ZVswXS5jb3VudJClaW50MzKTsC5vcHRfc3RhdGVbMF0ubXWQp2Zs"
  "b2F0MzKTsC5vcHRfc3RhdGVbMF0ubnWQp2Zsb2F0MzKTpy50YXJnZXSQp2Zsb2F0MzKTpS5zdGVwkKVpbnQzMpOoLnNraXBwZWSQpWlu"
  "dDMyk64ubG9nX2FscGhhX21pbpCnZmxvYXQzMpOuLmxvZ19hbHBoYV9tYXiQp2Zsb2F0MzKndmVyc2lvbgE="
)


def test_a_file_of_entropy_jax_0_1_0_restores(tmp_path):
  like = init_entropy_state(-1.0)
  restored = restore_checkpoint(write(tmp_path, FILE_0_1_0), like)
  assert_bit_identical(
    restored, init_entropy_state(-2.0, initial_alpha=1.0).replace(step=jnp.int32(7), skipped=jnp.int32(2))
  )
  assert restored.tx is like.tx
  refused(write(tmp_path, FILE_0_1_0[:-1]))


def file_of(payload):
  """A well-formed checkpoint file (the SHA-256 digest of the msgpack body, then the body) of any payload."""
  body = serialization.msgpack_serialize(payload)
  return hashlib.sha256(body).digest() + body


def test_a_file_of_another_format_version_is_refused(tmp_path, good_file):
  _, _, state = good_file
  payload = checkpoint.encode_state(state)
  other = checkpoint.FORMAT_VERSION + 1
  path = write(tmp_path, file_of({**payload, "version": other}))
  refused(path, rf"version {checkpoint.FORMAT_VERSION}; got {other}")
  del payload["version"]
  refused(write(tmp_path, file_of(payload)), rf"version {checkpoint.FORMAT_VERSION}; got None")
  refused(write(tmp_path, file_of({"version": checkpoint.FORMAT_VERSION})), r"unreadable payload: KeyError")


@pytest.mark.parametrize(
  "leaf, value, message",
  [
    (".log_alpha", np.float32(np.nan), r"`state\.log_alpha` must lie in \[[^]]+\]; got nan"),
    (".log_alpha", np.float32(5.0), r"state\.log_alpha 5\.0 lies outside its bounds"),
    (".target", np.float32(np.inf), r"`state\.target` must be finite and representable in float32"),
    (".skipped", np.int32(-3), r"state\.skipped must be >= 0; got -3"),
    (".step", np.float32(3.0), r"leaf \.step should be int32\[\], got float32\[\]"),
  ],
)
def test_a_file_whose_values_no_constructor_accepts_is_refused(tmp_path, good_file, leaf, value, message):
  # The same rules as the constructors and the compat classes' load_state_dict.
  _, _, state = good_file
  payload = checkpoint.encode_state(state)
  paths = [p for p, _, _ in payload["signature"]]
  payload["leaves"][paths.index(leaf)] = value
  refused(write(tmp_path, file_of(payload)), message)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_files_get_the_permissions_of_the_process_umask(tmp_path, umask):
  old = os.umask(umask)
  try:
    path = save_checkpoint(tmp_path / "a.ckpt", fresh_single())
    save_checkpoint(path, fresh_single())  # replacing a file: the new one's mode, too
  finally:
    os.umask(old)
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask


MISMATCHES = {
  "other optimizer": (
    lambda: init_entropy_state(schedule(-1.0, 0.0), optimizer=optax.sgd(0.1)),
    r"structure mismatch; leaf \.opt_state\[0\]\.count should be absent, got int32\[\]",
  ),
  "a population": (
    lambda: init_population(-1.0, optimizer=ADAM, size=3),
    r"structure mismatch; leaf \.log_alpha should be float32\[3\], got float32\[\]",
  ),
  "no schedule": (
    lambda: init_entropy_state(-1.0, optimizer=ADAM),
    r"structure mismatch; leaf \.target_schedule.* should be absent, got float32\[\]",
  ),
  "other loss form": (
    lambda: init_entropy_state(schedule(-1.0, 0.0), optimizer=ADAM, loss_form="alpha"),
    r"saved with loss_form='log'; `like` has 'alpha'",
  ),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_structure_mismatch(good_file, case):
  path, _, _ = good_file
  make_like, message = MISMATCHES[case]
  with pytest.raises(CheckpointError, match=rf"^restore_checkpoint \({re.escape(str(path))}\): {message}"):
    restore_checkpoint(path, make_like())


def test_population_size_mismatch(tmp_path):
  save_checkpoint(tmp_path / "pop4.ckpt", fresh_population(4))
  with pytest.raises(
    CheckpointError, match=r"structure mismatch; leaf \.log_alpha should be float32\[5\], got float32\[4\]"
  ):
    restore_checkpoint(tmp_path / "pop4.ckpt", fresh_population(5))
  # A different optimizer of the same structure cannot be told apart by the
  # file; its hyperparameters, being state, are restored from the file.
  other = init_population(
    -1.0, optimizer=optax.inject_hyperparams(optax.adam)(learning_rate=0.5), size=4, min_alpha=1e-3
  )
  restored = restore_checkpoint(tmp_path / "pop4.ckpt", other)
  np.testing.assert_array_equal(
    restored.opt_state.hyperparams["learning_rate"], np.geomspace(1e-4, 1e-1, 4).astype(np.float32)
  )


def test_check_structure_compares_every_leaf_path_shape_and_dtype():
  like = init_entropy_state(-1.0, optimizer=ADAM)
  checkpoint.check_structure(init_entropy_state(-3.0, initial_alpha=0.5, optimizer=ADAM), like)  # values may differ
  checkpoint.check_structure(checkpoint.signature(like), like)  # a checkpoint's record of a state
  checkpoint.check_structure(jax.eval_shape(lambda: like), like)  # an abstract state
  with pytest.raises(
    CheckpointError, match=r"^check_structure: .*leaf \.log_alpha should be float32\[\], got float32\[3\]"
  ):
    checkpoint.check_structure(init_population(-1.0, optimizer=ADAM, size=3), like)
  with pytest.raises(CheckpointError, match=r"leaf \.opt_state\[0\]\.count should be absent, got int32\[\]"):
    checkpoint.check_structure(like, init_entropy_state(-1.0, optimizer=optax.sgd(0.1)))
  with pytest.raises(CheckpointError, match=r"leaf \.step should be int32\[\], got float32\[\]"):
    checkpoint.check_structure(like.replace(step=jnp.float32(0.0)), like)
