"""Saving and restoring an `EntropyState` (or a stacked population) with `flax.serialization`.

The payload (`encode_state`, also carried by the compat classes' `state_dict()`) holds every array
leaf in a flat list (`flax.serialization.to_state_dict` does not know `jax.tree_util.Partial`) and
a signature: each leaf's tree path, shape and dtype. The static fields (`tx`, `loss_form`, the
schedule's function) come from the `like` state given on restore; `loss_form` must match.

The file is the SHA-256 digest of the body, then the body: the payload in msgpack, which refuses
truncated and foreign bytes but reads a flipped byte in an array as another value. A save writes
`.<name>.<random>.tmp` beside the target, fsyncs it and `os.replace`s it over the target: readers
see a whole checkpoint, the last rename of concurrent writers wins, and a writer killed mid-save
leaves the previous file whole. Files of entropy_jax 0.1.0 (`ENTROPY_JAX_CKPT`, then this) are read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from typing import Any

import jax
import numpy as np
from flax import serialization

from entropy_jax import _checks
from entropy_jax.state import LOG_ALPHA_MAX, LOG_ALPHA_MIN, EntropyState

FORMAT_VERSION = 1  # The payload's; another version is refused.
Signature = list[tuple[str, tuple[int, ...], str]]  # (tree path, shape, dtype name) per leaf.


class CheckpointError(ValueError):
  """A checkpoint (a file or a `state_dict`) that cannot be restored into the given state."""


def signature(state: Any) -> Signature:
  """`(path, shape, dtype)` of every leaf of a state, concrete or abstract (`jax.eval_shape`)."""
  leaves = [(p, x if hasattr(x, "dtype") else np.asarray(x)) for p, x in jax.tree_util.tree_leaves_with_path(state)]
  return [(jax.tree_util.keystr(p), tuple(map(int, x.shape)), np.dtype(x.dtype).name) for p, x in leaves]


@_checks.public
def check_structure(state: Any, like: EntropyState) -> None:
  """Raises `CheckpointError` (a `ValueError`) naming the leaves that differ, unless `state` (a state,
  or a `signature`) has the leaves of `like`: the same tree paths, shapes and dtypes."""
  got, want = (signature(x) if isinstance(x, EntropyState) else x for x in (state, like))
  if got != want:
    g, w = ({p: f"{d}{list(s)}" for p, s, d in x} for x in (got, want))
    bad = [p for p in {**w, **g} if g.get(p) != w.get(p)]
    diff = "; ".join(f"leaf {p} should be {w.get(p, 'absent')}, got {g.get(p, 'absent')}" for p in bad[:4])
    raise _checks.error(f"structure mismatch; {diff or 'the leaves are in another order'}.", CheckpointError)


@_checks.public
def encode_state(state: EntropyState) -> dict[str, Any]:
  """`{"version", "loss_form", "signature", "leaves"}`, every leaf a NumPy array (gathered to the host)."""
  if not isinstance(state, EntropyState):
    raise _checks.error(f"expected an EntropyState; got {type(state).__name__}.", TypeError)
  leaves, entries = [np.asarray(x) for x in jax.tree.leaves(state)], [[p, list(s), d] for p, s, d in signature(state)]
  return {"version": FORMAT_VERSION, "loss_form": state.loss_form, "signature": entries, "leaves": leaves}


@_checks.public
def decode_state(payload: Any, like: EntropyState) -> EntropyState:
  """The state an `encode_state` payload holds (after msgpack, pickle or `torch.save`), checked.

  `like`, concrete or abstract, gives the structure, the static fields and, where its leaves have
  one, the sharding of each leaf. Every array leaf equals the saved one bit for bit. Raises
  `CheckpointError` for another format version, missing fields, a structure or leaf unlike `like`,
  or values no constructor accepts: a `log_alpha` outside its bounds, bounds outside
  `[LOG_ALPHA_MIN, LOG_ALPHA_MAX]`, a target float32 cannot hold, negative counters or learning rates.
  """
  if not isinstance(like, EntropyState):
    raise _checks.error(f"`like` must be an EntropyState; got {type(like).__name__}.", TypeError)
  if (version := payload.get("version") if isinstance(payload, dict) else None) != FORMAT_VERSION:
    raise _checks.error(f"expected a payload of format version {FORMAT_VERSION}; got {version!r}.", CheckpointError)
  try:
    saved = [(str(p), tuple(map(int, s)), str(d)) for p, s, d in payload["signature"]]
    loss_form, leaves = payload["loss_form"], [np.asarray(x) for x in payload["leaves"]]
  except (KeyError, TypeError, ValueError) as e:
    raise _checks.error(f"unreadable payload: {e!r}.", CheckpointError) from None
  check_structure(saved, like)
  if loss_form != like.loss_form:
    raise _checks.error(f"saved with loss_form={loss_form!r}; `like` has {like.loss_form!r}.", CheckpointError)
  if len(leaves) != len(saved):
    raise _checks.error(f"expected {len(saved)} arrays; got {len(leaves)}.", CheckpointError)
  check_structure(state := jax.tree.unflatten(jax.tree.structure(like), leaves), like)
  try:
    _check_values(state)
  except ValueError as e:  # The message of `_checks`, naming the caller.
    raise CheckpointError(*e.args) from None
  return jax.tree.map(lambda x, leaf: jax.device_put(x, getattr(leaf, "sharding", None)), state, like)


@_checks.public
def save_checkpoint(path: str | os.PathLike[str], state: EntropyState) -> str:
  """Writes `state` (a single state or a stacked population) to `path` atomically; returns the path.

  The directory must exist. Sharded arrays are gathered to the host: save from a process that sees
  every member. The file gets mode 0o666 less the umask, as any file the process creates.
  """
  body = serialization.msgpack_serialize(encode_state(state))
  directory, name = os.path.split(os.path.abspath(path := os.fspath(path)))
  tmp = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
  try:
    with open(tmp, "xb") as f:
      f.writelines((hashlib.sha256(body).digest(), body))
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(OSError):
      os.unlink(tmp)
    raise
  return path


@_checks.public
def restore_checkpoint(path: str | os.PathLike[str], like: EntropyState) -> EntropyState:
  """The state `save_checkpoint` wrote to `path`, read by `decode_state` into the structure of `like`.

  Leaves follow the shardings of `like` (a population saved from 8 devices restores onto 4). Raises
  `CheckpointError`, naming the path, for a truncated, corrupted or foreign file.
  """
  with open(path := os.fspath(path), "rb") as f:
    data = f.read().removeprefix(b"ENTROPY_JAX_CKPT")  # The header of entropy_jax 0.1.0's files.
  with _checks.within(path):
    if hashlib.sha256(body := data[32:]).digest() != data[:32]:
      message = "truncated, corrupted or not an entropy_jax checkpoint: its SHA-256 digest does not match."
      raise _checks.error(message, CheckpointError)
    return decode_state(serialization.msgpack_restore(body), like)


def _check_values(state: EntropyState) -> None:
  """Raises `ValueError` unless a concrete state's values are usable, by the constructors' rules."""
  lo, hi, log_alpha = (np.asarray(x) for x in (state.log_alpha_min, state.log_alpha_max, state.log_alpha))
  for name, value in (("log_alpha", log_alpha), ("log_alpha_min", lo), ("log_alpha_max", hi)):
    _checks.in_range(f"state.{name}", value, low=LOG_ALPHA_MIN, high=LOG_ALPHA_MAX)
  if not np.all(lo < hi):
    raise _checks.error(f"need state.log_alpha_min < state.log_alpha_max; got {lo} and {hi}.")
  if not np.all((lo <= log_alpha) & (log_alpha <= hi)):
    raise _checks.error(f"state.log_alpha {log_alpha} lies outside its bounds [{lo}, {hi}].")
  _checks.float32_value("state.target", np.asarray(state.target))
  for name in ("step", "skipped"):
    _checks.check(f"state.{name}", np.asarray(getattr(state, name)), lambda a: a >= 0, "be >= 0")
  _checks.learning_rates(state.opt_state)
