"""Shared test set-up.

* 8 virtual CPU devices, asked for before jax is imported. The flag is added
  to any `XLA_FLAGS` already set (a user's own XLA options stay), unless a
  device count is already given there.
* A test module whose import needs a package of an optional extra that is
  not installed is skipped, naming the extra, as `pytest.importorskip` at
  its top would: `pip install -e '.[test]'` alone collects and runs the core
  tests. Any other import error stays an error.
* `ENTROPY_JAX_TEST_INSTALLED=1` (what `make test` sets): the suite runs
  against an installed wheel, so a file missing from the wheel fails it. The
  session refuses to start if `entropy_jax` would be imported from this
  checkout instead, and fails if any test was skipped: with every extra
  installed, a skip means something the suite should have run did not.
"""

import os
import pathlib

import pytest

_DEVICES = "--xla_force_host_platform_device_count"
_flags = os.environ.get("XLA_FLAGS", "")
if _DEVICES not in _flags:
  os.environ["XLA_FLAGS"] = f"{_flags} {_DEVICES}=8".strip()

# Top-level modules of the optional extras (pyproject.toml), by extra. `parity`
# is what the Makefile installs for the Velora tests.
_EXTRAS = {
  "parity": ("torch", "velora", "gymnasium", "safetensors", "sqlmodel"),
  "examples": ("gymnax", "six", "flashbax", "distrax", "matplotlib", "tqdm"),
  "integrations": ("rejax", "sbx", "stable_baselines3"),
  "docs": ("sphinx", "myst_parser", "furo"),
}
_EXTRA_OF = {module: extra for extra, modules in _EXTRAS.items() for module in modules}

_CHECKOUT = pathlib.Path(__file__).resolve().parent.parent
_INSTALLED = os.environ.get("ENTROPY_JAX_TEST_INSTALLED") == "1"


def pytest_configure(config):
  del config
  if not _INSTALLED:
    return
  import importlib.metadata

  import entropy_jax

  where = pathlib.Path(entropy_jax.__file__).resolve()
  if where.is_relative_to(_CHECKOUT / "entropy_jax"):
    raise pytest.UsageError(
      f"ENTROPY_JAX_TEST_INSTALLED=1, but entropy_jax is imported from the checkout ({where}), not from an"
      " installed wheel: run pytest with `python -P -m pytest` from a PYTHONPATH without the checkout."
    )
  installed = importlib.metadata.version("entropy_jax")
  if installed != entropy_jax.__version__:
    raise pytest.UsageError(
      f"entropy_jax {entropy_jax.__version__} is imported, but the installed distribution is {installed}."
    )


def pytest_sessionfinish(session, exitstatus):
  del exitstatus
  if not _INSTALLED:
    return
  reporter = session.config.pluginmanager.get_plugin("terminalreporter")
  skipped = reporter.stats.get("skipped", []) if reporter else []
  if skipped:
    reporter.write_line(f"ENTROPY_JAX_TEST_INSTALLED=1: {len(skipped)} test(s) skipped; every extra is installed.")
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


class _ModuleNeedingExtras(pytest.Module):
  """A test module, skipped when what it imports comes from an extra that is missing."""

  def _getobj(self):
    try:
      return super()._getobj()
    except self.CollectError as e:
      cause = e.__cause__ or e.__context__
      name = getattr(cause, "name", None) or ""
      extra = _EXTRA_OF.get(name.split(".")[0]) if isinstance(cause, ModuleNotFoundError) else None
      if extra is None:
        raise
      pytest.skip(f"{self.path.name} needs {name}, from the optional extra [{extra}]", allow_module_level=True)


def pytest_pycollect_makemodule(module_path, parent):
  return _ModuleNeedingExtras.from_parent(parent, path=module_path)
