# `make search DATASET=digits` and `make test` are all a fresh machine needs:
# the first target that needs it creates .venv and installs the project.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
RUNS_DIR ?= runs
DASHBOARD_PORT ?= 8080
MLFLOW_PORT ?= 5000

# Every setting reaches `python -m search` as an environment variable of the same name.
export DATASET SPACE TRIALS EPOCHS BUDGET TIMEOUT MAX_EPOCH_SECONDS IMAGE_SIZE STORAGE STUDY RUNS_DIR DATA_DIR \
       SAMPLER PRUNER SEED LABELS FOLDER MLFLOW_TRACKING_URI TRIALS_PER_PROCESS \
       MAX_BLOCKS BACKBONES WEIGHTS WEIGHTS_DIR MAX_MODEL_SIZE PRETRAINED WORKERS HEARTBEAT DB_RETRY \
       HOST DASHBOARD_PORT MLFLOW_PORT REPORT


.PHONY: install search worker export evaluate report dashboard mlflow test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

search: install
	$(BIN)/python -m search search

worker: install
	$(BIN)/python -m search worker

export: install
	$(BIN)/python -m search export

evaluate: install
	$(BIN)/python -m search evaluate

report: install
	$(BIN)/python -m search report

# Database URLs reach the dashboards through the environment, not a command line `ps` shows.
dashboard: install
	$(BIN)/python -m search.dashboards dashboard

mlflow: install
	$(BIN)/python -m search.dashboards mlflow

test: install
	$(BIN)/python -m pytest -q --durations=15 $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/prepare.py

clean:
	rm -rf $(RUNS_DIR)
