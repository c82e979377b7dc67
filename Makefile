# `make search DATASET=digits` and `make test` are all a fresh machine needs:
# the first target that needs it creates .venv and installs the project.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Every setting (search/settings.py declares them, with their defaults) reaches `python -m imgsearch`
# as an environment variable: make passes on the variables of its command line and environment.

.PHONY: install search worker export evaluate predict report dashboard mlflow test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

search: install
	$(BIN)/python -m imgsearch search

worker: install
	$(BIN)/python -m imgsearch worker

export: install
	$(BIN)/python -m imgsearch export

evaluate: install
	$(BIN)/python -m imgsearch evaluate

predict: install
	$(BIN)/python -m imgsearch predict

report: install
	$(BIN)/python -m imgsearch report

dashboard: install
	$(BIN)/python -m imgsearch dashboard

mlflow: install
	$(BIN)/python -m imgsearch mlflow

# Three test processes on two cores: the suite is CPU-bound, but a third process fills the
# moments the others wait on a server, a kill or a timeout (measured on one tree, without the
# Docker and browser tests: 539 s, against 624 s with two; four were no faster than three).
# --dist loadgroup keeps an xdist_group on one of them.
test: install
	$(BIN)/python -m pytest -q -n 3 --dist loadgroup --durations=15 $(PYTEST_ARGS)

bench: install
	$(BIN)/python benchmarks/overhead.py
	$(BIN)/python benchmarks/prepare.py
	$(BIN)/python benchmarks/throughput.py

# Deletes RUNS_DIR only when it is a runs folder this project made, holding nothing else.
clean: install
	$(BIN)/python -m imgsearch clean
