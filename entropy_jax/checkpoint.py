"""Saving and restoring an `EntropyState` (or a stacked population) to a file.

A checkpoint keeps every array leaf of the state: `log_alpha`, the whole
optimizer state (moments, counts, injected hyperparameters), `target`, `step`,
`skipped`, the bounds and the target schedule's bound parameters. It also
records a format version, a structure signature (each leaf's tree path,
shape and dtype) and a SHA-256 digest of the whole file. What cannot be written as
arrays, the static fields (the optax transformation `tx`, `loss_form`, the
schedule's function), comes back from the `like` state given to
`restore_checkpoint`; `loss_form` is recorded and must match.

Format: `flax.serialization` msgpack (already a dependency through flax), not
orbax-checkpoint. The state is a few scalars per member, so one small file
written in one call is all that is needed; orbax would add a dependency,
directory-per-step layouts and asynchronous machinery for sharded multi-host
arrays that this state does not have. Multi-process (not fully addressable)
arrays are out of scope: save from a process that can see every member.
Writes are atomic: a temporary file in
the same directory is written, flushed and fsync'ed, then `os.replace`d over
the target, so a process killed mid-save leaves the previous checkpoint
intact (at worst a stray `.<name>.*.tmp` file beside it).

Restoring checks everything (digest, version, structure, dtypes, shapes)
before building a single array, so a truncated, corrupted, foreign or
mismatched file raises `CheckpointError` and never yields a half-loaded state.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from entropy_jax.state import EntropyState

FORMAT_NAME = "entropy_jax.checkpoint"
FORMAT_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]
# One entry per leaf: (tree path, shape, dtype name).
Signature = list[tuple[str, tuple[int, ...], str]]


class CheckpointError(ValueError):
  """A checkpoint file that cannot be restored into the given state."""


def signature(state: Any) -> Signature:
  """The structure signature of a state: `(path, shape, dtype)` per leaf.

  Works on concrete states and on abstract ones (`jax.eval_shape` output).
  """
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  return [
      (jax.tree_util.keystr(path), tuple(int(d) for d in np.shape(leaf)), _dtype_name(leaf))
      for path, leaf in leaves
  ]


def save_checkpoint(path: PathLike, state: EntropyState) -> str:
  """Writes `state` to `path` atomically (temp file, fsync, `os.replace`).

  Args:
    path: the checkpoint file. Its directory must exist.
    state: a single `EntropyState` or a stacked population, with concrete
      (fully addressable) arrays; sharded arrays are gathered to the host.

  Returns:
    The path written, as a string.
  """
  path = os.fspath(path)
  data = _encode(state)
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise
  _fsync_directory(directory)
  return path


def restore_checkpoint(path: PathLike, like: EntropyState) -> EntropyState:
  """Reads a checkpoint written by `save_checkpoint` into the structure of `like`.

  Args:
    path: the checkpoint file.
    like: a state of the same structure (same optimizer, population size,
      schedule and `loss_form`), concrete or abstract (`jax.eval_shape`). Its
      static fields are used as they are. Where a leaf of `like` has a
      sharding (a `jax.Array`, or a `jax.ShapeDtypeStruct` with one), the
      restored leaf is placed with that sharding, so a population saved from
      8 devices can be restored onto 4.

  Returns:
    The restored state; every array leaf equals the saved one bit for bit.

  Raises:
    CheckpointError: the file is truncated, corrupted, not a checkpoint, of
      another format version, or its structure does not match `like`.
  """
  path = os.fspath(path)
  if not isinstance(like, EntropyState):
    raise TypeError(f"restore_checkpoint: `like` must be an EntropyState; got {type(like).__name__}.")
  with open(path, "rb") as f:
    data = f.read()
  header = _decode_header(data, path)
  expected = signature(like)
  saved = [(p, tuple(s), d) for p, s, d in header["signature"]]
  if saved != expected:
    raise CheckpointError(f"{path}: structure mismatch; {_diff(saved, expected)}")
  if header["loss_form"] != like.loss_form:
    raise CheckpointError(
        f"{path}: saved with loss_form={header['loss_form']!r}, but `like` has"
        f" loss_form={like.loss_form!r}."
    )
  values = _decode_leaves(header["leaves"], saved, path)
  like_leaves, treedef = jax.tree_util.tree_flatten(like)
  return jax.tree_util.tree_unflatten(
      treedef, [_place(value, leaf) for value, leaf in zip(values, like_leaves)]
  )


# ----------------------------------------------------------------------------
# Encoding. File layout: MAGIC (16 bytes) | SHA-256 of the payload (32 bytes) |
# payload, a flax.serialization msgpack map {version, loss_form, signature,
# leaves}. The digest covers the whole payload, so any truncation or flipped
# byte is reported as such before anything is parsed.

MAGIC = b"ENTROPY_JAX_CKPT"
_DIGEST = 32


def _encode(state: EntropyState) -> bytes:
  if not isinstance(state, EntropyState):
    raise TypeError(f"save_checkpoint: expected an EntropyState; got {type(state).__name__}.")
  return _pack({
      "version": FORMAT_VERSION,
      "loss_form": state.loss_form,
      "signature": [[p, list(s), d] for p, s, d in signature(state)],
      "leaves": [np.asarray(leaf) for leaf in jax.tree.leaves(state)],
  })


def _pack(payload: dict) -> bytes:
  body = serialization.msgpack_serialize(payload)
  return MAGIC + hashlib.sha256(body).digest() + body


def _unpack(data: bytes, path: str) -> dict:
  """The payload of a checkpoint file, after checking its magic and digest."""
  if not data.startswith(MAGIC):
    if MAGIC.startswith(data):
      raise CheckpointError(f"{path}: truncated ({len(data)} bytes).")
    raise CheckpointError(f"{path}: not an {FORMAT_NAME} file (no {MAGIC!r} header).")
  digest, body = data[len(MAGIC):len(MAGIC) + _DIGEST], data[len(MAGIC) + _DIGEST:]
  if hashlib.sha256(body).digest() != digest:
    raise CheckpointError(
        f"{path}: truncated or corrupted ({len(data)} bytes): the SHA-256"
        " digest of the contents does not match."
    )
  try:
    return serialization.msgpack_restore(body)
  except Exception as e:  # A digest collision aside, only a writer bug gets here.
    raise CheckpointError(f"{path}: unreadable contents: {type(e).__name__}: {e}") from e


def _decode_header(data: bytes, path: str) -> dict:
  header = _unpack(data, path)
  if not isinstance(header, dict) or "version" not in header:
    raise CheckpointError(f"{path}: no format version in the file.")
  if header["version"] != FORMAT_VERSION:
    raise CheckpointError(
        f"{path}: format version {header['version']!r}; this library reads"
        f" version {FORMAT_VERSION}."
    )
  keys = ("loss_form", "signature", "leaves")
  if any(k not in header for k in keys):
    raise CheckpointError(f"{path}: missing fields; expected {keys}.")
  return header


def _decode_leaves(values: Any, saved: Signature, path: str) -> list[np.ndarray]:
  if not isinstance(values, list) or len(values) != len(saved):
    raise CheckpointError(f"{path}: expected {len(saved)} arrays.")
  values = [np.asarray(v) for v in values]
  for value, (p, shape, dtype) in zip(values, saved):
    if value.shape != shape or value.dtype.name != dtype:
      raise CheckpointError(
          f"{path}: leaf {p} should be {dtype}{list(shape)}, got"
          f" {value.dtype.name}{list(value.shape)}."
      )
  return values


def _place(value: np.ndarray, like_leaf: Any) -> jax.Array:
  sharding = getattr(like_leaf, "sharding", None)
  if sharding is not None:
    return jax.device_put(value, sharding)
  return jnp.asarray(value)


def _dtype_name(leaf: Any) -> str:
  dtype = getattr(leaf, "dtype", None)
  return np.dtype(dtype if dtype is not None else np.asarray(leaf).dtype).name


def _diff(saved: Signature, expected: Signature) -> str:
  saved_map = {p: (s, d) for p, s, d in saved}
  expected_map = {p: (s, d) for p, s, d in expected}
  parts = []
  missing = [p for p in expected_map if p not in saved_map]
  extra = [p for p in saved_map if p not in expected_map]
  if missing:
    parts.append(f"leaves expected by `like` but not in the file: {missing}")
  if extra:
    parts.append(f"leaves in the file but not in `like`: {extra}")
  for p, (s, d) in expected_map.items():
    if p in saved_map and saved_map[p] != (s, d):
      ss, sd = saved_map[p]
      parts.append(f"leaf {p}: file has {sd}{list(ss)}, `like` has {d}{list(s)}")
  if not parts:
    parts.append("the leaves are in a different order")
  return "; ".join(parts[:6]) + ("; ..." if len(parts) > 6 else "") + "."


def _fsync_directory(directory: str) -> None:
  """Makes the rename durable (POSIX); a no-op where directories cannot be opened."""
  try:
    fd = os.open(directory, os.O_RDONLY)
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)
