# Every target does its own set-up: a fresh machine needs only python3.
PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
# The third-party dependencies and every extra.
STAMP    := $(VENV)/.installed
# entropy_jax installed from this checkout, editable (demo, bench, docs, test-fast).
# `make test` replaces it with the built wheel and removes this stamp.
EDITABLE := $(VENV)/.editable
EXTRAS   := test,examples,docs,integrations,parity
DIST     := dist
# torch's CPU build comes from PyTorch's CPU index (PyPI's Linux torch is the multi-GB CUDA
# build). Where that index cannot be reached, the plain pin, after one short try.
TORCH       := torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# What the tests import besides entropy_jax (examples/, benchmarks/), without
# the checkout's entropy_jax/: the suite must import the installed wheel.
TEST_PATH := $(CURDIR)/$(VENV)/test-path
# Multi-device tests run on 8 virtual CPU devices (tests/conftest.py sets the
# same). Only the tests: the demo and the benchmarks run as a user's program
# would, on jax's default devices (8 virtual devices slow small XLA:CPU calls).
TEST_XLA_FLAGS ?= --xla_force_host_platform_device_count=8

.PHONY: test test-fast lint dist demo bench docs clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, so that nothing pulls its CUDA build.
	$(BIN)/python -m pip install -q --timeout 10 --retries 0 --index-url $(TORCH_INDEX) '$(TORCH)' \
	  || $(BIN)/python -m pip install -q '$(TORCH)'
	$(BIN)/python -m pip install -q -e '.[$(EXTRAS)]'
	# Velora without its heavy declared extras: the `parity` extra holds what its import, its
	# agents and their train() need.
	$(BIN)/python -m pip install -q --no-deps velora==0.2.0
	touch $(STAMP) $(EDITABLE)

$(EDITABLE): $(STAMP)
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(EDITABLE)

# Everything (what .ci/run runs): the linters, the sdist and wheel with their
# metadata checked, then every test against the wheel installed with every
# extra. A test that is skipped fails the run (tests/conftest.py).
test: lint dist
	rm -f $(EDITABLE)
	$(BIN)/python -m pip install -q --force-reinstall --no-deps $(DIST)/entropy_jax-*.whl
	$(BIN)/python -m pip install -q "$$(ls $(DIST)/entropy_jax-*.whl)[$(EXTRAS)]"
	mkdir -p $(TEST_PATH)
	ln -sfn $(CURDIR)/examples $(TEST_PATH)/examples
	ln -sfn $(CURDIR)/benchmarks $(TEST_PATH)/benchmarks
	# -P: no working directory on sys.path, so the checkout's entropy_jax/ is not importable.
	ENTROPY_JAX_TEST_INSTALLED=1 PYTHONPATH=$(TEST_PATH) XLA_FLAGS="$(TEST_XLA_FLAGS)" \
	  $(BIN)/python -P -m pytest tests

# The sdist and the wheel, into dist/, and `twine check` of both.
dist: $(STAMP)
	rm -rf $(DIST) build
	$(BIN)/python -m build --outdir $(DIST) .
	$(BIN)/python -m twine check --strict $(DIST)/*

# The edit loop, on the checkout: the tests not marked slow (RL training, the
# soak, two-process and benchmark runs).
test-fast: $(EDITABLE)
	XLA_FLAGS="$(TEST_XLA_FLAGS)" $(BIN)/python -m pytest tests -m "not slow"

lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m mypy

demo: $(EDITABLE)
	$(BIN)/python examples/demo.py $(ARGS)

bench: $(EDITABLE)
	$(BIN)/python -m benchmarks.run $(ARGS)

# The documentation site, warnings as errors, into docs/_build/html.
docs: $(EDITABLE)
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) $(DIST) build docs/_build
