"""What the evaluation suites with a model under test and a judge share: the two clients (Trace,
CFBench, ComplexBench), and for the benchmarks read from a user's file (CFBench, ComplexBench)
one runner (`run_benchmark`: every row answered and judged, the metrics, the result files),
the data file, the model's answers, the check of recorded verdicts, failure counts."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from flows.config import ConfigError, EvalConfig
from flows.contracts import request_seed
from flows.errors import InputError
from flows.evalset import coverage, spread_sample
from flows.llm.backends import client_for, llm_endpoints
from flows.llm.cache import RequestCache
from flows.llm.client import MODEL_FAILURES, SERVER_FAILURES, LLMCall, LLMClient, LLMFailure
from flows.prompts import Prompt
from flows.store import write_text_atomic

log = logging.getLogger("trace_build.judged_suite")


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


def checked_verdicts(verdicts, n: int, where: str, items: str, item: str, values: str) -> list[int] | None:
    """Recorded verdicts of one row as 0/1 ints, or None when any is missing (the row is not
    scored); verdicts that cannot be this row's are an InputError naming `where` (the row), what
    is judged (`items`, one `item`: criteria, criterion) and the `values` expected."""
    if verdicts is None:
        return None
    if not isinstance(verdicts, Sequence) or isinstance(verdicts, str):
        raise InputError(f"verdicts for {where}: expected a list, not {type(verdicts).__name__}")
    if any(v is None for v in verdicts):
        return None
    if len(verdicts) != n:
        raise InputError(f"verdicts for {where}: {len(verdicts)} for {n} {items}")
    for i, v in enumerate(verdicts):
        if v not in (0, 1):  # True/False, 0/1 and 0.0/1.0 pass; "1" does not
            raise InputError(f"verdicts for {where}: {item} {i} must be {values}, not {v!r}")
    return [int(v) for v in verdicts]


@dataclass(frozen=True)
class Benchmark:
    """What run_benchmark needs to know of a benchmark read from a user's file."""

    name: str  # the suite: cfbench, complexbench
    templates: tuple[str, ...]  # its prompt templates (checked before any request)
    row_id: str  # the key of a line's row id: idx, main_id
    evaluate_row: Callable  # async (row, cfg, model, judge, prompts, progress) -> its judgments.jsonl line
    aggregate: Callable[[list, dict], dict]  # (rows, {row id: verdicts}) -> metrics
    markdown: Callable[[dict], str]
    totals: Callable[[list], dict]  # rows -> the progress phases' totals
    response: Callable[[object, dict], dict]  # (row, line) -> its responses.jsonl line
    private: tuple[str, ...] = ("response", "answer_cached")  # keys of a line not in judgments.jsonl
    extra: Callable[[EvalConfig, list], dict] = lambda cfg, rows: {}  # more metrics


async def run_benchmark(bench: Benchmark, cfg: EvalConfig, path: Path, every: list, progress) -> SuiteResult:
    """The rows of `every` (the file's) that --limit / --sample pick, answered by the model and
    judged, in <out>: responses.jsonl, judgments.jsonl, results.json and results.md, and the
    request cache, so a rerun pays for nothing it has asked."""
    from flows.aio import gather_or_cancel
    from flows.prompts import default_library
    from flows.store import write_json_atomic

    started = time.time()
    rows = pick(every, cfg.limit, cfg.sample)
    prompts = default_library()
    templates = {name: prompts.version(name) for name in bench.templates}  # a broken template fails now
    out_dir = Path(cfg.out)  # made by the first answer cached or the results: a run that paid nothing leaves none
    progress.start(bench.totals(rows))
    cache = RequestCache(out_dir / "llm-cache.sqlite")
    try:
        async with model_and_judge(cfg, cache) as (model, judge):
            log.info("model under test %s, judge %s, %d %s rows", model.model, judge.model, len(rows), bench.name)
            lines = await gather_or_cancel(*(bench.evaluate_row(r, cfg, model, judge, prompts, progress)
                                             for r in rows))
    finally:
        cache.close()
    metrics = {
        "suite": bench.name, "data": str(path), "model": lines[0]["model"], "judge": lines[0]["judge_model"],
        **bench.aggregate(rows, {line[bench.row_id]: line["verdicts"] for line in lines}),
        "incomplete": sum(1 for line in lines if line["verdicts"] is None and is_server_failure(line["failure"])),
        "failures": count_failures(lines), "answers_from_cache": sum(1 for line in lines if line["answer_cached"]),
        **coverage(len(every), len(rows), cfg.limit, cfg.sample), **bench.extra(cfg, rows),
        "seconds": round(time.time() - started, 2),
        "settings": {"answer_temperature": cfg.answer_temperature, "answer_max_tokens": cfg.answer_max_tokens,
                     "judge_temperature": cfg.judge_temperature, "judge_max_tokens": cfg.judge_max_tokens,
                     "seed": cfg.seed},
        "templates": templates,
    }
    write_jsonl(out_dir / "responses.jsonl", [bench.response(row, line) for row, line in zip(rows, lines)
                                              if line["response"] is not None])
    write_jsonl(out_dir / "judgments.jsonl", [{k: v for k, v in line.items() if k not in bench.private}
                                              for line in lines])
    write_json_atomic(out_dir / "results.json", metrics)
    write_text_atomic(out_dir / "results.md", bench.markdown(metrics))
    return SuiteResult(out_dir, metrics)
