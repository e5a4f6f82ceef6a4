# The two commands of the README: `make run` (whole pipeline on the built-in benchmark) and `make test`.
# Both create .venv on first use. torch is pinned to 2.13.0 *before* anything else is installed, so the
# resolver sees it satisfied and never pulls a CUDA build.
PY ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PATH := $(BIN):$(PATH)
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export DO_NOT_TRACK ?= 1
export DVC_NO_ANALYTICS ?= 1
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1

.PHONY: install run test test-fast results clean-run

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# `inflow run`: dvc repro of every stage with one Prefect server for the whole run, then the report's table
run: install
	inflow run

test: install
	python -m pytest -q

test-fast: install
	python -m pytest -q -m "not slow and not integration"

# The method comparison (README "Comparing methods"): every method x target x 3 seeds at select.fraction, LESS's
# paper rule and the LESS-T transfer check; reports/compare/report.{md,html}. A budget sweep:
# make results BUDGETS="0.01 0.05 0.1 0.25 0.5"
BUDGETS ?=
results: install
	python -m flows.server -- python -m flows.compare --seeds 0 1 2 $(if $(BUDGETS),--budgets $(BUDGETS))
