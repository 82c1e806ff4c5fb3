"""Saving and restoring an `EntropyState` (or a stacked population).

A checkpoint keeps every array leaf of the state: `log_alpha`, the whole
optimizer state (moments, counts, injected hyperparameters), `target`, `step`,
`skipped`, the bounds and the target schedule's bound parameters. It also
records a format version and a structure signature (each leaf's tree path,
shape and dtype). What cannot be written as arrays, the static fields (the
optax transformation `tx`, `loss_form`, the schedule's function), comes back
from the `like` state given on restore; `loss_form` is recorded and must
match.

One set of rules serves both formats that hold a state: the checkpoint file
(`save_checkpoint` / `restore_checkpoint`) and the Velora-compatible classes'
`state_dict()`, which carries the same payload (`encode_state` /
`decode_state`). Decoding checks the version, the structure and every
leaf's shape and dtype (`check_structure`, which also serves whoever
replaces a state with one of the same structure), and then the values as
the constructors do, before it returns a state: a
truncated, corrupted, foreign, mismatched or unusable payload raises
`CheckpointError` and never yields a half-loaded state.

The file: `flax.serialization` msgpack (a dependency already, through flax)
behind a magic string and a SHA-256 digest of the payload. orbax-checkpoint is
made for large sharded multi-host arrays, with a directory per step and
asynchronous writes; this state is a few scalars per member, written in one
call. Multi-process (not fully addressable) arrays are out of scope: save from
a process that can see every member. Writes are atomic: a temporary file in
the same directory is written, flushed and fsync'ed, then `os.replace`d over
the target, so a process killed mid-save leaves the previous checkpoint intact
(at worst a stray `.<name>.*.tmp` file beside it). The file gets the
permissions any file the process creates gets (mode 0o666 less the umask).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from typing import Any, Union

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from entropy_jax import _checks
from entropy_jax.state import LOG_ALPHA_MAX, LOG_ALPHA_MIN, EntropyState

FORMAT_NAME = "entropy_jax.checkpoint"
FORMAT_VERSION = 1

PathLike = Union[str, "os.PathLike[str]"]
# One entry per leaf: (tree path, shape, dtype name).
Signature = list[tuple[str, tuple[int, ...], str]]


class CheckpointError(ValueError):
  """A checkpoint (a file or a `state_dict`) that cannot be restored into the given state."""


def signature(state: Any) -> Signature:
  """The structure signature of a state: `(path, shape, dtype)` per leaf.

  Works on concrete states and on abstract ones (`jax.eval_shape` output).
  """
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  return [
    (jax.tree_util.keystr(path), tuple(int(d) for d in np.shape(leaf)), _dtype_name(leaf)) for path, leaf in leaves
  ]


@_checks.public
def check_structure(state: Any, like: EntropyState) -> None:
  """Raises `ValueError` unless `state` has the structure of `like`.

  The one check of a state's structure: the same tree (the same optimizer,
  schedule and `loss_form`, when `state` is a state) and the same shape and
  dtype at every leaf.

  Args:
    state: a state (concrete or abstract), or a `signature` of one (what a
      checkpoint records).
    like: the state it must match.

  Raises:
    ValueError: the message names the leaves that differ.
  """
  if isinstance(state, EntropyState):
    same_leaves = [p for p, _, _ in signature(state)] == [p for p, _, _ in signature(like)]
    tree: Any = jax.tree_util.tree_structure(state)  # PyTreeDef: equal when the static fields are
    if same_leaves and tree != jax.tree_util.tree_structure(like):
      raise ValueError(
        f"{_checks.caller()}: structure mismatch; the static fields (the optimizer, the schedule's function or"
        f" loss_form) differ; loss_form is {state.loss_form!r}, `like` has {like.loss_form!r}."
      )
    state = signature(state)
  expected = signature(like)
  if state != expected:
    raise ValueError(f"{_checks.caller()}: structure mismatch; {_diff(state, expected)}")


@_checks.public
def encode_state(state: EntropyState) -> dict[str, Any]:
  """The payload of a checkpoint: plain Python and NumPy values.

  `{"version", "loss_form", "signature", "leaves"}`, `leaves` holding every
  array leaf of `state` as a NumPy array, in `jax.tree.leaves` order.
  Sharded arrays are gathered to the host.
  """
  if not isinstance(state, EntropyState):
    raise TypeError(f"{_checks.caller()}: expected an EntropyState; got {type(state).__name__}.")
  return {
    "version": FORMAT_VERSION,
    "loss_form": state.loss_form,
    "signature": [[p, list(s), d] for p, s, d in signature(state)],
    "leaves": [np.asarray(leaf) for leaf in jax.tree.leaves(state)],
  }


@_checks.public
def decode_state(payload: Any, like: EntropyState) -> EntropyState:
  """The state an `encode_state` payload holds, checked, in the structure of `like`.

  Args:
    payload: what `encode_state` returned (possibly after a round trip
      through msgpack or pickle).
    like: a state of the same structure (same optimizer, population size,
      schedule and `loss_form`), concrete or abstract (`jax.eval_shape`). Its
      static fields are used as they are. Where a leaf of `like` has a
      sharding (a `jax.Array`, or a `jax.ShapeDtypeStruct` with one), the
      restored leaf is placed with that sharding.

  Returns:
    The state; every array leaf equals the saved one bit for bit.

  Raises:
    CheckpointError: another format version, missing fields, a structure or
      leaf that does not match `like`, or values that no constructor would
      accept (a `log_alpha` outside its bounds, bounds outside
      `[LOG_ALPHA_MIN, LOG_ALPHA_MAX]`, a target float32 cannot hold,
      negative counters or learning rates).
  """
  if not isinstance(like, EntropyState):
    raise TypeError(f"{_checks.caller()}: `like` must be an EntropyState; got {type(like).__name__}.")
  if not isinstance(payload, dict) or "version" not in payload:
    raise CheckpointError(f"{_checks.caller()}: no format version in the payload.")
  if payload["version"] != FORMAT_VERSION:
    raise CheckpointError(
      f"{_checks.caller()}: format version {payload['version']!r}; this library reads version {FORMAT_VERSION}."
    )
  keys = ("loss_form", "signature", "leaves")
  if any(k not in payload for k in keys):
    raise CheckpointError(f"{_checks.caller()}: missing fields; expected {keys}.")
  try:
    saved = [(str(p), tuple(int(d) for d in s), str(d)) for p, s, d in payload["signature"]]
  except (TypeError, ValueError) as e:
    raise CheckpointError(f"{_checks.caller()}: unreadable structure signature: {e}") from None
  try:
    check_structure(saved, like)
  except ValueError as e:
    raise CheckpointError(str(e)) from None
  if payload["loss_form"] != like.loss_form:
    raise CheckpointError(
      f"{_checks.caller()}: saved with loss_form={payload['loss_form']!r}, but `like` has loss_form={like.loss_form!r}."
    )
  values = _decode_leaves(payload["leaves"], saved)
  like_leaves, treedef = jax.tree_util.tree_flatten(like)
  try:
    _check_values(jax.tree_util.tree_unflatten(treedef, values))
  except ValueError as e:
    raise CheckpointError(str(e)) from None
  return jax.tree_util.tree_unflatten(treedef, [_place(value, leaf) for value, leaf in zip(values, like_leaves)])


@_checks.public
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
  if not isinstance(state, EntropyState):
    raise TypeError(f"{_checks.caller()}: expected an EntropyState; got {type(state).__name__}.")
  body = serialization.msgpack_serialize(encode_state(state))
  data = MAGIC + hashlib.sha256(body).digest() + body
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = _create_temporary(directory, os.path.basename(path))
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


@_checks.public
def restore_checkpoint(path: PathLike, like: EntropyState) -> EntropyState:
  """Reads a checkpoint written by `save_checkpoint` into the structure of `like`.

  Args:
    path: the checkpoint file.
    like: as for `decode_state`: a state of the same structure, concrete or
      abstract; restored leaves follow its shardings, so a population saved
      from 8 devices can be restored onto 4.

  Returns:
    The restored state; every array leaf equals the saved one bit for bit.

  Raises:
    CheckpointError: the file is truncated, corrupted, not a checkpoint, of
      another format version, its structure does not match `like`, or its
      values are not usable.
  """
  path = os.fspath(path)
  if not isinstance(like, EntropyState):
    raise TypeError(f"{_checks.caller()}: `like` must be an EntropyState; got {type(like).__name__}.")
  with open(path, "rb") as f:
    data = f.read()
  with _checks.within(path):
    return decode_state(_read_payload(data), like)


# ----------------------------------------------------------------------------
# The file: MAGIC (16 bytes) | SHA-256 of the payload (32 bytes) | payload, a
# flax.serialization msgpack map. The digest covers the whole payload, so any
# truncation or flipped byte is reported as such before anything is parsed.

MAGIC = b"ENTROPY_JAX_CKPT"
_DIGEST = 32


def _read_payload(data: bytes) -> Any:
  """The payload of a checkpoint file, after checking its magic and digest."""
  if not data.startswith(MAGIC):
    if MAGIC.startswith(data):
      raise CheckpointError(f"{_checks.caller()}: truncated ({len(data)} bytes).")
    raise CheckpointError(f"{_checks.caller()}: not an {FORMAT_NAME} file (no {MAGIC!r} header).")
  digest, body = data[len(MAGIC) : len(MAGIC) + _DIGEST], data[len(MAGIC) + _DIGEST :]
  if hashlib.sha256(body).digest() != digest:
    raise CheckpointError(
      f"{_checks.caller()}: truncated or corrupted ({len(data)} bytes): the SHA-256 digest of the contents does"
      " not match."
    )
  try:
    return serialization.msgpack_restore(body)
  except Exception as e:  # A digest collision aside, only a writer bug gets here.
    raise CheckpointError(f"{_checks.caller()}: unreadable contents: {type(e).__name__}: {e}") from e


def _create_temporary(directory: str, name: str) -> tuple[int, str]:
  """A new file `.<name>.<random>.tmp` in `directory`, opened for writing.

  Created with mode 0o666, which the kernel reduces by the process umask, as
  for any file the process creates (`tempfile.mkstemp` would force 0o600).
  """
  while True:
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
    try:
      return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
    except FileExistsError:
      continue


def _decode_leaves(values: Any, saved: Signature) -> list[np.ndarray]:
  if not isinstance(values, list) or len(values) != len(saved):
    raise CheckpointError(f"{_checks.caller()}: expected {len(saved)} arrays.")
  out = []
  for value, (p, shape, dtype) in zip(values, saved):
    try:
      value = np.asarray(value)
    except Exception as e:
      raise CheckpointError(f"{_checks.caller()}: leaf {p} is not an array: {e}") from None
    if value.shape != shape or value.dtype.name != dtype:
      raise CheckpointError(
        f"{_checks.caller()}: leaf {p} should be {dtype}{list(shape)}, got {value.dtype.name}{list(value.shape)}."
      )
    out.append(value)
  return out


def _check_values(state: EntropyState) -> None:
  """Raises `ValueError` unless a concrete state's values are usable.

  The rules of the constructors, for a state that comes from elsewhere:
  `log_alpha` finite and within its bounds, the bounds within
  `[LOG_ALPHA_MIN, LOG_ALPHA_MAX]` with `min < max`, the target
  representable in float32, non-negative counters, and injected learning
  rates as `init_entropy_state` requires.
  """
  for name in ("log_alpha", "log_alpha_min", "log_alpha_max"):
    _checks.in_range(f"state.{name}", np.asarray(getattr(state, name)), low=LOG_ALPHA_MIN, high=LOG_ALPHA_MAX)
  lo, hi, log_alpha = (np.asarray(x) for x in (state.log_alpha_min, state.log_alpha_max, state.log_alpha))
  if not np.all(lo < hi):
    raise ValueError(f"{_checks.caller()}: need state.log_alpha_min < state.log_alpha_max; got {lo} and {hi}.")
  if not np.all((lo <= log_alpha) & (log_alpha <= hi)):
    raise ValueError(f"{_checks.caller()}: state.log_alpha {log_alpha} lies outside its bounds [{lo}, {hi}].")
  _checks.float32_value("state.target", np.asarray(state.target))
  for name in ("step", "skipped"):
    value = np.asarray(getattr(state, name))
    if not np.all(value >= 0):
      raise ValueError(f"{_checks.caller()}: state.{name} must be >= 0; got {value}.")
  _checks.learning_rates(state.opt_state)


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
    parts.append(f"leaves expected by `like` but not saved: {missing}")
  if extra:
    parts.append(f"leaves saved but not in `like`: {extra}")
  for p, (s, d) in expected_map.items():
    if p in saved_map and saved_map[p] != (s, d):
      ss, sd = saved_map[p]
      parts.append(f"leaf {p}: saved {sd}{list(ss)}, `like` has {d}{list(s)}")
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
