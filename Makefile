# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.nclab-installed
DEMO_OUT ?= results/demo
# what `make demo` reproduces and at which scale (the suite runs `make demo DEMO_TARGET=lu2022
# DEMO_ARGS=--tiny` in a fresh clone); a failed claim makes `make demo` fail (exit status 1)
DEMO_TARGET ?= all
DEMO_ARGS ?= --quick

.PHONY: demo test venv clean bench docs

venv: $(STAMP)

# Re-install only when the project's metadata changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nclab reproduce $(DEMO_TARGET) $(DEMO_ARGS) --out $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadfile -q

bench: $(STAMP)
	$(PY) benchmarks/metrics.py

# The documentation site (mkdocs.yml) into site/, warnings as errors; the docs extra comes with .[test].
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

clean:
	rm -rf $(VENV) results .pytest_cache
