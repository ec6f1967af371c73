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

.PHONY: install run test test-all lint report clean-results

$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: a CPU build; an unpinned torch would pull a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $@

install: $(VENV)/.installed

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
