"""The IFEval suite: the model under test answers IFEval's prompts (or a responses file is read),
every instruction is decided by rules, and the results are written in IFEval's layout.

    result = await evaluate_ifeval(cfg, progress)   # cfg: EvalConfig with suite="ifeval"

The out folder gets:
    responses.jsonl                  the answers, in IFEval's input_response_data layout
    eval_results_strict.jsonl        one line per prompt, IFEval's layout
    eval_results_loose.jsonl
    results.json                     strict and loose, prompt- and instruction-level, by category
                                     and instruction type; model, settings, failures
    results.md                       the same as tables
    llm-cache.sqlite                 every answer paid for: a rerun asks only for what is missing
No judge: IFEval is decided by rules. A prompt whose answer the server did not give (unreachable,
errors) is not scored and makes the result incomplete; one the model failed itself (too long,
empty) is scored as an empty response, which follows nothing.
"""
from __future__ import annotations

import json
import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from flows.aio import gather_or_cancel
from flows.config import EvalConfig
from flows.contracts import request_seed
from flows.evalset import count_rows, coverage, spread_sample
from flows.ifeval.instructions import kwargs_problem
from flows.jsonl import json_objects
from flows.ifeval.scoring import MODES, accuracy, metrics_markdown, result_line, verdicts
from flows.llm.backends import client_for, llm_endpoints
from flows.llm.cache import RequestCache
from flows.llm.client import MODEL_FAILURES, LLMCall, LLMClient, LLMFailure
from flows.progress import NoProgress, Progress
from flows.prompts import Prompt
from flows.errors import InputError
from flows.store import write_json_atomic, write_text_atomic

log = logging.getLogger("trace_build.ifeval")
IFEVAL_DATA = Path(__file__).resolve().parent.parent.parent / "data" / "ifeval" / "input_data.jsonl"
PHASES = ["answer"]


@dataclass
class IFEvalResult:
    out_dir: Path
    metrics: dict


def load_prompts(source: str | Path | None = None, limit: int | None = None, sample: int | None = None) -> list[dict]:
    """IFEval prompts (input_data layout: key, prompt, instruction_id_list, kwargs), checked so a
    bad file is one line naming the line and field; default: the official 541."""
    path = Path(source) if source else IFEVAL_DATA
    prompts = []
    for number, raw in json_objects(path):
        where = f"{path}: line {number}"
        for field, kind in (("key", int), ("prompt", str), ("instruction_id_list", list), ("kwargs", list)):
            if not isinstance(raw.get(field), kind):
                raise InputError(f"{where}: field {field!r} must be a {kind.__name__}")
        ids, kwargs = raw["instruction_id_list"], raw["kwargs"]
        if len(ids) != len(kwargs):
            raise InputError(f"{where}: field 'kwargs' must have one object per instruction ({len(ids)})")
        for instruction, args in zip(ids, kwargs):
            problem = kwargs_problem(instruction, args) if isinstance(args, dict) else "kwargs must be an object"
            if problem:
                raise InputError(f"{where}: instruction {instruction!r}: {problem}")
        prompts.append({"key": raw["key"], "prompt": raw["prompt"], "instruction_id_list": ids,
                        "kwargs": [{k: v for k, v in args.items() if v is not None} for args in kwargs]})
        if limit is not None and len(prompts) >= limit:
            break
    if not prompts:
        raise InputError(f"{path}: no prompts")
    return spread_sample(prompts, sample) if sample else prompts


def load_responses(source: str | Path, prompts: list[dict], known: set[str] | None = None) -> list[str]:
    """Each prompt's response from an input_response_data file (JSON lines with prompt and
    response), matched by prompt text as IFEval does. A line for a prompt outside `known` (default:
    `prompts`; all of the data's prompts when only some are scored) is an error: the wrong file."""
    path = Path(source)
    known = known if known is not None else {p["prompt"] for p in prompts}
    by_prompt: dict[str, str] = {}
    for number, raw in json_objects(path):
        for field in ("prompt", "response"):
            if not isinstance(raw.get(field), str):
                raise InputError(f"{path}: line {number}: field {field!r} must be a string")
        if raw["prompt"] not in known:
            raise InputError(f"{path}: line {number}: prompt is not one of the IFEval prompts "
                             f"({raw['prompt'][:60]!r})")
        by_prompt[raw["prompt"]] = raw["response"]
    missing = [p for p in prompts if p["prompt"] not in by_prompt]
    if missing:
        raise InputError(f"{path}: no response for {len(missing)} of the {len(prompts)} prompts "
                         f"(first: key {missing[0]['key']}, {missing[0]['prompt'][:60]!r})")
    return [by_prompt[p["prompt"]] for p in prompts]


