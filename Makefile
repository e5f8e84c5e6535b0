# Two commands a user needs:
#   make demo   install everything, then a real trace build of demo seeds on the embedded model
#   make test   install what the tests need, then run every test tier that fits a laptop
#               (pytest, then the Prefect end-to-end check with a real server, worker and browser)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
SEEDS  ?= 6
MODEL  ?= qwen2.5-coder-1.5b
OUT    ?= runs/demo

.PHONY: demo test install install-test install-embedded benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'

install-embedded: install
	PATH="$(CURDIR)/$(BIN):$$PATH" PYTHON=$(BIN)/python scripts/install-embedded.sh $(MODEL)

demo: install-embedded
	$(BIN)/trace-build run --config configs/embedded.yaml --backend-model $(MODEL) \
	    --limit $(SEEDS) --out $(OUT) --show 2

test: install-test
	PATH="$(CURDIR)/$(BIN):$$PATH" PYTHON=$(BIN)/python scripts/install-embedded.sh qwen2.5-coder-0.5b
	$(BIN)/python -m pytest -q -p no:cacheprovider
	VENV=$(VENV) scripts/e2e-prefect.sh

benchmark: install
	$(BIN)/python benchmarks/throughput.py

clean:
	rm -rf runs/demo
