# Developer entry points. Every target uses the project's own virtual environment in .venv.
#   make venv     create .venv (if missing) and install the package with test and dev extras
#   make test     run the test suite           (PYTEST_ARGS="-k blocks --durations=15" to narrow)
#   make lint     ruff check                   (alias: make quality)
#   make train    train ResNet-20 with the paper's CIFAR-10 recipe, or continue it (DATA=, MODEL=,
#                 RECIPE=, OUT=, ARGS=)
#   make reproduce  continue the full-schedule CIFAR-10 reproduction in results/paper-cifar
#                   (NETS=resnet20,plain20 to choose, PARALLEL=2 runs at once); commit its
#                   state while it runs with `make reproduce-commit` (a snapshot, no stop);
#                   stop it with `make reproduce-stop` (the runs save); `resnets status
#                   results/paper-cifar` shows how far each run is
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
# The reproduction: which nets (empty = the CPU list) and how many train at once. Two
# one-thread runs train ~25% more images/s than one two-thread run on 2 cores (measured).
REPRO ?= results/paper-cifar
NETS ?=
PARALLEL ?= 2
# Only existing folders: ruff reports a missing path as an error (benchmarks/ may be absent).
LINT_PATHS := $(wildcard src tests benchmarks)

.PHONY: venv test lint quality train reproduce reproduce-stop reproduce-commit clean

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

# Resumes an unfinished run in $(OUT) (a new one starts when it is empty). A stop by
# SIGTERM/Ctrl-C saves first, so its exit status (143/130) is not reported as a failure.
train: venv
	@$(BIN)/resnets train --model $(MODEL) --recipe $(RECIPE) $(if $(strip $(DATA)),--data $(DATA)) \
		--out $(OUT) --resume auto $(ARGS); code=$$?; \
	if [ $$code -eq 130 ] || [ $$code -eq 143 ]; then echo "stopped and saved; \`make train\` continues it"; exit 0; fi; exit $$code

reproduce: venv
	$(BIN)/resnets experiment paper-cifar --out $(REPRO) $(if $(strip $(DATA)),--data $(DATA)) \
		--parallel $(PARALLEL) $(if $(strip $(NETS)),--nets $(NETS)) --quiet

# SIGTERM to the processes holding the runs' locks (their PIDs, never a name pattern): every
# run saves its checkpoint and stops; waits until they have.
reproduce-stop: venv
	$(BIN)/resnets stop $(REPRO)

# Commit the runs' state (training checkpoints of unfinished nets, final weights of finished
# ones, metrics, curves, summary) so that a fresh clone continues them. Running runs save a
# snapshot first and train on: no stop needed.
reproduce-commit: venv
	$(BIN)/resnets snapshot $(REPRO)
	$(BIN)/resnets experiment paper-cifar --out $(REPRO) $(if $(strip $(DATA)),--data $(DATA)) \
		$(if $(strip $(NETS)),--nets $(NETS)) --summary-only > /dev/null
	git add $(REPRO)
	git commit -m "paper-cifar: state of the full-schedule runs" -- $(REPRO)

clean:
	rm -rf build dist src/*.egg-info .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
