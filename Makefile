# Two commands a user needs:
#   make demo   install everything, then a real trace build of demo seeds on the embedded model
#   make test   install what the tests need, then run every test tier that fits a laptop
#               (pytest, then the Prefect end-to-end check with a real server, worker and browser)
#   make test-fast  the edit-test loop: every test but the slow tier (see the README's Tests)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
SEEDS  ?= 6
MODEL  ?= qwen2.5-coder-1.5b
OUT    ?= runs/demo

.PHONY: demo test test-fast install install-test install-embedded install-vllm-contract benchmark benchmark-train clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installs are stamped: the package is editable, so only a change to pyproject.toml (or the
# Makefile) asks pip again; `make demo` and `make test` after that start at once.
install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

# The trainer's tests run on the CPU: torch is pinned first so that pip keeps that build (here it
# is a CPU wheel on local disk; override TORCH for another, e.g. TORCH='torch==2.13.0+cpu').
TORCH  ?= torch==2.13.0

install-test: $(VENV)/.installed-test
$(VENV)/.installed-test: pyproject.toml Makefile | $(BIN)/python
	$(BIN)/pip install --quiet '$(TORCH)'
	$(BIN)/pip install --quiet -e '.[test,train]'
	touch $@ $(VENV)/.installed

install-embedded: install
	PATH="$(CURDIR)/$(BIN):$$PATH" PYTHON=$(BIN)/python scripts/install-embedded.sh $(MODEL)

demo: install-embedded
	$(BIN)/trace-build run --config configs/embedded.yaml --backend-model $(MODEL) \
	    --limit $(SEEDS) --out $(OUT) --show 2

# vLLM's own request models, grammar compilers and argument parser for tests/test_vllm_contract.py,
# in a venv of their own (their pins are not the trainer's); a rerun with nothing changed is a no-op.
install-vllm-contract:
	PYTHON=$(PYTHON) TORCH='$(TORCH)' scripts/install-vllm-contract.sh .venv-vllm

test: install-test install-vllm-contract
	PATH="$(CURDIR)/$(BIN):$$PATH" PYTHON=$(BIN)/python scripts/install-embedded.sh qwen2.5-coder-0.5b
	VLLM_CONTRACT_VENV=$(CURDIR)/.venv-vllm $(BIN)/python -m pytest -q -p no:cacheprovider
	VENV=$(VENV) scripts/e2e-prefect.sh

# Every test but those marked slow or embedded: no llama.cpp model, no vLLM environment, no Prefect
# server, PostgreSQL or browser, no subprocess training runs. `make test` (and CI) runs them all.
test-fast: install-test
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow and not embedded"

benchmark: install
	$(BIN)/python benchmarks/throughput.py

# On a GPU host with the train extra: time and memory per step of SFT, DPO, IOPO (paper: 1/2/4x memory).
benchmark-train:
	$(BIN)/python benchmarks/train_cost.py

clean:
	rm -rf runs/demo
