"""Shared test set-up.

* 8 virtual CPU devices, asked for before jax is imported. The flag is added
  to any `XLA_FLAGS` already set (a user's own XLA options stay), unless a
  device count is already given there.
* A test module that needs an optional extra starts with
  `pytest.importorskip`, so `pip install -e '.[test]'` alone collects and
  runs the core tests.
* `ENTROPY_JAX_TEST_INSTALLED=1` (what `make test` sets): the suite runs
  against an installed wheel, so a file missing from the wheel fails it. The
  run refuses to start if `entropy_jax` would be imported from this
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


def _no_skip(report):
  """Under ENTROPY_JAX_TEST_INSTALLED=1 every extra is installed: a skip is a failure, with its reason."""
  if _INSTALLED and report.skipped:
    report.outcome = "failed"
    report.longrepr = f"skipped with ENTROPY_JAX_TEST_INSTALLED=1 (every extra is installed): {report.longrepr}"
  return report


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
  del item, call
  return _no_skip((yield))


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
  del collector
  return _no_skip((yield))


@pytest.fixture(scope="module")
def one_torch_thread():
  """torch on one thread for a module's tests, restored afterwards.

  Velora's per-step work is a few scalar ops: torch's thread pool only adds
  overhead, and contention on a 2-core machine.
  """
  torch = pytest.importorskip("torch")
  threads = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(threads)
