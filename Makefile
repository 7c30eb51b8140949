# The two set-up commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/synccli demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check synccli tests bench
	$(BIN)/ruff format --check synccli tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/month.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/ratelimit.py

clean:
	rm -rf $(VENV) .pytest_cache
