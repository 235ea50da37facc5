# Strata — the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test test-fast kafka-start kafka-stop clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

## demo: a local Kafka broker, a worker, a synthetic replay and live profiles
demo: install
	$(BIN)/strata demo

## test: the whole suite, integration tests against a real broker the suite starts itself
test: install
	$(BIN)/python -m pytest

## test-fast: only the pure tests (no broker)
test-fast: install
	$(BIN)/python -m pytest -m "not integration"

kafka-start: install
	$(BIN)/strata kafka start

kafka-stop: install
	$(BIN)/strata kafka stop

clean:
	rm -rf $(VENV) var .pytest_cache .hypothesis
