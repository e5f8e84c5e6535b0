"""What the evaluation suites with a model under test and a judge share: the two clients (Trace,
CFBench, ComplexBench), and for the benchmarks read from a user's file (CFBench, ComplexBench)
the data file, the model's answers, failure counts and result files."""
from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from flows.config import ConfigError, EvalConfig
from flows.contracts import request_seed
from flows.evalset import spread_sample
from flows.llm.backends import client_for, llm_endpoints
from flows.llm.cache import RequestCache
from flows.llm.client import MODEL_FAILURES, SERVER_FAILURES, LLMCall, LLMClient, LLMFailure
from flows.prompts import Prompt
from flows.store import write_text_atomic



@dataclass
class SuiteResult:
    out_dir: Path
    metrics: dict


def data_file(cfg: EvalConfig, own: str | None, suite: str, source: str) -> Path:
    """The suite's data file: --data, else the suite's own config key; none is a ConfigError."""
    path = cfg.data or own
    if not path:
        raise ConfigError(f"the {suite} suite needs its data file: --data FILE or {suite}_data in the config "
                          f"({source}; not shipped with trace-build)")
    return Path(path)


def pick(rows: list, limit: int | None, sample: int | None) -> list:
    rows = rows[:limit] if limit else rows
    return spread_sample(rows, sample) if sample else rows


@asynccontextmanager
async def model_and_judge(cfg: EvalConfig, cache: RequestCache) -> AsyncIterator[tuple[LLMClient, LLMClient]]:
    """The model under test and the judge, each on its own server (and API key) or on one; a
    backend started here is stopped on the way out. Without a judge the model judges itself."""
    judge_cfg = cfg.judge or cfg.model
    with ExitStack() as servers:
        model_urls, model_dialect = servers.enter_context(llm_endpoints(cfg.model))
        model = client_for(cfg.model, model_urls, model_dialect, cache)
        if judge_cfg == cfg.model:
            judge = model
        elif not judge_cfg.base_urls and not judge_cfg.backend:  # another model on the same server
            judge = client_for(judge_cfg, model_urls, model_dialect, cache)
        else:
            judge_urls, judge_dialect = servers.enter_context(llm_endpoints(judge_cfg))
            judge = client_for(judge_cfg, judge_urls, judge_dialect, cache)
        try:
            await model.resolve_model()
            await judge.resolve_model()
            yield model, judge
        finally:
            await model.aclose()
            if judge is not model:
                await judge.aclose()


async def answer(model: LLMClient, cfg: EvalConfig, name: str, text: str, *purpose) -> dict:
    """The model's answer to one instruction (a single user message, as the benchmarks ask it):
    {"response", "failure", "cached", "model"}; a model failure has response "" (not followed),
    a server failure None (not scored)."""
    try:
        result = await model.chat(LLMCall(
            stage="answer", prompt=Prompt(name, "messages", ({"role": "user", "content": text},)),
            temperature=cfg.answer_temperature, max_tokens=cfg.answer_max_tokens,
            seed=request_seed(cfg.seed, *purpose)))
    except LLMFailure as exc:
        own = exc.reason in MODEL_FAILURES
        return {"response": "" if own else None, "failure": ("answer_failed:" if own else "answer_unavailable:") + exc.reason,
                "cached": False, "model": model.model}
    return {"response": result.content, "failure": None, "cached": result.cached, "model": result.model}


def is_server_failure(failure: str | None) -> bool:
    return bool(failure) and failure.split(":", 1)[1] in SERVER_FAILURES


def count_failures(lines: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in lines:
        if line["failure"]:
            counts[line["failure"]] = counts.get(line["failure"], 0) + 1
    return counts


def write_jsonl(path: Path, lines: list[dict]) -> None:
    write_text_atomic(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def share_rows(title: str, shares: dict) -> list[str]:
    """A markdown table of {key: {"n", "met", "rate"}} shares."""
    lines = [f"| {title} | n | met | rate |", "|---|---|---|---|"]
    return lines + [f"| {key} | {s['n']} | {s['met']} | {pct(s['rate'])} |" for key, s in shares.items()]
