"""Backend profiles: where the LLM is and how it takes structured output.

A run either points at running servers (base URLs) or names a backend that is started for the
run and stopped after it: `simulated` (test double), `embedded` (llama.cpp on this machine),
`vllm` (a GPU host).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Iterator

from flows.config import ConfigError, LLMConfig
from flows.llm import embedded, vllm
from flows.llm.client import LLMClient
from flows.llm.running import RunningServer

# How each backend takes a JSON schema (see the notes beside each constant).
DIALECTS = {"simulated": "json_schema", "embedded": embedded.RESPONSE_FORMAT_DIALECT,
            "vllm": vllm.RESPONSE_FORMAT_DIALECT}
DEFAULT_MODELS = {"embedded": "qwen2.5-coder-1.5b", "vllm": "Qwen/Qwen2-72B-Instruct"}
VLLM_TENSOR_PARALLEL = LLMConfig.model_fields["tensor_parallel_size"].default  # one default, the config's


def start_backend(name: str, model: str | None = None, host: str = "127.0.0.1", port: int = 0,
                  **options) -> RunningServer:
    if name == "simulated":
        from flows.llm import simulator

        config = simulator.SimulatorConfig(**options)
        if model:
            config.model = model
        return simulator.start(config, host=host, port=port)
    if name == "embedded":
        return embedded.start(model or DEFAULT_MODELS["embedded"], host=host, port=port, **options)
    if name == "vllm":
        return vllm.start(model or DEFAULT_MODELS["vllm"], host=host, port=port or 8000,
                          tensor_parallel_size=options.pop("tensor_parallel_size", VLLM_TENSOR_PARALLEL), **options)
    raise ConfigError(f"unknown backend {name!r} (simulated, embedded or vllm)")


@contextmanager
def llm_endpoints(cfg: LLMConfig) -> Iterator[tuple[list[str], str]]:
    """(base URLs, dialect) for a run; a backend started here is stopped on the way out."""
    if cfg.base_urls:
        yield list(cfg.base_urls), cfg.dialect or "json_schema"
        return
    if not cfg.backend:
        raise ConfigError("no LLM server: give --base-url URL or --backend simulated|embedded|vllm")
    options = {}
    if cfg.backend == "vllm":  # the config's engine settings; the key the client will send
        options = {"tensor_parallel_size": cfg.tensor_parallel_size, "api_key": resolve_api_key(cfg),
                   "max_num_seqs": cfg.server_seqs}
    host = cfg.host if cfg.backend == "vllm" else "127.0.0.1"
    with start_backend(cfg.backend, cfg.backend_model, host=host, **options) as server:
        yield [server.base_url], cfg.dialect or DIALECTS[cfg.backend]


def client_for(cfg: LLMConfig, base_urls: list[str], dialect: str, cache) -> LLMClient:
    """The LLM client for endpoints of `cfg` (from llm_endpoints), answering through `cache`."""
    return LLMClient(base_urls, cache, model=cfg.model, dialect=dialect, max_in_flight=cfg.in_flight_per_endpoint,
                     timeout_s=cfg.timeout_s, max_attempts=cfg.max_attempts, parse_attempts=cfg.parse_attempts,
                     backoff_s=cfg.backoff_s, api_key=resolve_api_key(cfg), top_p=cfg.top_p,
                     sampling_extra=cfg.sampling_extra)


def resolve_api_key(cfg: LLMConfig) -> str | None:
    """The key from the environment, else from a Prefect Secret block; never logged or stored."""
    key = os.environ.get(cfg.api_key_env)
    if key:
        return key
    if cfg.api_key_secret:
        from prefect.blocks.system import Secret

        return Secret.load(cfg.api_key_secret).get()
    return None
