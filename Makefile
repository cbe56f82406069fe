# Dev set-up and the README's commands. `make test` and `make demo` create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_PIN := torch==2.13.0

.PHONY: dev test test-slow test-compat lint demo bench browser clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIN)  # CPU wheel; pinned first so nothing pulls a CUDA build
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

dev: $(BIN)/.installed

test: dev
	$(BIN)/python -m pytest

lint: dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-slow: dev
	$(BIN)/python -m pytest -m slow

# transformers 4.x keeps `text_model.` in CLIPTextModel; the adapter, edits and the built-in
# model must work under both major versions.
COMPAT := .venv-tf4
$(COMPAT)/bin/.installed: pyproject.toml
	$(PYTHON) -m venv $(COMPAT)
	$(COMPAT)/bin/pip install -q --upgrade pip
	$(COMPAT)/bin/pip install -q $(TORCH_PIN)
	$(COMPAT)/bin/pip install -q 'transformers>=4.38,<5' -e '.[dev]'
	touch $@

test-compat: $(COMPAT)/bin/.installed
	$(COMPAT)/bin/python -c "import transformers; print('transformers', transformers.__version__)"
	$(COMPAT)/bin/python -m pytest tests/models tests/edit tests/test_cli.py tests/builtin/test_builtin_model.py \
		tests/builtin/test_scenes_train.py tests/builtin/test_scenes_world.py tests/builtin/test_scenes_model.py \
		tests/builtin/test_builtin_plugins.py

# Debian's headless Chromium for tests/report/test_html_browser.py (root and apt-get; the test skips without it).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium \
		|| (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium)); }
	chromium --version

demo: dev
	$(BIN)/locedit demo --out locedit-demo

bench: dev
	$(BIN)/python benchmarks/edit_latency.py

clean:
	rm -rf $(VENV) $(COMPAT) locedit-demo .pytest_cache
