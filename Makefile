# Strata — the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install browser demo test test-fast kafka-start kafka-stop clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# setuptools announces every editable install of a package-dir layout with a notice, not a warning
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip install --quiet -e '.[test]'
	touch $@

## demo: a local Kafka broker, a worker, a synthetic replay and live profiles
demo: install
	$(BIN)/strata demo

## browser: Debian's Chromium and ChromeDriver, for the dashboard's test (installed when missing, as root)
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium and chromium-driver (apt-get) for the dashboard test ..."; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null; }; \
	  else \
	    echo "note: the dashboard test needs chromium and chromium-driver (apt-get install chromium chromium-driver) and is skipped without them"; \
	  fi; \
	fi

## test: the whole suite, integration tests against a real broker the suite starts itself
test: install browser
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
