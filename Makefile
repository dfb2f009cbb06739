# Developer entry points. Every target uses the project's own virtual environment in .venv.
#   make venv     create .venv (if missing) and install the package with test and dev extras
#   make test     run the test suite           (PYTEST_ARGS="-k blocks --durations=15" to narrow)
#   make lint     ruff check                   (alias: make quality)
#   make train    train ResNet-20 with the paper's CIFAR-10 recipe (DATA=, MODEL=, RECIPE=, OUT=, ARGS=)
#   make clean    remove caches and build outputs (keeps .venv and runs/)

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
# Touched after a successful install; older than pyproject.toml means: install again.
STAMP := $(VENV)/.installed

# The shared CIFAR-10 archive when it sits beside the repository; empty means that
# `resnets train` downloads CIFAR-10 with torchvision. Override: make train DATA=path/or/url
SHARED_CIFAR := ../shared/data/cifar10-jpg-train.tar.xz
DATA ?= $(wildcard $(SHARED_CIFAR))
MODEL ?= resnet20
RECIPE ?= cifar10-paper
OUT ?= runs/$(MODEL)
ARGS ?=
PYTEST_ARGS ?=
# Only existing folders: ruff reports a missing path as an error (benchmarks/ may be absent).
LINT_PATHS := $(wildcard src tests benchmarks)

.PHONY: venv test lint quality train clean

venv: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[test,dev]"
	touch $@

test: venv
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check $(LINT_PATHS)

quality: lint

train: venv
	$(BIN)/resnets train --model $(MODEL) --recipe $(RECIPE) $(if $(strip $(DATA)),--data $(DATA)) --out $(OUT) $(ARGS)

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
