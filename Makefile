# The two set-up commands: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench clean

# Tests run in two parallel worker processes (pytest-xdist), measured on this two-core machine:
# the fast set spent 89 CPU-seconds on two workers, 102 on three and 106 on four for about the
# same wall time; the whole suite took 5:55 on two workers, all green, and 5:03 on three, where
# the kill proofs (tests/test_reliability_crash.py), timing their kills against child processes,
# failed while the many-hosts rounds ran alongside. ``loadgroup`` hands tests out one at a time,
# slow ones first (tests/conftest.py orders them), so the longest do not start last; tests
# sharing one expensive module fixture carry one ``xdist_group``.
TEST_WORKERS ?= 2

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/synccli demo

test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# Everything but the reliability proofs and the tests marked slow: for the edit-test loop.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not reliability and not slow" \
		$(PYTEST_ARGS)

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
