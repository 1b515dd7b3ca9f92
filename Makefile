# Two entry points, each self-contained on a fresh clone (Python >= 3.11 on PATH):
#   make demo   -> creates .venv, installs sm1km, runs `sm1km demo` on the synthetic world
#   make test   -> creates .venv, installs sm1km with test extras, runs the whole test suite
PYTHON ?= python3
VENV ?= .venv
DEMO_DIR ?= demo-output

.PHONY: demo test install install-test clean

$(VENV)/bin/uv:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip uv

install: $(VENV)/bin/uv
	$(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python -e .

install-test: $(VENV)/bin/uv
	$(VENV)/bin/uv pip install --quiet --python $(VENV)/bin/python -e '.[test,k8s]'

demo: install
	$(VENV)/bin/sm1km demo --workdir $(DEMO_DIR)

test: install-test
	$(VENV)/bin/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
