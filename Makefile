# RideMatch notebooks. The two commands a newcomer needs:
#   make demo   set up, start the local stack, run the whole notebook chain
#   make test   set up, start the local stack, lint, run every test
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PARAMS ?= params/local.yaml
PYTEST_ARGS ?=
# make test spreads the suite over this many workers: most tests wait on servers,
# so a 2-core machine keeps three busy (make test TEST_WORKERS=0: one process).
TEST_WORKERS ?= 3

.PHONY: help install system-deps stack-up stack-down stack-status lint format test test-fast demo lab serve clean-data

help:
	@echo "make demo        set up, start the local stack, run the notebook chain (outputs/runs/<id>/)"
	@echo "make test        set up, start the local stack, lint and run all tests"
	@echo "make test-fast   unit tests only (no servers)"
	@echo "make lab         JupyterLab on the project, kernel from .venv"
	@echo "make serve       the match over HTTP: POST 127.0.0.1:18000/match (after make demo)"
	@echo "make stack-up | stack-down | stack-status   the embedded Kafka/S3/Redis stack"
	@echo "make clean-data  stop the stack and delete its data (.stack/)"

# System packages the stack needs (redis-server); installs them when it can.
system-deps:
	@bash scripts/system-deps.sh

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip==26.3"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[dev]"
	@touch $(STAMP)

install: system-deps $(STAMP)

stack-up: install
	$(PY) -m ridematch_nb stack up --params $(PARAMS)

stack-down:
	@if [ -x $(PY) ]; then $(PY) -m ridematch_nb stack down --params $(PARAMS); else echo "no .venv: nothing to stop"; fi

stack-status: install
	$(PY) -m ridematch_nb stack status --params $(PARAMS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: install lint stack-up
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadgroup --durations=10 $(PYTEST_ARGS)

# No servers and no system packages: only the venv, the fast set on both cores.
test-fast: $(STAMP)
	$(VENV)/bin/pytest -n 2 -m "not integration and not notebooks and not browser" $(PYTEST_ARGS)

demo: stack-up
	$(PY) -m ridematch_nb run --params $(PARAMS)

lab: stack-up
	$(PY) -m ridematch_nb.stack.lab

# The match over HTTP on 127.0.0.1:18000, the newest run's model (after make demo).
serve: stack-up
	$(PY) -m ridematch_nb serve --params $(PARAMS)

clean-data: stack-down
	rm -rf .stack
