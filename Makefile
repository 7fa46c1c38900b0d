# Two entry points for a fresh clone: `make demo` and `make test` (README, Quick start).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
# torch is installed first, from TORCH_SPEC and, when set, TORCH_INDEX (pip options naming an index).
# Where the local pip configuration offers a CPU build of 2.13.0 (this project's CI), the default takes it;
# on an ordinary Linux machine the same spec downloads the CUDA build. CPU-only machines pass
# TORCH_INDEX='--index-url https://download.pytorch.org/whl/cpu' (README, Quick start).
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
export DAGSTER_HOME := $(CURDIR)/.dagster_home
BIN := $(VENV)/bin

.PHONY: demo test install dev lint screenshots clean-artifacts

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_INDEX) "$(TORCH_SPEC)"

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

$(DAGSTER_HOME)/.initialised: $(VENV)/.installed .dagster_home/dagster.yaml
	$(BIN)/dagster instance migrate > /dev/null
	$(BIN)/dagster instance concurrency set gpu 1 > /dev/null
	touch $@

demo: $(DAGSTER_HOME)/.initialised
	$(BIN)/arena build-demo
	# Observe the raw files first, so the automation sensor sees them as already built from.
	$(BIN)/arena observe > /dev/null
	$(BIN)/dagster asset materialize -m arena_assets.definitions --select '*' -c configs/demo.yaml
	$(BIN)/arena where

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

dev: $(DAGSTER_HOME)/.initialised
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1

screenshots: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[screenshots]'
	$(BIN)/python scripts/screenshots.py

lint: $(VENV)/.installed
	$(BIN)/ruff check arena_assets arena_assets_tests

clean-artifacts:
	rm -rf data/artifacts
