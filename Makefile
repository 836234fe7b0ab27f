# The commands a newcomer uses. `make demo` and `make test` set everything up themselves:
# the virtualenv, Python dependencies and the servers (built or fetched once into
# ~/.cache/smartflow, then reused).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help deps venv servers images up down lint fmt crds test test-unit test-integration test-e2e demo bench bench-smoke chaos clean

help:
	@echo "make demo   - the whole product on this machine: real node, operator pod, role pods, autoscaling"
	@echo "make test   - install what is missing, lint, then every test tier (unit, integration, e2e)"
	@echo "make up     - start PostgreSQL, Kafka, the control plane and a real node (kubelet); write .local/env"
	@echo "make images - build the runtime and operator images from their Dockerfiles (buildah, no registry)"
	@echo "make down   - stop what make up started"
	@echo "make lint   - ruff, mypy (strict), import-layer contracts, CRD freshness"
	@echo "make crds   - regenerate crds/ from the spec models"
	@echo "make bench  - benchmarks into bench/results and bench/REPORT.md"
	@echo "make chaos  - the long fault drill (kills, 60 s PostgreSQL and broker outages); figures in .local/chaos/"

venv: $(STAMP)
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

servers: venv
	$(BIN)/smartflow-devstack build

images: servers
	$(BIN)/smartflow-devstack images

deps: venv servers

up: deps
	$(BIN)/smartflow-devstack up

down: venv
	$(BIN)/smartflow-devstack down

lint: venv
	$(BIN)/ruff check runtime operator devstack tests bench
	$(BIN)/ruff format --check runtime operator devstack tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: venv
	$(BIN)/ruff format runtime operator devstack tests bench
	$(BIN)/ruff check --fix runtime operator devstack tests bench

crds: venv
	$(BIN)/smartflow-operator crds --output crds
	$(BIN)/smartflow-operator crds --output charts/smartflow-operator/crds

# Tests wait far more than they compute (pods starting, rebalances, poll intervals), so they run in
# parallel workers against one shared stack (`with-stack`: the running `make up` stack, or one
# started for the run and stopped after it). A module's tests stay in one worker (loadscope), so
# its module fixtures (a runtime on the node, say) are made once.
PYTEST_WORKERS ?= 3
test: deps lint
	$(BIN)/smartflow-devstack with-stack -- $(BIN)/pytest -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadscope $(PYTEST_ARGS) tests

test-unit: deps
	$(BIN)/pytest -p no:cacheprovider -m unit $(PYTEST_ARGS) tests

test-integration: deps
	$(BIN)/pytest -p no:cacheprovider -m integration $(PYTEST_ARGS) tests

test-e2e: deps
	$(BIN)/pytest -p no:cacheprovider -m e2e $(PYTEST_ARGS) tests

DEMO_ARGS ?=
demo: deps
	$(BIN)/smartflow-devstack demo $(DEMO_ARGS)

BENCH_ARGS ?=
bench: deps
	$(PY) -m bench.run $(BENCH_ARGS)

# The long fault drill (a few minutes): real runtime processes under load through SIGKILLs and
# 60 s PostgreSQL and broker outages, then figures (accepted, effects, duplicates, losses,
# self-exits, drain time) in .local/chaos/. `make test` runs the short profile.
chaos: deps
	SMARTFLOW_CHAOS_PROFILE=long $(BIN)/pytest -p no:cacheprovider -s -o timeout=1200 $(PYTEST_ARGS) \
		tests/integration/chaos/test_drill.py tests/integration/chaos/test_group_stability.py

bench-smoke: deps
	$(PY) -m bench.run --smoke --results-dir .local/bench/smoke/results --report-dir .local/bench/smoke

clean:
	rm -rf $(VENV) .local .mypy_cache .ruff_cache
