# Two commands for a fresh machine (see README):
#   make run    install into .venv, then run the workflow on the embedded default
#   make test   install into .venv, then run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2
SNAKEMAKE_ARGS ?=
# Rules that train or explain models carry resources: gpu=1, and profiles/default lets one
# such job run at a time (one GPU). Without a GPU they run on CPU cores: let as many run
# as there are cores.
NGPU := $(shell nvidia-smi -L 2>/dev/null | grep -c GPU)
GPU_SLOTS := $(if $(filter 0,$(NGPU)),$(CORES),$(NGPU))

.PHONY: install lock run test test-all lint report clean-results

# Installs come from requirements/lock.txt only (exact versions, sha256 hashes); `make lock`
# regenerates it from pyproject.toml and derives the conda envs' pins from it.
LOCK := requirements/lock.txt
PYTHON ?= python3
UV_VERSION := 0.13.9
LOCK_TOOLS := .lock-tools
# where the CPU torch wheel comes from: the local wheel folder of this project's machines, else PyTorch's CPU index
TORCH_SOURCE ?= $(if $(wildcard /opt/wheels/torch-*),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)
# `make lock` keeps every pin it can; UPGRADE=--upgrade takes the newest of everything,
# UPGRADE="--upgrade-package scanpy" one package
UPGRADE ?=

$(VENV)/.installed: $(LOCK) pyproject.toml
	@$(PYTHON) src/cellgnn/lockfile.py check
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@$(PY) src/cellgnn/lockfile.py verify
	touch $@

install: $(VENV)/.installed

# Compile the lock for CPython 3.11 on Linux x86_64 (the CPU torch from pip's find-links),
# then write the conda envs' pins from it. See README "Upgrading a dependency".
lock:
	$(PYTHON) -m pip install --quiet --target $(LOCK_TOOLS) uv==$(UV_VERSION)
	$(LOCK_TOOLS)/bin/uv pip compile pyproject.toml requirements/build.in --extra test \
		--constraint requirements/constraints.in --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 $(TORCH_SOURCE) --index-strategy unsafe-best-match \
		--generate-hashes --custom-compile-command "make lock" $(UPGRADE) --quiet -o $(LOCK)
	$(PYTHON) src/cellgnn/lockfile.py stamp
	$(PYTHON) src/cellgnn/lockfile.py envs


run: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --cores $(CORES) --resources gpu=$(GPU_SLOTS) $(SNAKEMAKE_ARGS)

test: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest

# slow and cluster tests too (CI runs these after `make test`)
test-all: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -m "slow or slurm or not slow" -p no:cacheprovider

lint: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --lint

report: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(VENV)/bin/snakemake --report report.html
