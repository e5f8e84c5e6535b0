"""The vLLM backend: `vllm serve` on a GPU host (production: Qwen2-72B-Instruct, TP 4), and
what that pinned vLLM accepts.

    server = start("Qwen/Qwen2-72B-Instruct", tensor_parallel_size=4)
    ...  # OpenAI client at server.base_url, model=server.model
    server.stop()

The facts here are checked against vLLM's own code by tests/test_vllm_contract.py (request
models, structured-output compilers, argument parser); rerun it when moving to another release.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

from flows.llm.running import (
    BackendError,
    RunningServer,
    free_port,
    port_in_use,
    spawn_server,
)

# The release trace-build is checked against (pyproject.toml's vllm extra pins the same).
VERSION = "0.34.0"

# vLLM's OpenAI server takes the OpenAI form:
#   {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}
RESPONSE_FORMAT_DIALECT = "json_schema"

# JSON-schema keywords that both of vLLM's structured-output backends refuse: xgrammar (the
# default) does not implement them and llguidance (its fallback) answers 'Grammar error:
# Unimplemented keys'. A schema with one gets HTTP 400. What they said (unique items, an item
# that must be present) is enforced by the code that reads the answer.
REFUSED_SCHEMA_KEYWORDS = ("uniqueItems", "contains", "minContains", "maxContains")
# Keywords whose values map names to subschemas: their keys are names, not keywords.
_NAMED_SUBSCHEMAS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")

# vLLM reads its API key from this variable (or --api-key); /health needs none.
API_KEY_ENV = "VLLM_API_KEY"

NOT_INSTALLED = f"vllm is not installed: pip install -e '.[vllm]' (vLLM {VERSION}) on a GPU host"


def refused_keywords(schema) -> list[str]:
    """The keywords of REFUSED_SCHEMA_KEYWORDS used anywhere in a JSON schema, sorted."""
    found: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for key, value in node.items():
                if key in REFUSED_SCHEMA_KEYWORDS:
                    found.add(key)
                if key in _NAMED_SUBSCHEMAS and isinstance(value, dict):
                    for sub in value.values():
                        walk(sub)
                elif key not in ("enum", "const", "default", "examples", "required"):
                    walk(value)

    walk(schema)
    return sorted(found)


def grammar_error(keywords: Sequence[str]) -> str:
    """vLLM's message for a schema with refused keywords (llguidance's wording)."""
    return f"Grammar error: Unimplemented keys: {json.dumps(list(keywords))}"


def command(
    model: str,
    tensor_parallel_size: int = 1,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_num_seqs: int | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The `vllm serve` command line; the served model name is `model` itself. The API key is
    not on it (a command line is visible to every user of the host): start() passes it in the
    environment."""
    cmd = [
        "vllm", "serve", model,
        "--host", host,
        "--port", str(port),
        "--tensor-parallel-size", str(tensor_parallel_size),
        "--enable-prefix-caching",
        "--served-model-name", model,
        # vLLM's own sampling defaults, not the model's generation_config.json (for Qwen2: a
        # repetition penalty, top-p and top-k): what a request does not say never changes a build.
        "--generation-config", "vllm",
    ]
    if max_num_seqs:
        cmd += ["--max-num-seqs", str(max_num_seqs)]
    return cmd + list(extra)


def _launcher() -> list[str] | None:
    """How to run the vllm CLI here: the `vllm` script, or this interpreter's vllm package."""
    exe = shutil.which("vllm")
    if exe:
        return [exe]
    sibling = Path(sys.executable).parent / "vllm"  # venv not activated
    if sibling.is_file() and os.access(sibling, os.X_OK):
        return [str(sibling)]
    try:
        found = importlib.util.find_spec("vllm")
    except (ImportError, ValueError):
        found = None
    if found is not None:
        return [sys.executable, "-c", "from vllm.entrypoints.cli.main import main; main()"]
    return None


def start(
    model: str,
    tensor_parallel_size: int = 1,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_num_seqs: int | None = None,
    api_key: str | None = None,
    extra: Sequence[str] = (),
    ready_timeout: float = 1800,
) -> RunningServer:
    """Spawn `vllm serve` (port 0: a free port) and return once /health answers and /v1/models
    lists `model`. With an API key, vLLM gets it in its environment and the check sends it.

    The ready timeout is long: a 72B model loads (and may download) for many minutes.
    """
    launcher = _launcher()
    if launcher is None:
        raise BackendError(NOT_INSTALLED)
    if port == 0:
        port = free_port(host)
    elif port_in_use(host, port):
        raise BackendError(f"port {port} on {host} is already in use")
    cmd = launcher + command(model, tensor_parallel_size, host, port, max_num_seqs, extra)[1:]
    env = dict(os.environ)
    if api_key:
        env[API_KEY_ENV] = api_key
    else:
        env.pop(API_KEY_ENV, None)  # a key the client does not know would lock it out
    return spawn_server(cmd, host=host, port=port, model=model, what=f"vllm ({model})",
                        log_name=f"vllm-{model}", ready_timeout=ready_timeout, grace=30, env=env,
                        api_key=api_key, health="/health")
