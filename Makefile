# Two commands: `make run` brings the whole stack up, `make test` runs the whole suite.
# Everything installs itself: the virtualenv from the hashed lock file, and the browser the
# page test drives (Debian's chromium, via apt when we may use it).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements-dev.lock | cksum | cut -d' ' -f1)
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
USER_ID ?= player1

.PHONY: help install run test lint token bench browser wrk k8s k8s-validate clean

help:
	@echo "make run     start Redis/PostgreSQL (embedded unless REDIS_URL/DATABASE_URL), migrate, all services"
	@echo "make test    the whole test suite (embedded servers unless REDIS_URL/DATABASE_URL)"
	@echo "make lint    ruff + mypy --strict"
	@echo "make token USER_ID=alice   print a development JWT"
	@echo "make bench   benchmarks; writes docs/benchmarks.md and docs/benchmarks.json"
	@echo "make k8s     render the kustomize overlays into build/k8s/"
	@echo "make k8s-validate   render and validate every overlay (schemas 1.29 + newest, policies)"

$(STAMP): requirements-dev.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 required"'
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3-venv missing; installing it with apt"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --require-hashes -r requirements-dev.lock
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

run: install
	$(BIN)/python -m devstack.run

wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  echo "installing wrk for the HTTP benchmarks and their harness tests"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq wrk; }

test: install browser wrk
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

token: install
	@$(BIN)/python -m devstack.devtoken $(USER_ID)

bench: install wrk
	$(BIN)/python -m bench

k8s:
	@command -v kubectl >/dev/null 2>&1 || { echo "kubectl is required (kubectl kustomize)"; exit 1; }
	@mkdir -p build/k8s
	@for overlay in deploy/k8s/overlays/*/; do \
	  name=$$(basename $$overlay); \
	  kubectl kustomize $$overlay > build/k8s/$$name.yaml && echo "build/k8s/$$name.yaml"; \
	done

k8s-validate: install
	$(BIN)/python -m pytest -q tests/test_deploy.py

clean:
	rm -rf $(VENV) .dev build .mypy_cache .ruff_cache .pytest_cache .hypothesis
