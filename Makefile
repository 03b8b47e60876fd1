# Tether: developer commands. `make run` serves a seeded demo; `make test` runs the whole suite.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The interpreter that creates the virtualenv: python3.11, else python3 (override with PYTHON=...).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
HOST ?= 127.0.0.1
PORT ?= 5000
# Extra pytest arguments, e.g. make test PYTEST_ARGS='-k runtime'
PYTEST_ARGS ?=
# Test processes running side by side (pytest-xdist): three for every two cores, since the suite's served, browser
# and broker tests spend some of their time waiting on other processes; more only make them wait for the cores
# (measured in docs/testing.md).
PYTEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n + (n + 1) / 2 )))

export PIP_DISABLE_PIP_VERSION_CHECK := 1

NODE_STAMP := node_modules/.tether-installed
CHROMIUM ?= /usr/bin/chromium

.PHONY: help install run test test-fast lint bench clean chromium rabbitmq screenshots

help:
	@echo "make install   create $(VENV) and install Tether with its test tools"
	@echo "make run       seed the demo (tether demo) and serve on http://$(HOST):$(PORT)"
	@echo "make test      lint, then the whole suite on SQLite and a throwaway PostgreSQL and RabbitMQ"
	@echo "               (extra pytest arguments: make test PYTEST_ARGS='-k runtime')"
	@echo "make test-fast the inner loop: SQLite only, no browser, no server processes"
	@echo "make lint      ruff (lint and format), mypy and the import layers (lint-imports)"
	@echo "make bench     run the benchmarks"
	@echo "make screenshots  retake docs/screenshots/ of the web pages (headless Chromium)"
	@echo "make clean     remove $(VENV), instance/ and caches"

# The Python packages and the browser packages install side by side.
install:
	@$(MAKE) --no-print-directory -q $(STAMP) $(NODE_STAMP) || $(MAKE) --no-print-directory -j2 $(STAMP) $(NODE_STAMP)

# Re-installs only when the packaging metadata changed (the install is editable, so code changes need nothing).
$(STAMP): setup.cfg pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
		echo "creating $(VENV) with $(or $(PYTHON),python3)"; \
		$(or $(PYTHON),python3) -m venv $(VENV) || { rm -rf $(VENV); python3 -m venv $(VENV); }; \
	fi
	@# uv (from PyPI) installs the same packages as pip in a few seconds where pip takes half a minute; pip does it
	@# when uv cannot be had. setuptools' notes about editable installs are noise here: the repository is the
	@# package's home by design.
	$(BIN)/python -m pip install --quiet uv && PYTHONWARNINGS=ignore $(BIN)/uv pip install --quiet --python $(BIN)/python -e '.[test]' \
		|| { $(BIN)/python -m pip install --quiet --upgrade pip && PYTHONWARNINGS=ignore $(BIN)/python -m pip install --quiet -e '.[test]'; }
	@touch $@

# The web pages' browser packages (bpmn-js), from the npm registry into node_modules/ (served locally, no CDN).
$(NODE_STAMP): package.json $(wildcard package-lock.json)
	@if ! command -v npm >/dev/null 2>&1; then \
		echo "npm not found: the web pages will show no BPMN diagrams (install Node.js 20 and npm, then make install)"; \
	else \
		if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error; \
		else npm install --no-audit --no-fund --loglevel=error; fi && touch $@; \
	fi

# Debian's Chromium for the browser tests (tests/browser skip themselves when it is missing).
chromium:
	@if [ -x "$(CHROMIUM)" ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Chromium for the browser tests (apt-get install chromium)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else \
		echo "Chromium is not installed and this is not root: the browser tests (tests/browser) will be skipped;"; \
		echo "install it with 'sudo apt-get install chromium'"; \
	fi

# Debian's RabbitMQ for the broker tests (a throwaway node per run: scripts/with-rabbitmq; skipped without it).
rabbitmq:
	@if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing RabbitMQ for the broker tests (apt-get install rabbitmq-server)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null; \
	else \
		echo "RabbitMQ is not installed and this is not root: the broker tests will be skipped;"; \
		echo "install it with 'sudo apt-get install rabbitmq-server'"; \
	fi

run: install
	$(BIN)/tether demo --url http://$(HOST):$(PORT)
	$(BIN)/tether serve --host $(HOST) --port $(PORT)

# The suite starts many interpreters (its test processes, the servers and command lines they run, script workers):
# each reads the modules' compiled code from __pycache__ instead of compiling every module again, and pytest keeps
# its rewritten test modules there, even where the environment asks Python not to write bytecode.
test test-fast: export PYTHONDONTWRITEBYTECODE :=

# The checks of make lint come first, but mypy's (ten seconds of one core from a clean clone) runs beside the suite:
# what it finds is printed, and fails the run, once the suite has ended.
test: install chromium rabbitmq
	$(BIN)/ruff check engine server tests bench
	$(BIN)/ruff format --check engine server tests bench
	$(BIN)/lint-imports
	@echo "$(BIN)/mypy engine server (beside the suite)"; \
	log=$$(mktemp); $(BIN)/mypy engine server >"$$log" 2>&1 & mypy=$$!; \
	bash scripts/with-postgres bash scripts/with-rabbitmq --boot-alongside $(BIN)/pytest -q -n $(PYTEST_JOBS) --dist worksteal $(PYTEST_ARGS); \
	suite=$$?; wait $$mypy; types=$$?; echo "mypy engine server:"; cat "$$log"; rm -f "$$log"; \
	[ $$suite -eq 0 ] && [ $$types -eq 0 ]

test-fast: install
	$(BIN)/pytest -q -n $(PYTEST_JOBS) --dist worksteal -m "not slow" --ignore=tests/browser $(PYTEST_ARGS)

screenshots: install chromium
	TETHER_UPDATE_SCREENSHOTS=1 $(BIN)/pytest -q tests/browser/test_screenshots.py

lint: install
	$(BIN)/ruff check engine server tests bench
	$(BIN)/ruff format --check engine server tests bench
	$(BIN)/mypy engine server
	$(BIN)/lint-imports

# Every benchmark on SQLite and on a throwaway PostgreSQL and RabbitMQ (make bench BENCH='overhead audit' runs some;
# BENCH=--quick runs each smaller, to check that they run).
BENCH ?=
bench: install
	bash scripts/with-postgres bash scripts/with-rabbitmq $(BIN)/python -m bench $(BENCH)

clean:
	rm -rf $(VENV) instance build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis node_modules
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
