# Two commands do all the set-up on a fresh machine:
#   make demo   - the main job: the synthetic end-to-end story (world, model, attack, defense, attack again)
#   make test   - the test suite (fast tests; `make test-all` includes the slow ones)
# Each creates its own virtual environment (.venv) on first use.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch lies on this machine's disk; pinning it in the same pip command keeps pip from
# resolving a multi-GB CUDA build. Override on a GPU machine: make TORCH_SPEC=torch test
TORCH_SPEC ?= torch==2.13.0
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test test-all lint format clean-cache

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)" -e ".[dev]"
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

clean-cache:
	rm -rf $${HF_PRIVACY_BACKDOOR_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/hf_privacy_backdoor}
