"""Shared test set-up: 8 virtual CPU devices, asked for before jax is imported.

The flag is added to any `XLA_FLAGS` already set (a user's own XLA options
stay), unless a device count is already given there.
"""

import os

_DEVICES = "--xla_force_host_platform_device_count"
_flags = os.environ.get("XLA_FLAGS", "")
if _DEVICES not in _flags:
  os.environ["XLA_FLAGS"] = f"{_flags} {_DEVICES}=8".strip()
