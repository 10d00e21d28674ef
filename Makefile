# The single entry point: `make run` serves, `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install install-dev run test test-fresh-clone lint format soak bench bench-sse bench-memory bench-sync bench-poller demo screenshots clean

# pip prints a line per package: a cold install takes a few minutes and shows its progress.
PIP_INSTALL := $(BIN)/pip install --progress-bar off --disable-pip-version-check

$(BIN)/python:
	@echo "==> creating the virtual environment $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "==> installing template-sync and its dependencies into $(VENV)"
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	@echo "==> installing template-sync with its test and lint tools into $(VENV)"
	$(PIP_INSTALL) -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed          ## the service and its dependencies
install-dev: $(VENV)/.installed-dev  ## plus test and lint tools

run: install  ## migrate the store (SQLite under ./data by default) and serve on 127.0.0.1:8000
	$(BIN)/template-sync migrate
	$(BIN)/template-sync serve

# Tests spend most of their time waiting on loopback servers and databases, and each uses
# its own database, files and ports: three workers on two cores take the suite from about 14
# minutes to about 4 (TEST_JOBS=0 runs it in one process).
TEST_JOBS ?= 3

test: install-dev  ## the whole suite in TEST_JOBS workers; PostgreSQL too when TEMPLATE_SYNC_TEST_POSTGRES_URL is set
	$(BIN)/pytest -n $(TEST_JOBS)

test-fresh-clone: install-dev  ## the fixture-reading tests in a clone of HEAD alone in an empty directory
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  git clone --quiet "$$PWD" "$$tmp/template-sync" && cd "$$tmp/template-sync" && \
	  $(abspath $(BIN))/python -m pytest -q -p no:cacheprovider \
	    tests/test_graph.py tests/test_webhooks.py tests/test_app.py tests/test_demo.py

lint: install-dev
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy

soak: install-dev  ## the crash ledger for TEMPLATE_SYNC_SOAK_S seconds (default 300) on SQLite
	TEMPLATE_SYNC_SOAK_S=$${TEMPLATE_SYNC_SOAK_S:-300} $(BIN)/pytest -s -p no:cacheprovider \
	  -o timeout=0 "tests/test_reliability.py::test_crash_ledger_balances_across_sigkills[sqlite]"

demo: install  ## the whole loop offline: webhook, relay, notification, lost webhook repaired by sync, API create approved, lost review repaired by the poller
	$(BIN)/template-sync demo --workdir demo

screenshots: install-dev  ## the README's status page screenshots (docs/), taken in Debian's chromium
	$(BIN)/python -m tests.screenshots

bench: install-dev  ## ingest: bare Starlette, pywa, a durable floor, this service, with ~590-byte then ~1.1 KB bodies (~13 min); then with a relay and a subscription (~4 min, ~9 with PostgreSQL); BENCH_ARGS=--postgres-url ... goes to both
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	$(BIN)/pip install --quiet pywa==4.5.0  # the reference, pinned: its speed differs between releases
	$(BIN)/python bench/ingest.py $(BENCH_ARGS)
	$(BIN)/python bench/outbox.py $(BENCH_ARGS)

bench-sse: install-dev  ## 1,000 event streams on one process: an event's delay to all of them, RSS (~2 min; SSE_ARGS=--postgres-url ...)
	$(BIN)/python bench/sse.py $(SSE_ARGS)

bench-memory: install-dev  ## peak RSS of the service over 1,000,000 deliveries (~5 min)
	$(BIN)/python bench/ingest.py --memory $${BENCH_DELIVERIES:-1000000}

bench-sync: install  ## Graph calls per sync for both strategies (simulator, offline)
	$(BIN)/python bench/sync_calls.py

bench-poller: install  ## one simulated day: Graph and upstream calls and delays, the poller vs. peers and the seed's schedule (~4 min)
	$(BIN)/python bench/poller_cost.py $(BENCH_ARGS)

format: install-dev
	$(BIN)/ruff format service tests bench
	$(BIN)/ruff check --fix service tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
