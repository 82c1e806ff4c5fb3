"""Importing `entropy_jax.integrations.rejax` / `.sbx`: the extra named without the client,
one warning naming the tested version with another version."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings

import pytest

from entropy_jax.integrations import _client

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = [
  ("entropy_jax.integrations.rejax", "rejax", "rejax==0.1.3"),
  ("entropy_jax.integrations.sbx", "sbx", "sbx-rl==0.28.0"),
]


def fresh_import(monkeypatch, module: str):
  """`module` imported anew (the previous one, and the package's attribute, restored after the test)."""
  package, _, name = module.rpartition(".")
  if hasattr(sys.modules[package], name):
    monkeypatch.setattr(sys.modules[package], name, getattr(sys.modules[package], name))
  monkeypatch.delitem(sys.modules, module, raising=False)
  return importlib.import_module(module)


@pytest.mark.parametrize("module, client, tested", MODULES)
def test_missing_client_raises_an_import_error_naming_the_extra(monkeypatch, module, client, tested):
  monkeypatch.setitem(sys.modules, client, None)  # `import client` raises ImportError
  with pytest.raises(ImportError, match=rf"{module} needs {tested}.*pip install 'entropy_jax\[integrations\]'"):
    fresh_import(monkeypatch, module)


@pytest.mark.parametrize("module, client, tested", MODULES)
def test_untested_client_version_warns_once_naming_the_tested_one(monkeypatch, module, client, tested):
  pytest.importorskip(client)
  monkeypatch.setattr(_client, "_warned", set())
  monkeypatch.setattr(_client.importlib.metadata, "version", lambda name: "9.9.9")
  with pytest.warns(_client.UntestedVersionWarning, match=rf"tested with {tested}; 9\.9\.9 is installed") as caught:
    fresh_import(monkeypatch, module)
    fresh_import(monkeypatch, module)
  assert len([w for w in caught if issubclass(w.category, _client.UntestedVersionWarning)]) == 1


@pytest.mark.parametrize("module, client, tested", MODULES)
def test_tested_client_version_imports_without_a_warning(monkeypatch, module, client, tested):
  pytest.importorskip(client)
  monkeypatch.setattr(_client, "_warned", set())
  monkeypatch.setattr(_client.importlib.metadata, "version", lambda name: tested.split("==")[1])
  with warnings.catch_warnings():
    warnings.simplefilter("error", _client.UntestedVersionWarning)
    fresh_import(monkeypatch, module)


def test_the_package_imports_without_the_clients():
  """`entropy_jax.integrations` itself needs neither client."""
  code = "import sys; sys.modules['rejax'] = sys.modules['sbx'] = None; import entropy_jax.integrations"
  subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": ROOT})
