#!/usr/bin/env bash
# The environment of the vLLM contract test: the pinned vLLM release, installed with --no-deps
# beside the CPU build of torch (its CUDA kernels are never loaded: only its request models,
# structured-output compilers and argument parser run), with the packages those import.
# Usage: scripts/install-vllm-contract.sh [VENV]   (default .venv-vllm; reruns are no-ops)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-vllm}
VLLM_VERSION=0.34.0  # the same as flows/llm/vllm.py's VERSION and pyproject's vllm extra
TORCH=${TORCH:-torch==2.13.0}
PYTHON=${PYTHON:-python3}
stamp="$VENV/.installed-vllm-$VLLM_VERSION-$(sha256sum requirements/vllm-contract.txt | cut -c1-12)"
if [ -f "$stamp" ]; then exit 0; fi
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "$TORCH"
"$VENV/bin/pip" install --quiet --no-deps "vllm==$VLLM_VERSION" -r requirements/vllm-contract.txt
"$VENV/bin/python" -c "import vllm.entrypoints.openai.chat_completion.protocol, vllm.v1.structured_output.backend_guidance" 2>/dev/null
touch "$stamp"
echo "vLLM $VLLM_VERSION contract environment ready in $VENV"
