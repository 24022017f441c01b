# The two commands of the README, and the steps they are made of.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_WORKERS ?= 2

.PHONY: demo test install stack stack-down migrate lint unit integration bench clean

demo: stack migrate  ## the main job: stack, services and the demo, on a fresh machine
	$(BIN)/omnistock demo

test: stack migrate lint  ## everything CI checks, against the real stack
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile -q

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "omnistock needs Python 3.11"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

stack: install
	$(BIN)/omnistock stack up

stack-down: install
	$(BIN)/omnistock stack down

migrate: install
	$(BIN)/omnistock migrate
	$(BIN)/omnistock topics

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: install
	$(BIN)/pytest tests/unit -q

integration: stack migrate
	$(BIN)/pytest tests/integration -n $(PYTEST_WORKERS) --dist loadfile -q

bench: stack migrate
	$(BIN)/omnistock bench outbox --json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
