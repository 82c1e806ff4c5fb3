"""The examples' layout: self-contained agents, and scripts that import them, never the reverse.

Read from the source (AST), not by importing: each agent file imports only
entropy_jax and third-party libraries and stays under 400 lines; no example
script in `examples/` touches `sys.path`; the scripts around the agents import the agents and the
shared reporting module, and nothing imports a script. Each agent also runs
as a copied file outside the repository (`--help`) and as a module, and each
script that imports its siblings runs as a file (its siblings then found
through `examples/examples.py`) and as a module.
"""

import ast
import pathlib
import shutil
import subprocess
import sys

import pytest

import entropy_jax

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
AGENTS = ("sac_continuous", "sac_discrete", "sac_multidiscrete", "sac_hybrid")
IMPORTING = ("demo", "pbt", "discrete_target_study", "structured_study")  # scripts that import siblings
SCRIPTS = (*IMPORTING, "target_rules", "reporting")
LOCAL = {p.stem for p in EXAMPLES.glob("*.py")} | {"examples"}


def _local_imports(path):
  found = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("examples."):
      found.add(node.module.split(".")[1])
    elif isinstance(node, ast.ImportFrom) and node.module == "examples":
      found |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module in LOCAL:
      found.add(node.module)
    elif isinstance(node, ast.Import):
      found |= {a.name for a in node.names if a.name in LOCAL}
  return found - {"examples"}


@pytest.mark.parametrize("agent", AGENTS)
def test_agents_import_only_entropy_jax_and_third_party_libraries(agent):
  path = EXAMPLES / f"{agent}.py"
  assert _local_imports(path) == set(), path
  assert len(path.read_text().splitlines()) <= 400


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_example_edits_sys_path(path):
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
      raise AssertionError(f"{path.relative_to(ROOT)}:{node.lineno} uses sys.path")


def test_scripts_import_agents_and_reporting_and_nothing_imports_a_script():
  imported = {s: _local_imports(EXAMPLES / f"{s}.py") for s in (*AGENTS, *SCRIPTS)}
  assert imported["demo"] >= {"sac_continuous", "reporting"}
  assert imported["pbt"] >= {"sac_continuous", "reporting"}
  assert imported["discrete_target_study"] >= {"sac_discrete", "reporting", "target_rules"}
  assert imported["structured_study"] >= {"sac_multidiscrete", "sac_hybrid", "reporting"}
  assert imported["reporting"] == set() and imported["target_rules"] == set()
  for script, local in imported.items():
    # Only the demo builds on another script (the study it runs as its ablation).
    assert local <= {*AGENTS, "reporting", "target_rules"} | ({"discrete_target_study"} if script == "demo" else set())


@pytest.mark.parametrize("agent", AGENTS)
def test_agent_runs_as_a_copied_file_and_as_a_module(agent, tmp_path):
  for extra in ("gymnax", "flashbax", "distrax"):  # the `examples` extra
    pytest.importorskip(extra)
  copy = tmp_path / f"{agent}.py"
  shutil.copy(EXAMPLES / f"{agent}.py", copy)
  env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
  alone = subprocess.run([sys.executable, str(copy), "--help"], cwd=tmp_path, env=env, capture_output=True, text=True)
  assert alone.returncode == 0 and "--members" in alone.stdout, alone.stderr
  module = subprocess.run(
    [sys.executable, "-m", f"examples.{agent}", "--help"], cwd=ROOT, env=env, capture_output=True, text=True
  )
  assert module.returncode == 0 and "--members" in module.stdout, module.stderr


@pytest.mark.parametrize("script", IMPORTING)
def test_script_runs_as_a_file_and_as_a_module(script, tmp_path):
  for extra in ("gymnax", "flashbax", "distrax", "matplotlib"):  # the `examples` extra
    pytest.importorskip(extra)
  # Only entropy_jax on the path: the repository root, where `examples` is a package, is not.
  lib = tmp_path / "lib"
  lib.mkdir()
  (lib / "entropy_jax").symlink_to(pathlib.Path(entropy_jax.__file__).parent)
  env = {"PYTHONPATH": str(lib), "PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
  as_file = subprocess.run(
    [sys.executable, str(EXAMPLES / f"{script}.py"), "--help"],
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
  )
  env["PYTHONPATH"] = str(ROOT)
  as_module = subprocess.run(
    [sys.executable, "-m", f"examples.{script}", "--help"], cwd=ROOT, env=env, capture_output=True, text=True
  )
  for run in (as_file, as_module):
    assert run.returncode == 0 and run.stdout.startswith("usage:"), run.stderr
