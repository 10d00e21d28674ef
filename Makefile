# The single entry point: `make run` serves, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-dev run test lint format bench-sync demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed          ## the service and its dependencies
install-dev: $(VENV)/.installed-dev  ## plus test and lint tools

run: install  ## migrate the store (SQLite under ./data by default) and serve on 127.0.0.1:8000
	$(BIN)/template-sync migrate
	$(BIN)/template-sync serve

test: install-dev  ## the whole suite; PostgreSQL too when TEMPLATE_SYNC_TEST_POSTGRES_URL is set
	$(BIN)/pytest

lint: install-dev
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy

demo: install  ## the whole loop offline: simulator, service, webhook, lost webhook repaired by sync
	$(BIN)/template-sync demo --workdir demo

bench-sync: install  ## Graph calls per sync for both strategies (simulator, offline)
	$(BIN)/python bench/sync_calls.py

format: install-dev
	$(BIN)/ruff format service tests bench
	$(BIN)/ruff check --fix service tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
