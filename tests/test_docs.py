"""The README and the documentation site: every example runs, the site builds, the API is covered.

* Every ```python block of README.md and of each docs/ page runs, in page
  order, in one namespace per page, with a temporary directory as the working
  directory. ```py blocks (and ```bash, ```text) are shown, not run.
* The Sphinx site builds with warnings as errors (`-W`), as `make docs` does.
* The API reference documents every name in `entropy_jax.__all__`, every public
  module, and every public function, class and constant of those modules.
"""

import ast
import importlib
import inspect
import pathlib
import re
import subprocess
import sys
import zlib

import pytest

import entropy_jax

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.DOTALL | re.MULTILINE)
PAGES = [
  p
  for p in [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
  if "_build" not in p.parts and PYTHON_BLOCK.search(p.read_text())
]
PUBLIC_MODULES = sorted(
  f"entropy_jax.{p.stem}" for p in (ROOT / "entropy_jax").glob("*.py") if not p.stem.startswith("_")
)


def python_blocks(page):
  return PYTHON_BLOCK.findall(page.read_text())


def test_readme_has_the_three_examples():
  assert len(python_blocks(ROOT / "README.md")) >= 3


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_run(page, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # examples that write files write them here
  namespace = {"__name__": f"docs:{page.name}"}
  for i, block in enumerate(python_blocks(page)):
    try:
      code = compile(block, f"{page.relative_to(ROOT)} python block {i}", "exec")
      exec(code, namespace)
    except Exception as e:  # name the block so a failure is easy to find
      raise AssertionError(f"{page.relative_to(ROOT)}: python block {i} failed:\n{block}") from e


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
  for module in ("sphinx", "myst_parser", "furo"):  # the [docs] extra
    pytest.importorskip(module)
  out = tmp_path_factory.mktemp("html")
  command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
  run = subprocess.run([*command, str(DOCS), str(out)], capture_output=True, text=True, cwd=ROOT, check=False)
  assert run.returncode == 0, f"sphinx -W failed:\n{run.stdout}\n{run.stderr}"
  return out


def documented_objects(site):
  """The Python objects in the site's inventory (objects.inv: four header lines, then zlib)."""
  body = zlib.decompress((site / "objects.inv").read_bytes().split(b"\n", 4)[4]).decode()
  return {line.split(" ", 1)[0] for line in body.splitlines() if " py:" in line}


def public_names(module):
  """`__all__` if the module has one; else the functions, classes and constants it defines."""
  if hasattr(module, "__all__"):
    return list(module.__all__)
  names = [
    name
    for name, value in vars(module).items()
    if not name.startswith("_")
    and (inspect.isfunction(value) or inspect.isclass(value))
    and value.__module__ == module.__name__
  ]
  tree = ast.parse(inspect.getsource(module))
  for node in tree.body:
    targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
    for target in targets:
      if isinstance(target, ast.Name) and target.id.isupper() and not target.id.startswith("_"):
        names.append(target.id)
  return names


def canonical(name):
  """`module.name` of a top-level name, in the public module that defines it."""
  value = getattr(entropy_jax, name)
  if inspect.ismodule(value):
    return value.__name__
  for module_name in PUBLIC_MODULES:
    if name in public_names(importlib.import_module(module_name)):
      return f"{module_name}.{name}"
  raise AssertionError(f"entropy_jax.{name} is defined in no public module")


def test_the_site_builds_with_warnings_as_errors(built_site):
  assert (built_site / "index.html").is_file()


def test_every_public_module_and_name_is_documented(built_site):
  documented = documented_objects(built_site)
  expected = set(PUBLIC_MODULES)
  for module_name in PUBLIC_MODULES:
    expected |= {f"{module_name}.{n}" for n in public_names(importlib.import_module(module_name))}
  expected |= {canonical(name) for name in entropy_jax.__all__}
  assert sorted(expected - documented) == []


def test_the_api_index_lists_every_top_level_name():
  index = (DOCS / "api" / "index.md").read_text()
  listed = set(re.findall(r"`~entropy_jax\.[\w.]*?\.?(\w+)`", index))
  assert sorted(set(entropy_jax.__all__) - listed) == []
