"""The vLLM backend: `vllm serve` on a GPU host (production: Qwen2-72B-Instruct, TP 4).

    server = start("Qwen/Qwen2-72B-Instruct", tensor_parallel_size=4)
    ...  # OpenAI client at server.base_url, model=server.model
    server.stop()
"""
from __future__ import annotations

import importlib.util
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

# vLLM's OpenAI server takes the OpenAI form:
#   {"type": "json_schema", "json_schema": {"name": ..., "schema": {...}}}
RESPONSE_FORMAT_DIALECT = "json_schema"

NOT_INSTALLED = "vllm is not installed: pip install -e '.[vllm]' on a GPU host"


def command(
    model: str,
    tensor_parallel_size: int = 1,
    host: str = "127.0.0.1",
    port: int = 8000,
    extra: Sequence[str] = (),
) -> list[str]:
    """The `vllm serve` command line; the served model name is `model` itself."""
    return [
        "vllm", "serve", model,
        "--host", host,
        "--port", str(port),
        "--tensor-parallel-size", str(tensor_parallel_size),
        "--enable-prefix-caching",
        "--served-model-name", model,
        *extra,
    ]


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
    extra: Sequence[str] = (),
    ready_timeout: float = 1800,
) -> RunningServer:
    """Spawn `vllm serve` (port 0: a free port) and return once /v1/models lists `model`.

    The ready timeout is long: a 72B model loads (and may download) for many minutes.
    """
    launcher = _launcher()
    if launcher is None:
        raise BackendError(NOT_INSTALLED)
    if port == 0:
        port = free_port(host)
    elif port_in_use(host, port):
        raise BackendError(f"port {port} on {host} is already in use")
    cmd = launcher + command(model, tensor_parallel_size, host, port, extra)[1:]

    return spawn_server(cmd, host=host, port=port, model=model, what=f"vllm ({model})",
                        log_name=f"vllm-{model}", ready_timeout=ready_timeout, grace=30)
