"""The loss `compute_loss` returned, kept until `gradient_step` commits its step.

JAX has no `loss.backward()`. The compat classes compute the loss, its
gradient and the stepped state in one compiled call; the loss object is the
receipt for that state. `gradient_step(loss)` commits the state only for the
very object `compute_loss` returned last: anything else (a loss from another
module, a derived value such as `loss * 2`, a loss already stepped on or
superseded) raises `LossMismatchError`, never a silent no-op or a wrong step.
"""

from __future__ import annotations

import weakref
from typing import Any, Generic, TypeVar

import jax

Payload = TypeVar("Payload")


class LossMismatchError(ValueError):
  """`gradient_step` got a loss that is not this module's pending loss."""


class PendingLoss(Generic[Payload]):
  """One pending `(loss, payload)` pair, and the losses recently retired."""

  MAX_RETIRED = 8  # How many stepped-on / superseded losses are remembered.

  def __init__(self) -> None:
    self._pending: tuple[jax.Array, Payload] | None = None
    self._retired: list[tuple[weakref.ref, str]] = []

  def offer(self, loss: jax.Array, payload: Payload) -> None:
    """Makes `loss` the pending loss; the previous one is superseded."""
    self.retire("superseded by a later compute_loss call")
    self._pending = (loss, payload)

  def retire(self, reason: str) -> None:
    """Drops the pending loss (if any), remembering why for later messages."""
    if self._pending is not None:
      self._retired.append((weakref.ref(self._pending[0]), reason))
      self._retired = self._retired[-self.MAX_RETIRED :]
      self._pending = None

  def take(self, loss: Any, owner: str) -> Payload:
    """The payload of `loss` if it is the pending loss (which is then retired).

    Raises:
      LossMismatchError: `loss` is not the pending loss; the message says
        what it is instead (retired and why, not a JAX array, or unknown).
    """
    if self._pending is not None and loss is self._pending[0]:
      payload = self._pending[1]
      self.retire("already applied by gradient_step")
      return payload
    for ref, reason in reversed(self._retired):
      if ref() is loss:
        raise LossMismatchError(
          f"{owner}.gradient_step: this loss was {reason}. Call compute_loss"
          " again and pass the loss it returns. The state is unchanged."
        )
    if not isinstance(loss, jax.Array):
      raise LossMismatchError(
        f"{owner}.gradient_step: expected the jax.Array returned by this"
        f" module's compute_loss; got {type(loss).__name__}. The state is unchanged."
      )
    pending = "no compute_loss call is pending" if self._pending is None else ("the pending loss is another object")
    raise LossMismatchError(
      f"{owner}.gradient_step: this loss was not returned by this module's"
      f" compute_loss ({pending}). JAX has no loss.backward(): a value derived"
      " from the loss (e.g. `loss * 2`) or one from another module cannot be"
      " differentiated here. Pass the loss compute_loss returned, unchanged."
      " The state is unchanged."
    )
