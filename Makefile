# Two commands do all the set-up on a fresh machine:
#   make demo   - the main job: the synthetic end-to-end story (world, model, attack, defense, attack again)
#   make test   - the test suite (fast tests; `make test-all` includes the slow ones)
# Each creates its own virtual environment (.venv) on first use.
# Documentation: `make docs` builds the site into site/ (strict: a broken link or API reference fails),
# `make docs-serve` serves it at http://127.0.0.1:8000, `make docs-figures` redraws its figures from the JSON
# results, `make docs-screenshots` renders the index and results pages with headless Chromium.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch lies on this machine's disk; pinning it in the same pip command keeps pip from
# resolving a multi-GB CUDA build. Override on a GPU machine: make TORCH_SPEC=torch test
TORCH_SPEC ?= torch==2.13.0
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test test-all lint format clean-cache docs docs-serve docs-figures docs-screenshots

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)" -e ".[dev,docs]"
	touch $@

demo: $(VENV)/.installed
	$(PY) recipes/demo.py

test: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" -q

test-all: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: $(VENV)/.installed
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

export NO_MKDOCS_2_WARNING ?= 1
CHROMIUM ?= $(shell command -v chromium || command -v chromium-browser || command -v google-chrome || echo chromium)
SCREENSHOT_FLAGS := --headless --disable-gpu --hide-scrollbars $(if $(filter 0,$(shell id -u)),--no-sandbox)

docs: $(VENV)/.installed
	$(VENV)/bin/mkdocs build --strict

docs-serve: $(VENV)/.installed
	$(VENV)/bin/mkdocs serve

docs-figures: $(VENV)/.installed
	$(PY) benchmarks/plot_results.py

docs-screenshots: docs
	$(CHROMIUM) $(SCREENSHOT_FLAGS) --window-size=1280,900 --screenshot=docs/assets/screenshot_index.png file://$(CURDIR)/site/index.html
	$(CHROMIUM) $(SCREENSHOT_FLAGS) --window-size=1280,1800 --screenshot=docs/assets/screenshot_results.png file://$(CURDIR)/site/results.html

clean-cache:
	rm -rf $${HF_PRIVACY_BACKDOOR_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/hf_privacy_backdoor}
