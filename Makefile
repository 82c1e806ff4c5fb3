# Every target does its own set-up: a fresh machine needs only python3.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Multi-device tests run on 8 virtual CPU devices (tests/conftest.py sets the
# same). Only the tests: the demo and the benchmarks run as a user's program
# would, on jax's default devices (8 virtual devices slow small XLA:CPU calls).
TEST_XLA_FLAGS ?= --xla_force_host_platform_device_count=8

.PHONY: test test-fast lint demo bench docs clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# The pinned CPU build of torch first, so nothing pulls a CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,examples,docs,integrations]'
	# Velora without its heavy declared extras, plus what its import, its agents and their
	# train() need (sqlmodel 0.0.45 and later refuse the naive datetimes Velora's metrics store).
	$(BIN)/python -m pip install -q --no-deps velora==0.2.0
	$(BIN)/python -m pip install -q gymnasium 'safetensors>=0.5.3,<0.6' 'sqlmodel>=0.0.24,<0.0.45' \
		'pydantic-settings>=2.8.1,<3' 'plotly>=6,<7' array_api_compat
	touch $(STAMP)

# Everything: the linters, then every test (what .ci/run runs).
test: lint
	XLA_FLAGS="$(TEST_XLA_FLAGS)" $(BIN)/python -m pytest tests

# The edit loop: the tests not marked slow (RL training, the soak, two-process
# and benchmark runs).
test-fast: $(STAMP)
	XLA_FLAGS="$(TEST_XLA_FLAGS)" $(BIN)/python -m pytest tests -m "not slow"

lint: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m ruff format --check .
	$(BIN)/python -m mypy

demo: $(STAMP)
	$(BIN)/python examples/demo.py $(ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(ARGS)

# The documentation site, warnings as errors, into docs/_build/html.
docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) docs/_build
