"""The README's Python examples run as written (every ```python block, in order, one namespace)."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def python_blocks():
  return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
  assert len(python_blocks()) >= 3


def test_readme_examples_run(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # examples that write files write them here
  namespace = {"__name__": "readme"}
  for i, block in enumerate(python_blocks()):
    try:
      exec(compile(block, f"README.md block {i}", "exec"), namespace)
    except Exception as e:  # name the block so a failure is easy to find
      raise AssertionError(f"README python block {i} failed:\n{block}") from e