async def _answer(prompt: dict, cfg: EvalConfig, model: LLMClient, progress: Progress) -> dict:
    """The model's response to one prompt: {"response", "failure", "cached", "model"}."""
    messages = ({"role": "user", "content": prompt["prompt"]},)  # IFEval prompts stand alone
    try:
        answer = await model.chat(LLMCall(
            stage="answer", prompt=Prompt("ifeval_answer", "messages", messages),
            temperature=cfg.answer_temperature, max_tokens=cfg.answer_max_tokens,
            seed=request_seed(cfg.seed, "ifeval", prompt["key"])))
    except LLMFailure as exc:
        failure = ("answer_failed:" if exc.reason in MODEL_FAILURES else "answer_unavailable:") + exc.reason
        return {"response": "" if exc.reason in MODEL_FAILURES else None, "failure": failure, "cached": False,
                "model": model.model}
    finally:
        progress.advance("answer")
    return {"response": answer.content, "failure": None, "cached": answer.cached, "model": answer.model}


async def _ask_model(cfg: EvalConfig, prompts: list[dict], out_dir: Path, progress: Progress) -> list[dict]:
    cache = RequestCache(out_dir / "llm-cache.sqlite")  # a rerun pays for nothing it has already asked
    try:
        with ExitStack() as servers:
            urls, dialect = servers.enter_context(llm_endpoints(cfg.model))
            model = client_for(cfg.model, urls, dialect, cache)
            try:
                await model.resolve_model()
                log.info("model under test %s, %d IFEval prompts", model.model, len(prompts))
                return await gather_or_cancel(*(_answer(p, cfg, model, progress) for p in prompts))
            finally:
                await model.aclose()
    finally:
        cache.close()


def _write_jsonl(path: Path, lines: list[dict]) -> None:
    # IFEval writes json.dumps' default (ASCII) lines; so do we, byte for byte comparable
    write_text_atomic(path, "".join(json.dumps(line) + "\n" for line in lines))


def score(prompts: list[dict], answers: list[dict]) -> tuple[dict, dict[str, list[dict]]]:
    """Strict and loose result lines of the answered prompts, and their accuracy."""
    answered = [(p, a["response"]) for p, a in zip(prompts, answers) if a["response"] is not None]
    lines = {mode: [result_line(p, r, verdicts(p, r, loose=mode == "loose")) for p, r in answered] for mode in MODES}
    return {mode: accuracy(lines[mode]) for mode in MODES}, lines


async def evaluate_ifeval(cfg: EvalConfig, progress: Progress = NoProgress()) -> IFEvalResult:
    started = time.time()
    prompts = load_prompts(cfg.data, cfg.limit, cfg.sample)
    out_dir = Path(cfg.out)
    if cfg.responses:
        known = {p["prompt"] for p in load_prompts(cfg.data)}  # a file for all of IFEval scores a --limit run
        responses = load_responses(cfg.responses, prompts, known)
        answers = [{"response": r, "failure": None, "cached": False, "model": "responses-file"} for r in responses]
        model_name = f"responses from {cfg.responses}"
    else:  # the folder is made by the first answer cached or the results: a run that paid nothing leaves none
        progress.start(dict.fromkeys(PHASES, len(prompts)))
        answers = await _ask_model(cfg, prompts, out_dir, progress)
        model_name = next((a["model"] for a in answers if a["model"]), cfg.model.model or "-")
    by_mode, lines = score(prompts, answers)
    failures: dict[str, int] = {}
    for a in answers:
        if a["failure"]:
            failures[a["failure"]] = failures.get(a["failure"], 0) + 1
    path = Path(cfg.data) if cfg.data else IFEVAL_DATA
    metrics = {
        "suite": "ifeval", "data": str(path), "model": model_name,
        "responses": cfg.responses, "prompts": len(prompts), "scored": len(lines["strict"]),
        **coverage(count_rows(path), len(prompts), cfg.limit, cfg.sample),
        "incomplete": sum(1 for a in answers if a["response"] is None), "failures": failures,
        "answers_from_cache": sum(1 for a in answers if a["cached"]),
        **by_mode,
        "seconds": round(time.time() - started, 2),
        "settings": {"answer_temperature": cfg.answer_temperature, "answer_max_tokens": cfg.answer_max_tokens,
                     "seed": cfg.seed},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out_dir / "responses.jsonl",
                 [{"prompt": p["prompt"], "response": a["response"]} for p, a in zip(prompts, answers)
                  if a["response"] is not None])
    for mode in MODES:
        _write_jsonl(out_dir / f"eval_results_{mode}.jsonl", lines[mode])
    write_json_atomic(out_dir / "results.json", metrics)
    write_text_atomic(out_dir / "results.md", metrics_markdown(metrics))
    return IFEvalResult(out_dir, metrics)
