# The two commands a newcomer needs: `make demo` and `make test`.
# Everything is installed into .venv from the package registries; nothing else is assumed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?= -n 2

.PHONY: test demo bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.dev-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[demo]"
	touch $@

$(VENV)/.bench-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[bench,dev]"
	touch $@

test: $(VENV)/.dev-installed
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(VENV)/.demo-installed
	$(PY) examples/demo.py

bench: $(VENV)/.bench-installed
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
