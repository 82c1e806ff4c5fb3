"""`EntropyParameters`: Velora's config model of an entropy module, without pydantic."""

from __future__ import annotations

import dataclasses
import json


@dataclasses.dataclass(frozen=True)
class EntropyParameters:
  """The module's settings, as Velora's `EntropyParameters` config model.

  Immutable (a frozen dataclass; `dataclasses.replace` makes a changed
  copy). `model_dump()` and `model_dump_json()` give what Velora's pydantic
  model gives, without depending on pydantic.

  Attributes:
    lr: the learning rate of `log_alpha`'s optimizer.
    initial_alpha: the starting temperature.
    target: the target entropy.
  """

  lr: float
  initial_alpha: float
  target: float

  def model_dump(self) -> dict[str, float]:
    """A plain dict `{"lr": ..., "initial_alpha": ..., "target": ...}`."""
    return dataclasses.asdict(self)

  def model_dump_json(self) -> str:
    """Compact JSON, formatted as pydantic's `model_dump_json()`."""
    return json.dumps(self.model_dump(), separators=(",", ":"))

  @classmethod
  def model_validate_json(cls, data: str) -> EntropyParameters:
    """The inverse of `model_dump_json`."""
    fields = json.loads(data)
    names = {f.name for f in dataclasses.fields(cls)}
    if not isinstance(fields, dict) or set(fields) != names:
      raise ValueError(f"EntropyParameters: expected a JSON object with keys {sorted(names)}; got {data!r}.")
    return cls(**{k: float(v) for k, v in fields.items()})
