# Two entry points, each self-contained on a fresh clone (Python >= 3.11 on PATH):
#   make demo   -> creates .venv, installs sm1km, runs `sm1km demo` on the synthetic world
#   make test   -> creates .venv, installs sm1km with the test and docs extras, runs `make lint`, then the whole test suite
#   make docs   -> installs the docs extra, builds the docs site (mkdocs, strict: broken links fail) into site/
#   make lint   -> ruff (imports, pyflakes, bugbear, pyupgrade) and mypy (strict on core/ and storage/);
#                  both configured in pyproject.toml
PYTHON ?= python3
VENV ?= .venv
DEMO_DIR ?= demo-output

.PHONY: demo test lint docs install install-test install-docs clean

$(VENV)/bin/uv:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip uv

install: $(VENV)/bin/uv
	$(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python -e .

install-test: $(VENV)/bin/uv
	$(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python -e '.[test,k8s,docs]'

install-docs: $(VENV)/bin/uv
	$(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python -e '.[docs]'

demo: install
	$(VENV)/bin/sm1km demo --workdir $(DEMO_DIR)

# the mkdocs-2 notices some plugins print on every build are silenced (they are not about this site)
docs: install-docs
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(VENV)/bin/mkdocs build --strict

lint: install-test
	$(VENV)/bin/ruff check pipeline tests benchmarks
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_DIR) site .pytest_cache .mypy_cache .ruff_cache
