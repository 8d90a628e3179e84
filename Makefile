# Two commands do all set-up on a fresh machine:
#   make repro   -> create .venv, install, download the data if needed (make data), run the whole DVC pipeline
#   make test    -> create .venv, install, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONUNBUFFERED := 1

.PHONY: venv repro test bench compare params data study clean-venv

$(BIN)/.installed: requirements.txt requirements-test.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-test.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

venv: $(BIN)/.installed

params: venv  ## validate params.yaml (every section) and every profile in conf/profile/, and exit
	$(BIN)/python -m tinyhelen.params params.yaml
	$(BIN)/python -m tinyhelen.profiles check

study: venv data  ## make study PROFILE=cpu-study : dvc exp run -S profile=$(PROFILE), results saved in results/$(PROFILE)/
	$(BIN)/python -m tinyhelen.profiles run $(or $(PROFILE),cpu-study)

data: venv  ## download the pinned release into data.local_dir (params.yaml) unless that directory exists
	$(BIN)/python -m tinyhelen.data.fetch

repro: venv params data
	$(BIN)/dvc repro
	$(BIN)/python -m tinyhelen.pipeline lock --prune  # entries of stages a smaller matrix no longer defines
	$(BIN)/dvc metrics show

test: venv
	$(BIN)/python -m pytest -q

bench: venv
	$(BIN)/python benchmarks/bench_entropy.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_llm.py

compare: venv  ## make compare BASE=main : metrics/params diff of the workspace against BASE
	$(BIN)/dvc params diff $(or $(BASE),main) --md
	$(BIN)/dvc metrics diff $(or $(BASE),main) --md

clean-venv:
	rm -rf $(VENV)
