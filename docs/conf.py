"""Sphinx configuration of the entropy_jax documentation (`make docs`)."""

import dataclasses
import importlib
import inspect
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # document the checkout, not an installed copy

project = "entropy_jax"
author = "the entropy_jax authors"
copyright = "the entropy_jax authors"
release = version = importlib.import_module("entropy_jax").__version__

extensions = [
  "myst_parser",
  "sphinx.ext.autodoc",
  "sphinx.ext.napoleon",
  "sphinx.ext.mathjax",
  "sphinx.ext.viewcode",
  # MathJax from the `docs` extra, copied into the site: the maths renders
  # without a network (the default loads it from a CDN at page view).
  "sphinx-mathjax-offline",
]
source_suffix = {".md": "markdown"}
exclude_patterns = ["_build"]

# Markdown pages. `$...$` and `$$...$$` are maths; headings get anchors for
# links such as `concepts.md#loss-forms`.
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

# Docstrings: Google style, with `name` written in single backticks, as code.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # `Attributes:` as a field list, not entries that dataclass fields repeat
default_role = "code"
autodoc_member_order = "bysource"
# Signatures without annotations: `chex.Numeric` would expand into a long
# union; the Args sections give each argument's type and shape.
autodoc_typehints = "none"
autodoc_preserve_defaults = True

html_theme = "furo"
html_title = f"entropy_jax {release}"


# The docstrings' dialect, read as reStructuredText. They write code in single
# backticks (`default_role` above) and are read in source as much as here, so
# two Markdown habits are translated when Sphinx reads them:
# * a plural right after code, `EntropyState`s: reST needs an escaped space;
# * a Markdown table (a `|---|` rule under a header row): a reST list-table.
_CODE = re.compile(r"``[^`]+``|`[^`]+`")
_TABLE_RULE = re.compile(r"^\s*\|(\s*:?-+:?\s*\|)+\s*$")


def _plural_after_code(text):
  def escape(match):
    end = match.end()
    glued = end < len(text) and text[end].isalpha()
    return match.group(0) + ("\\ " if glued else "")

  return _CODE.sub(escape, text)


def _cells(line):
  return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _markdown_tables_to_rst(lines):
  out, i = [], 0
  while i < len(lines):
    if i + 1 < len(lines) and lines[i].lstrip().startswith("|") and _TABLE_RULE.match(lines[i + 1]):
      indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
      rows = [_cells(lines[i])]
      i += 2
      while i < len(lines) and lines[i].lstrip().startswith("|"):
        rows.append(_cells(lines[i]))
        i += 1
      out += [f"{indent}.. list-table::", f"{indent}   :header-rows: 1", ""]
      for row in rows:
        out += [f"{indent}   * - {row[0]}"] + [f"{indent}     - {cell}" for cell in row[1:]]
      out.append("")
    else:
      out.append(lines[i])
      i += 1
  return out


# A NamedTuple's fields carry their description as a comment on their line
# (`target: jax.Array  # [] float32, the current target entropy H.`); Python
# gives them the docstring "Alias for field number N". Show the comment.
_FIELD_ALIAS = re.compile(r"^Alias for field number \d+$")


def _field_comment(name):
  module_name, class_name, field = name.rsplit(".", 2)
  source = inspect.getsource(getattr(sys.modules[module_name], class_name))
  match = re.search(rf"^\s+{re.escape(field)}:[^#\n]*#\s*(.+)$", source, flags=re.MULTILINE)
  return match.group(1) if match else None


def _docstring_dialect(app, what, name, obj, options, lines):
  if what == "data" and getattr(obj, "__doc__", None) == getattr(type(obj), "__doc__", None):
    lines[:] = []  # a constant's type's docstring (float, dict, ...) says nothing about it
  if what == "attribute" and len(lines) <= 2 and lines and _FIELD_ALIAS.match(lines[0]):
    comment = _field_comment(name)
    if comment:
      lines[:] = [comment.replace("|", "\\|")]  # plain text, where | starts a reST substitution
  lines[:] = _plural_after_code("\n".join(_markdown_tables_to_rst(lines))).split("\n")


# A dataclass field whose default is a module constant (`EntropyState.tx`
# defaults to `DEFAULT_OPTIMIZER`) shows the constant's name, not the repr of
# the functions inside it.
_FUNCTION_TUPLE = re.compile(r"(\w+)=\((?:<function [\w.<>]*>(?:, )?)+\)")


def _constant_defaults(app, what, name, obj, options, signature, return_annotation):
  if what != "class" or signature is None or not dataclasses.is_dataclass(obj):
    return None
  module = vars(sys.modules[obj.__module__])
  defaults = {f.name: f.default for f in dataclasses.fields(obj)}

  def constant(match):
    value = defaults.get(match.group(1))
    names = [k for k, v in module.items() if v is value and k.isupper()]
    return f"{match.group(1)}={names[0] if names else '...'}"

  return _FUNCTION_TUPLE.sub(constant, signature), return_annotation


def setup(app):
  app.connect("autodoc-process-docstring", _docstring_dialect)
  app.connect("autodoc-process-signature", _constant_defaults)
