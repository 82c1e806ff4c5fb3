"""Lets a script run as a file import its siblings as `examples.NAME`, as it does when run as a module.

Every script imports the others one way: `from examples import reporting`. Run as a module
(`python -m examples.demo`) or imported from the repository root, `examples` is this folder, a namespace
package. Run as a file (`python examples/demo.py`), Python puts this folder first on the import path, and
`import examples` finds this module, which names the folder as its package path: `examples.reporting` is
the same file either way. The agents (`sac_*.py`) import no sibling and run anywhere as a copied file.
"""

import os

__path__ = [os.path.dirname(os.path.abspath(__file__))]
