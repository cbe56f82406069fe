# Dev set-up and the README's commands. `make test` and `make demo` create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0

.PHONY: dev test test-slow demo bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIN)  # CPU wheel; pinned first so nothing pulls a CUDA build
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

dev: $(BIN)/.installed

test: dev
	$(BIN)/python -m pytest

test-slow: dev
	$(BIN)/python -m pytest -m slow

demo: dev
	$(BIN)/locedit demo --out locedit-demo

bench: dev
	$(BIN)/python benchmarks/edit_latency.py

clean:
	rm -rf $(VENV) locedit-demo .pytest_cache
