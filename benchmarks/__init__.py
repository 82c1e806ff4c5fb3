"""Benchmarks of entropy_jax, one module per measurement.

Run one measurement with `python -m benchmarks.<name> --help`, or all of them
with `python -m benchmarks.run` (`make bench`), from the repository root. See
`benchmarks/README.md` for the method. Importing this package imports nothing
heavy: `benchmarks.compile_import` measures what `import entropy_jax` costs.
"""
