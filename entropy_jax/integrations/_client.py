"""Importing a client library: a clear error without it, one warning for an untested version."""

from __future__ import annotations

import importlib
import importlib.metadata
import warnings
from types import ModuleType

EXTRA = "pip install 'entropy_jax[integrations]'"

_warned: set[str] = set()


class UntestedVersionWarning(UserWarning):
  """A client library at a version the integration was not tested with."""


def require(module: str, distribution: str, tested: str, integration: str) -> ModuleType:
  """Imports `module`, the client of `integration`.

  Args:
    module: the import name (`"rejax"`).
    distribution: the name it is installed under (`"sbx-rl"`).
    tested: the version the integration is tested with.
    integration: the integration module, named in the messages.

  Returns:
    The imported module.

  Raises:
    ImportError: the client is not installed; the message names the extra.
  """
  try:
    client = importlib.import_module(module)
  except ImportError as e:
    raise ImportError(
      f"{integration} needs {distribution}=={tested}, which is not installed (importing {module!r} failed: {e}). "
      f"Install the integrations extra: {EXTRA}"
    ) from e
  try:
    version = importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    version = getattr(client, "__version__", "unknown")
  if version != tested and distribution not in _warned:
    _warned.add(distribution)
    warnings.warn(
      f"{integration} is tested with {distribution}=={tested}; {version} is installed. The temperature step it "
      f"replaces may have changed: {EXTRA} installs the tested version.",
      UntestedVersionWarning,
      stacklevel=3,
    )
  return client
