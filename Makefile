# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.nclab-installed
DEMO_OUT ?= results/demo

.PHONY: demo test venv clean bench docs

venv: $(STAMP)

# Re-install only when the project's metadata changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nclab demo --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile -q

bench: $(STAMP)
	$(PY) benchmarks/metrics.py

# The documentation site (mkdocs.yml) into site/, warnings as errors; the docs extra comes with .[test].
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) results .pytest_cache
