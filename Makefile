# Two commands do everything on a fresh machine with Python 3.11+ and git:
#   make demo   - the main job on the embedded data
#   make test   - every test (what .ci/run calls)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv sync readme docs-check bench clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/foodvision synth demo-store --n 1000 --size 128 --noise 0.2 --seed 0

# Fails if the library is out of sync with the notebooks or notebooks carry outputs they should not,
# then runs every notebook and the pytest suite.
test: venv
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python scripts/check_sync.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/nbdev-test --n-workers 2 --timing
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q

sync: venv
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean && $(BIN)/python scripts/make_readme.py

readme: venv
	$(BIN)/python scripts/make_readme.py

clean-venv:
	rm -rf $(VENV)
