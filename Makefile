# Every target installs what it needs into .venv first, so each works on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision first, pinned to a matching pair (pip only: uv/poetry may pull other builds).
TORCH ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: install train test test-quick bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

train: install
	$(BIN)/cvtrain task=captioning model=gru

test: install
	$(BIN)/python -m pytest -q -n 2 $(PYTEST_ARGS)

# Everything but the end-to-end runs marked slow (the contract over every model, signals, races).
test-quick: install
	$(BIN)/python -m pytest -q -n 2 -m "not slow" $(PYTEST_ARGS)

bench: install
	$(BIN)/python scripts/bench_throughput.py
	$(BIN)/python scripts/bench_shapesworld.py

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
