# semimtl-geo: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast test-qgis lint demo clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@set -e; \
	if [ ! -x "$(PY)" ]; then \
	  base=$$(scripts/find_python.sh) || exit 1; \
	  echo "Creating $(VENV) with $$base"; \
	  "$$base" -m venv $(VENV); \
	fi; \
	$(PY) -m pip install -q --upgrade pip; \
	$(PY) -m pip install -q -e '.[test]'; \
	touch $(STAMP)

## Run the whole test suite (QGIS tests skip unless QGIS is installed; see test-qgis).
test: venv
	$(PY) -m pytest -q tests

lint: venv
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
