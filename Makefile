# nextocc — setup, tests and the main jobs. Every target works on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export LITELLM_LOCAL_MODEL_COST_MAP ?= True
export NEXTOCC_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: install test test-fast lint demo evaluate claims-laptop

# Creates the virtual environment; torch 2.13.0 first (here the machine's package index serves its CPU build; elsewhere
# set TORCH_INDEX to PyTorch's CPU wheel index to avoid CUDA wheels), then the package with its dev extra.
# pyproject.toml only asks for torch>=2.6,<3.
TORCH_INDEX ?=
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# The test command (README and CI): the default suite plus the few integration tests with the embedded model.
test: install
	$(PY) -m pytest -q

# Unit tests only (no embedded model).
test-fast: install
	$(PY) -m pytest -q -m "not integration"

lint: install
	$(VENV)/bin/ruff check .

# The main job on the embedded default model (see README).
demo: install
	PY=$(PY) bash scripts/demo_pipeline.sh

# The overnight laptop-scale claims run (README): compile, distill and claims per dataset, each step skipped when done.
# DATASETS=nlsy79 and STUDENTS=joint (space or comma lists) restrict it; CLAIMS=0 skips the claims step.
claims-laptop: install
	PY=$(PY) bash scripts/claims_laptop.sh
