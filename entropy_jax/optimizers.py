"""PyTorch optimizer names mapped to optax, with PyTorch's default settings.

Velora's modules take a `torch.optim` class and call it as
`optim([log_alpha], lr=lr)`. The compat classes take either one of the names
below (or that `torch.optim` class itself, recognised by name without
importing torch), or any optax factory called as `optim(learning_rate=lr)`.

Each named entry reproduces the PyTorch update with the PyTorch defaults, so
that a Velora user gets Velora's trajectory (`tests/test_velora_parity.py`):

| name      | PyTorch defaults                                   | optax                                                  |
|-----------|----------------------------------------------------|--------------------------------------------------------|
| `Adam`    | betas (0.9, 0.999), eps 1e-8                       | `adam(lr)`                                             |
| `AdamW`   | betas (0.9, 0.999), eps 1e-8, weight_decay 0.01    | `adamw(lr, weight_decay=0.01)` (optax's default: 1e-4) |
| `SGD`     | momentum 0, dampening 0                            | `sgd(lr)`                                              |
| `RMSprop` | alpha 0.99, eps 1e-8 added outside the square root | `rmsprop(lr, decay=0.99, eps_in_sqrt=False)` (optax's defaults: 0.9, inside) |
"""

from __future__ import annotations

from typing import Any, Callable

import optax

OptaxFactory = Callable[..., optax.GradientTransformation]


def _adamw(learning_rate):
  # torch.optim.AdamW: p <- p * (1 - lr * wd) - lr * adam_update(p), which is
  # optax.adamw's p - lr * (adam_update + wd * p).
  return optax.adamw(learning_rate, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.01)


def _rmsprop(learning_rate):
  # torch.optim.RMSprop: v <- 0.99 v + 0.01 g^2 (v starts at 0);
  # p <- p - lr * g / (sqrt(v) + 1e-8).
  return optax.rmsprop(
      learning_rate, decay=0.99, eps=1e-8, initial_scale=0.0, eps_in_sqrt=False
  )


NAMED_OPTIMIZERS: dict[str, OptaxFactory] = {
    "Adam": optax.adam,  # Its defaults are PyTorch's.
    "AdamW": _adamw,
    "SGD": optax.sgd,  # Its defaults are PyTorch's.
    "RMSprop": _rmsprop,
}

# optax factories whose defaults already equal PyTorch's: shown by the
# PyTorch name in a module's repr, as Velora prints `optim=Adam`.
_SAME_AS_TORCH = {optax.adam: "Adam", optax.sgd: "SGD"}


def resolve(optim: Any, where: str = "optimizers.resolve") -> tuple[str, OptaxFactory]:
  """Returns `(display_name, factory)` for a name, a torch class or a factory.

  Args:
    optim: `"Adam"`, `"AdamW"`, `"SGD"`, `"RMSprop"`; the `torch.optim` class
      of the same name; or an optax factory such as `optax.adam`, called
      later as `optim(learning_rate=lr)`.
    where: the caller's name, for error messages.

  Returns:
    The name a repr shows (`"Adam"`, or the factory's `__name__`) and a
    factory taking `learning_rate`.

  Raises:
    ValueError: an unknown name (the message lists the known ones).
    TypeError: anything else that is not callable.
  """
  known = ", ".join(repr(n) for n in NAMED_OPTIMIZERS)
  if isinstance(optim, str):
    if optim not in NAMED_OPTIMIZERS:
      raise ValueError(
          f"{where}: unknown optimizer name {optim!r}; known names are {known},"
          " or pass an optax factory such as optax.adam."
      )
    return optim, NAMED_OPTIMIZERS[optim]
  if isinstance(optim, type) and getattr(optim, "__module__", "").startswith("torch.optim"):
    # A Velora user's `optim=torch.optim.Adam`, mapped by name.
    if optim.__name__ not in NAMED_OPTIMIZERS:
      raise ValueError(
          f"{where}: the PyTorch optimizer {optim.__name__} has no optax"
          f" equivalent here; known names are {known}, or pass an optax factory."
      )
    return optim.__name__, NAMED_OPTIMIZERS[optim.__name__]
  if isinstance(optim, optax.GradientTransformation) or not callable(optim):
    raise TypeError(
        f"{where}: `optim` must be an optimizer name ({known}) or an optax"
        " factory called as optim(learning_rate=lr), such as optax.adam; got"
        f" {optim!r} of type {type(optim).__name__}."
    )
  try:
    name = _SAME_AS_TORCH.get(optim)
  except TypeError:  # An unhashable callable.
    name = None
  return name or getattr(optim, "__name__", type(optim).__name__), optim


# Built transformations, by (factory, learning rate). A transformation is a
# pair of pure functions, so modules with the same settings can share one; and
# since the optimizer is a static field of `EntropyState`, sharing it lets
# them share compiled code instead of compiling once per module.
_MADE: dict[Any, optax.GradientTransformation] = {}


def make(optim: Any, learning_rate: float, where: str = "optimizers.make") -> tuple[str, optax.GradientTransformation]:
  """Resolves `optim` and builds the transformation with `learning_rate`.

  The same `(factory, learning_rate)` returns the same transformation object.

  Returns:
    `(display_name, transformation)`.
  """
  name, factory = resolve(optim, where)
  try:
    key = (factory, learning_rate, type(learning_rate))
    hash(key)
  except TypeError:  # An unhashable factory or an array learning rate.
    key = None
  if key is not None and key in _MADE:
    return name, _MADE[key]
  tx = factory(learning_rate=learning_rate)
  if not isinstance(tx, optax.GradientTransformation):
    raise TypeError(
        f"{where}: `optim(learning_rate={learning_rate})` must return an optax"
        f" GradientTransformation; got {type(tx).__name__}."
    )
  if key is not None:
    _MADE[key] = tx
  return name, tx
