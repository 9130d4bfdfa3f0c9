# winback: `make demo` and `make test` bootstrap .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export DO_NOT_TRACK := 1

.PHONY: demo test test-slow lint bench ui clean

# Re-install when the dependency list or the lock changes (a stale venv is rebuilt in place).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m winback.demo.run_demo

test: $(STAMP)
	$(PY) -m pytest -q

# The slow end-to-end tests: a real `prefect server start` + deploy + worker, kill -9 with sender processes.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests flows bench

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

ui: $(STAMP)
	$(PY) -m flows.serve

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache demo-out
