"""The machine a run measures: versions, CPU, memory, load; and the optional
libraries (Velora, the compat classes) that some comparisons need."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import pathlib
import platform
from typing import Any

VELORA_INSTALL = (
  "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu &&"
  " pip install -e '.[parity]' && pip install --no-deps velora==0.2.0 (what `make .venv/.installed` does)"
)
VERSIONED = ("entropy_jax", "jax", "jaxlib", "optax", "flax", "chex", "numpy", "torch", "velora")


def version(dist: str) -> str | None:
  try:
    return importlib.metadata.version(dist)
  except importlib.metadata.PackageNotFoundError:
    return None


def cpu_model() -> str:
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def loadavg() -> list[float] | None:
  """The 1, 5 and 15 minute load averages: how busy the CPUs were."""
  try:
    return [round(x, 2) for x in os.getloadavg()]
  except OSError:
    return None


def meminfo(field: str) -> int | None:
  """Bytes of a `/proc/meminfo` field such as `MemAvailable`, or None."""
  try:
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
      if line.startswith(field + ":"):
        return int(line.split()[1]) * 1024
  except OSError:
    pass
  return None


def machine_info(command: str) -> dict[str, Any]:
  """Date, command, CPU, memory, load, backend and versions of a run."""
  import jax

  try:
    usable = len(os.sched_getaffinity(0))
  except AttributeError:
    usable = os.cpu_count()
  total = meminfo("MemTotal")
  return {
    "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    "command": command,
    "platform": platform.platform(),
    "python": platform.python_version(),
    "cpu": cpu_model(),
    "cpu_count": os.cpu_count(),
    "cpus_usable": usable,
    "memory_total_gb": round(total / 1e9, 1) if total else None,
    "loadavg_start": loadavg(),
    "backend": jax.default_backend(),
    "devices": [f"{d.platform}:{d.id} {getattr(d, 'device_kind', '')}".strip() for d in jax.devices()],
    "versions": {name: version(name) for name in VERSIONED},
  }


def free_device_bytes() -> int | None:
  """Bytes free on jax's default device: from the allocator, or the OS for a CPU."""
  import jax

  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # Not every backend reports memory.
    stats = None
  if stats and "bytes_limit" in stats:
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))
  return meminfo("MemAvailable")


def load_velora():
  """`((EntropyModule, EntropyModuleDiscrete, torch), None)` from Velora 0.2.0,
  or `(None, reason)` when it cannot be imported."""
  try:
    import torch
    from velora.models.nf.modules import EntropyModule, EntropyModuleDiscrete
  except Exception as e:  # ImportError, or an error in Velora's own imports.
    return None, f"{type(e).__name__}: {e}"
  return (EntropyModule, EntropyModuleDiscrete, torch), None


def load_compat():
  """`((EntropyModule, EntropyModuleDiscrete), None)` from `entropy_jax.compat`,
  or `(None, reason)`."""
  try:
    from entropy_jax.compat import EntropyModule, EntropyModuleDiscrete
  except Exception as e:
    return None, f"{type(e).__name__}: {e}"
  return (EntropyModule, EntropyModuleDiscrete), None


def load_libraries(notes: list[str]):
  """`(velora, compat)` as `load_velora` and `load_compat` return them, with a
  note in `notes` for each that cannot be imported (its rows are left out)."""
  velora, why = load_velora()
  if velora is None:
    notes.append(
      f"Velora 0.2.0 could not be imported ({why}): its rows are left out and the rest still runs."
      f" To include them: {VELORA_INSTALL}."
    )
  compat, why = load_compat()
  if compat is None:
    notes.append(f"entropy_jax.compat could not be imported ({why}): its rows are left out.")
  return velora, compat
