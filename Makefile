# Two commands do everything on a fresh machine with Python 3.11+ and git:
#   make demo   - the main job on the embedded data
#   make test   - every test (what .ci/run calls)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test venv sync readme browser clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/foodvision demo

# The browser test drives Debian's chromium (never a downloaded browser build); install it when we can.
browser:
	@command -v chromium >/dev/null || test -x /usr/bin/chromium || \
	  { if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q --no-install-recommends chromium; \
	    else echo "note: install Debian's chromium (apt-get install chromium) to run the browser test; it is skipped without it"; fi; }

# Fails if the library is out of sync with the notebooks or notebooks carry outputs they should not,
# then runs every notebook and the pytest suite.
# The install and the browser download at once (pip unpacks from disk while apt fetches); then the checks.
test:
	$(MAKE) --no-print-directory -j2 venv browser
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python scripts/check_sync.py
	# two notebooks at once on two cores: one math thread each, or OpenMP oversubscription makes training ~4x slower
	OMP_NUM_THREADS=1 PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/nbdev-test --n-workers 2 --timing
	# two test files at once (pytest-xdist); a file's tests stay on one worker, so its module fixtures are built once
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q -n 2 --dist loadfile

# nbs/ is the source of everything in foodvision/: the modules (nbdev-export) and the packaged dashboard (package_data.py)
sync: venv
	$(BIN)/nbdev-export && $(BIN)/nbdev-clean && $(BIN)/python scripts/package_data.py && $(BIN)/python scripts/make_readme.py

readme: venv
	$(BIN)/python scripts/make_readme.py

clean-venv:
	rm -rf $(VENV)
