# Baton: `make demo` and `make test` work on a fresh machine (they set themselves up).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DURATION ?= 120
BACKEND  ?= sqlite
SEED     ?= 1

.PHONY: demo test check lint typecheck servers bench chaos clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

## Three replicas on the embedded backend, a leader crash, and the verdict.
demo: $(VENV)/.installed
	$(BIN)/python -m scheduler.ops.demo

## The whole suite on real servers (installs redis-server/zookeeper if missing). Two pytest
## workers (pytest-xdist): most tests wait on servers and timeouts, not on the CPU, so two
## halve the wall time on 2 cores; --dist loadscope keeps each module on one worker (the
## chaos module's runs one after another, a module's session servers started once).
test: $(VENV)/.installed servers lint typecheck
	$(BIN)/pytest -q -n 2 --dist loadscope

## The fast tier (under a minute, no servers): lint, types, unit tests, the contract suite on
## the embedded backend (SQLite) and the chaos checker's tests. Run it while you work.
check: $(VENV)/.installed lint typecheck
	$(BIN)/pytest -q tests/unit tests/chaos/test_checker.py
	$(BIN)/pytest -q tests/contract -k sqlite

servers:
	@bash scripts/ensure-servers.sh

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed
	$(BIN)/mypy

## Benchmarks: numbers go to BENCHMARKS.md.
bench: $(VENV)/.installed servers
	$(BIN)/python -m benchmarks.run --write BENCHMARKS.md

## Chaos: 5 replicas, seeded faults, checker verdict (exit 1 on a violated invariant).
## make chaos DURATION=600 BACKEND=sqlite|redis|zookeeper|postgresql|sentinel|cluster|etcd|redlock SEED=7
chaos: $(VENV)/.installed servers
	mkdir -p .baton
	$(BIN)/python -m tests.chaos.run --backend $(BACKEND) --duration $(DURATION) --seed $(SEED) \
		--report .baton/chaos-$(BACKEND)-$(SEED).md

clean:
	rm -rf $(VENV) demo-run .baton .pytest_cache .mypy_cache .ruff_cache
