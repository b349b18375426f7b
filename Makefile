# Secumail — two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= var/secumail.toml

.PHONY: run test venv system-deps lint unit e2e bench clean

$(BIN)/secumail: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,fast,hsm]'
	touch $(BIN)/secumail

venv: $(BIN)/secumail

## make run: set up and start the gateway on its embedded default (SQLite, data in ./var).
run: venv
	$(BIN)/secumail --config $(CONFIG) init
	exec $(BIN)/secumail --config $(CONFIG) serve

system-deps:
	scripts/ensure-system-deps

lint: venv
	$(BIN)/ruff check src tests bench examples
	$(BIN)/lint-imports
	$(BIN)/mypy

## make test: set up and pass the whole suite.
test: venv system-deps lint
	$(BIN)/pytest -q

## make unit: the tests that need no running gateway (seconds to a minute), and the bus
## contract (tests/contract: what every bus implementation must do).
unit: venv
	$(BIN)/pytest -q -m "not e2e" tests/unit tests/contract

## make e2e: the real `secumail serve` against the fake internet (e2e, integration, security).
e2e: venv system-deps
	$(BIN)/pytest -q tests/e2e tests/integration tests/security

## make bench: Secumail vs Postfix+OpenDKIM side by side (root; ~9 min; BENCH_ARGS=--quick ~70 s).
bench: venv system-deps
	$(BIN)/python -c "import matplotlib" 2>/dev/null || $(BIN)/pip install -q -e '.[test,fast,hsm,bench]'
	$(BIN)/python bench/compare.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache
