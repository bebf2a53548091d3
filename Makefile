# Two commands: `make run` (install and serve on the embedded SQLite default)
# and `make test` (install and run everything CI runs).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test coverage install install-test lint services bench proto

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

run: install
	$(BIN)/keyplane serve

lint: install-test
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

# The suite must stay under 15 minutes on two cores: line and branch tracing costs about a
# fifth of that, so CI runs it bare and `make coverage` prints the coverage report.
# Temporary files (SQLite databases, server work directories) live in memory when the host has
# /dev/shm: the tests' fsyncs then cost nothing, and two suites at once do not queue on the disk.
TEST_TMPDIR := $(shell [ -d /dev/shm ] && [ -w /dev/shm ] && echo /dev/shm || echo $${TMPDIR:-/tmp})

test: install-test services lint
	TMPDIR=$(TEST_TMPDIR) $(BIN)/pytest -n 2 --dist worksteal --durations=25

coverage: install-test services
	$(BIN)/pytest -n 2 --cov --cov-report=term:skip-covered

services:
	@bash .ci/services

bench: install-test
	$(BIN)/python bench/verify.py
	$(BIN)/python bench/usage.py

# Regenerate src/keyplane/grpc/gen from proto/ (tests/grpc/test_codegen.py checks it is current).
proto: install-test
	$(BIN)/python -m keyplane.grpc.codegen
