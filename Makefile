# semimtl-geo: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-qgis lint demo clean

venv: $(STAMP)

## uv installs the same packages as pip from the same index, in parallel: about 20 s for
## the CUDA torch build and its 3 GB of libraries against pip's 80 s. uv does not read
## pip's configuration, so pip's `global.constraint` (a machine's version caps) is passed on.
$(STAMP): pyproject.toml
	@set -e; \
	if [ ! -x "$(PY)" ]; then \
	  base=$$(scripts/find_python.sh) || exit 1; \
	  echo "Creating $(VENV) with $$base"; \
	  "$$base" -m venv $(VENV); \
	fi; \
	constraint=$$($(PY) -m pip config list 2>/dev/null | sed -n "s/^[^=]*[.]constraint='\(.*\)'$$/\1/p" | head -n1); \
	if $(PY) -m pip install -q uv && $(VENV)/bin/uv pip install -q -p $(PY) \
	    $${constraint:+--constraint "$$constraint"} -e '.[test]'; then :; else \
	  echo "uv was not usable here; installing with pip (slower)"; \
	  $(PY) -m pip install -q --upgrade pip; \
	  $(PY) -m pip install -q -e '.[test]'; \
	fi; \
	touch $(STAMP)

## Run the whole test suite except the tests that need a real QGIS (see test-qgis).
test: venv
	$(PY) -m pytest -q -m "not qgis" tests

## Tests in a real QGIS (marked `qgis`): installs Debian's QGIS 3 packages when missing
## (apt-get, 1-3 min) and, for QGIS's Python, the onnxruntime and opencv versions the
## Deepness plugin installs itself (pip); then runs our plugin, Predict and Deepness's
## own map processors on our ONNX exports headless (about 2 min).
QGIS_PACKAGES := qgis python3-qgis qgis-providers python3-pip
# Deepness 0.6.5's python_requirements/requirements.txt (CPU onnxruntime, as on macOS/Windows).
DEEPNESS_PIP := 'numpy<2.0.0' 'onnxruntime>=1.12.1,<=1.17.0' 'opencv-python-headless>=4.5.5.64,<=4.9.0.80'
test-qgis: venv
	@set -e; \
	SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	if [ ! -x /usr/bin/qgis_process.bin ] || ! /usr/bin/python3 -m pip --version >/dev/null 2>&1; then \
	  command -v apt-get >/dev/null || { echo "test-qgis needs apt-get (Debian/Ubuntu) to install QGIS"; exit 1; }; \
	  echo "Installing $(QGIS_PACKAGES) with apt-get"; \
	  $$SUDO apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $(QGIS_PACKAGES) >/dev/null; \
	fi; \
	test -x /usr/bin/qgis_process.bin || { echo "QGIS install failed: no /usr/bin/qgis_process.bin"; exit 1; }; \
	if ! /usr/bin/python3 -c "import onnxruntime, cv2" >/dev/null 2>&1; then \
	  echo "Installing onnxruntime and opencv-python-headless for QGIS's Python (Deepness's versions)"; \
	  $$SUDO /usr/bin/python3 -m pip install -q --break-system-packages $(DEEPNESS_PIP); \
	fi
	$(PY) -m pytest -q -m qgis tests

## Run the whole pipeline on embedded synthetic data (outputs in runs/demo/).
demo: venv
	$(VENV)/bin/semimtl-geo demo -o runs/demo --overwrite

lint: venv
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
