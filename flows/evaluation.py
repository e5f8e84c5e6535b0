"""The Trace evaluation (paper-notes.md section 6), as plain async Python.

For every eval row: the model under test answers the row's messages (temperature 0.1); the judge
scores every constraint 0-10 with an explanation and gives an overall score (temperature 0);
constraints a rule can decide get a check (extracted once by the judge, cached) whose verdict is
recorded beside the score. Then:
    IF-S / IF-M      share of rows with one / more than one constraint that are followed,
    strict           every constraint scored 10 by the judge (the paper's reading),
    with_rules       every constraint passed: score 10 and, where it has one, its rule check
                     (under the rule policy),
    overall          the overall score is 10,
with breakdowns by dimension (share of constraints passed), constraint count and category, and
the agreement of rules and judge. A row whose answer failed by the model's own doing (too long,
empty) counts as not followed, in every table. A row left without an answer by the server
(unreachable, errors) or without scores by the judge is not scored: it is listed under
`failures` and `unscored`, in every table's own column, and a rerun asks again (everything else
comes from the request cache).

    result = await evaluate(cfg, progress)   # -> <out>/rows.parquet, <out>/results.json
"""
from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from flows.aio import gather_or_cancel
from flows.checks import DIMENSION_KINDS
from flows.config import EvalConfig
from flows.contracts import EVAL_ROW, request_seed
from flows.judged_suite import model_and_judge
from flows.llm.cache import RequestCache
from flows.llm.client import MODEL_FAILURES, SERVER_FAILURES, LLMCall, LLMClient, LLMFailure
from flows.progress import NoProgress, Progress
from flows.report import agreement_markdown
from flows.prompts import Prompt, PromptLibrary, default_library
from flows.rules import (accept_checks, agreement, checkable_constraints, checkable_ids, checks_schema,
                         needs_checks, passes)
from flows.stages.respond import grade_schema, scores_from
from flows.store import to_table, write_json_atomic, write_table_atomic
from flows.suites import SUITES, tally_line
from flows.taxonomy import Taxonomy, load_taxonomy
from flows.evalset import count_rows, coverage, load_eval_rows, resolve_eval_path, spread_sample

log = logging.getLogger("trace_build.eval")
PHASES = ["answer", "judge"]


@dataclass
class EvalResult:
    out_dir: Path
    metrics: dict
    rows: list[dict]


def followed(scores: list[dict], overall: int, policy: str) -> dict:
    """The three readings of one scored row (the EVAL_ROW followed_* columns)."""
    return {"followed_strict": all(s["score"] == 10 for s in scores),
            "followed_with_rules": all(passes(s, policy) for s in scores),
            "followed_overall": overall == 10}


NOT_FOLLOWED = {"followed_strict": False, "followed_with_rules": False, "followed_overall": False}


async def evaluate_row(row: dict, cfg: EvalConfig, model: LLMClient, judge: LLMClient, prompts: PromptLibrary,
                       taxonomy: Taxonomy, progress: Progress, checks_cache: RequestCache | None = None) -> dict:
    out = {"id": row["id"], "category": row["category"], "n_constraints": len(row["constraints"]),
           "prompt": row["prompt"], "answer": None, "model": model.model, "judge_model": judge.model,
           "constraints": row["constraints"], "scores": [], "overall": None, "overall_explanation": None,
           "followed_strict": None, "followed_with_rules": None, "followed_overall": None, "failure": None,
           "checks_failure": None, "answer_cached": False}
    messages = ({"role": "system", "content": row["system"]}, {"role": "user", "content": row["prompt"]})
    try:
        answer = await model.chat(LLMCall(
            stage="answer", prompt=Prompt("eval_answer", "messages", messages), temperature=cfg.answer_temperature,
            max_tokens=cfg.answer_max_tokens, seed=request_seed(cfg.seed, row["id"], "answer")))
    except LLMFailure as exc:
        progress.advance("answer")
        progress.advance("judge")
        if exc.reason in MODEL_FAILURES:  # the model could not answer within its limits: not followed
            return out | {"failure": f"answer_failed:{exc.reason}", **NOT_FOLLOWED}
        return out | {"failure": f"answer_unavailable:{exc.reason}"}
    response = answer.content.strip()
    out |= {"answer": response, "model": answer.model, "answer_cached": answer.cached}
    progress.advance("answer")

    constraints = row["constraints"]
    if cfg.rule_checks and needs_checks(constraints, taxonomy):
        asked = checkable_constraints(constraints, taxonomy)
        try:
            result = await judge.chat(LLMCall(
                stage="checks", prompt=prompts.render("extract_checks", constraints=asked,
                                                      checkable=checkable_ids(taxonomy), kinds=DIMENSION_KINDS),
                schema=checks_schema(len(asked)), temperature=0.0, max_tokens=cfg.checks_max_tokens,
                seed=request_seed(cfg.seed, row["id"], "checks")), cache=checks_cache)
            checks = accept_checks(constraints, result.data["checks"], taxonomy)
            constraints = [{**c, "check": spec} for c, spec in zip(constraints, checks)]
        except LLMFailure as exc:  # the judge still scores; only the rule column stays empty
            out["checks_failure"] = exc.reason
    try:
        graded = await judge.chat(LLMCall(
            stage="judge", prompt=prompts.render("grade", description=row["description"], constraints=constraints,
                                                 input=row["input"], response=response),
            schema=grade_schema(len(constraints)), temperature=cfg.judge_temperature,
            max_tokens=cfg.judge_max_tokens, seed=request_seed(cfg.seed, row["id"], "judge")))
    except LLMFailure as exc:
        progress.advance("judge")
        return out | {"constraints": constraints, "failure": f"judge_failed:{exc.reason}"}
    progress.advance("judge")
    scores = scores_from(graded.data, constraints, response)
    overall = int(graded.data["overall"])
    return out | {
        "constraints": constraints, "scores": scores, "overall": overall,
        "overall_explanation": graded.data["overall_explanation"], "judge_model": graded.model,
        **followed(scores, overall, cfg.rule_policy),
    }


def _share(rows: list[dict], key: str) -> dict:
    followed = sum(1 for r in rows if r[key])
    return {"n": len(rows), "followed": followed, "rate": round(followed / len(rows), 4) if rows else None}


def is_scored(row: dict) -> bool:
    return row["failure"] is None or row["failure"].startswith("answer_failed")


def _readings(rows: list[dict]) -> dict:
    """The three readings over the scored rows of a group, and how its rows that failed stand:
    answers the model failed (among the scored, as not followed) and unscored (left out)."""
    scored = [r for r in rows if is_scored(r)]
    return {"strict": _share(scored, "followed_strict"), "with_rules": _share(scored, "followed_with_rules"),
            "overall": _share(scored, "followed_overall"), "answer_failed": sum(1 for r in scored if r["failure"]),
            "unscored": len(rows) - len(scored)}


def _by_dimension(rows: list[dict], policy: str) -> dict:
    """Per dimension, the constraints of scored rows (those of an answer the model failed count,
    as not passed: the row has no scores) and of unscored rows (not counted)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        if r["failure"]:  # no scores: an answer the model failed (counted, not passed), or unscored
            kind = "answer_failed" if is_scored(r) else "unscored"
            for constraint in r["constraints"]:
                counts[constraint["dimension"]][kind] += 1
            continue
        for score, constraint in zip(r["scores"], r["constraints"]):
            k = counts[constraint["dimension"]]
            k["scored"] += 1
            k["passed"] += int(score["score"] == 10)
            k["passed_with_rules"] += int(passes(score, policy))
    return {d: _dimension_share(k) for d, k in sorted(counts.items())}


def _dimension_share(k: Counter) -> dict:
    n = k["scored"] + k["answer_failed"]
    return {"n": n, "passed": k["passed"], "rate": round(k["passed"] / n, 4) if n else None,
            "passed_with_rules": k["passed_with_rules"],
            "rate_with_rules": round(k["passed_with_rules"] / n, 4) if n else None,
            "answer_failed": k["answer_failed"], "unscored": k["unscored"]}


def _groups(rows: list[dict], key) -> dict:
    groups: dict = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r)
    return groups


def compute_metrics(rows: list[dict], policy: str = "both") -> dict:
    """IF-S, IF-M and the breakdowns over evaluated rows (EVAL_ROW dicts), read from their scores
    under `policy` (so one set of rows can be summarised under each policy). Every breakdown
    holds every row: scored (an answer the model failed, as not followed) or unscored."""
    rows = [{**r, **(NOT_FOLLOWED if r["failure"] else followed(r["scores"], r["overall"], policy))}
            if is_scored(r) else r for r in rows]
    scored = [r for r in rows if is_scored(r)]
    unscored = [r for r in rows if not is_scored(r)]
    return {
        "rows": len(rows), "scored": len(scored), "unscored": len(unscored),
        "incomplete": sum(1 for r in unscored if r["failure"].split(":")[1] in SERVER_FAILURES),
        "failures": dict(Counter(r["failure"] for r in rows if r["failure"])),
        "checks_failures": sum(1 for r in rows if r["checks_failure"]),
        "rule_policy": policy,
        "if_s": _readings([r for r in rows if r["n_constraints"] == 1]),
        "if_m": _readings([r for r in rows if r["n_constraints"] > 1]),
        "all": _readings(rows),
        "by_dimension": _by_dimension(rows, policy),
        "answers_from_cache": sum(1 for r in rows if r.get("answer_cached")),
        "by_constraint_count": {str(k): _readings(v) for k, v in
                                sorted(_groups(rows, lambda r: r["n_constraints"]).items())},
        "by_category": {k: _readings(v) for k, v in sorted(_groups(rows, lambda r: r["category"] or "-").items())},
        "rule_agreement": agreement([(r["scores"], r["constraints"]) for r in scored]),
    }


def _rate(share: dict) -> str:
    return "-" if share["rate"] is None else f"{100 * share['rate']:.1f} ({share['followed']}/{share['n']})"


def _pct(rate: float | None) -> str:
    return "-" if rate is None else f"{100 * rate:.1f}"


def _readings_row(label: str, m: dict) -> str:
    return (f"| {label} | {_rate(m['strict'])} | {_rate(m['with_rules'])} | {_rate(m['overall'])} "
            f"| {m['answer_failed']} | {m['unscored']} |")


def results_markdown(metrics: dict) -> str:
    return metrics_markdown(metrics, metrics["model"], metrics["judge"])


def summary_line(metrics: dict) -> str:
    """The shared tally (scored + unscored = rows; the model's own failures apart), then the
    rule checks' own failures (the judge still scored those rows) and the policy."""
    line = tally_line(SUITES["trace"], metrics)
    if metrics["checks_failures"]:
        line += f"; rule checks not extracted for {metrics['checks_failures']} rows (judged without them)"
    return line + f"; rule policy: {metrics['rule_policy']}."


# the columns of a row-level table after its readings: how its failed rows stand
FAILED_COLUMNS = "| answer failed (not followed) | unscored (not counted) |"


def metrics_markdown(metrics: dict, model: str, judge: str) -> str:
    """The result tables, for the Prefect artifact and the terminal."""
    head = "| | strict (every constraint 10) | with rule checks | overall == 10 " + FAILED_COLUMNS
    rule = "|---" * 6 + "|"
    lines = [f"# Trace evaluation: `{model}` judged by `{judge}`", "", summary_line(metrics), "", head, rule]
    lines += [_readings_row(name, metrics[key]) for name, key in (("IF-S", "if_s"), ("IF-M", "if_m"), ("all", "all"))]
    lines += ["", "## By dimension (constraints scored 10; with rule checks)", "",
              "| dimension | constraints | scored 10 | rate | rate with rules | in failed answers (not followed) "
              "| in unscored rows (not counted) |", "|---" * 7 + "|"]
    lines += [f"| {d} | {m['n']} | {m['passed']} | {_pct(m['rate'])} | {_pct(m['rate_with_rules'])} "
              f"| {m['answer_failed']} | {m['unscored']} |" for d, m in metrics["by_dimension"].items()]
    lines += ["", "## By constraint count", "", "| constraints " + head[2:], rule]
    lines += [_readings_row(k, m) for k, m in metrics["by_constraint_count"].items()]
    lines += ["", "## By category", "", "| category " + head[2:], rule]
    lines += [_readings_row(k, m) for k, m in metrics["by_category"].items()]
    return "\n".join(lines) + "\n" + agreement_markdown(metrics["rule_agreement"])


async def evaluate(cfg: EvalConfig, progress: Progress = NoProgress()) -> EvalResult:
    started = time.time()
    taxonomy = load_taxonomy()
    prompts = default_library()
    rows = load_eval_rows(cfg.data, taxonomy, cfg.limit)
    if cfg.sample:
        rows = spread_sample(rows, cfg.sample)
    out_dir = Path(cfg.out)  # made by the first answer cached or the results: a run that paid nothing leaves none
    progress.start(dict.fromkeys(PHASES, len(rows)))
    cache = RequestCache(out_dir / "llm-cache.sqlite")  # a rerun pays for nothing it has already asked
    checks_cache = RequestCache(Path(cfg.checks_cache) if cfg.checks_cache else out_dir.parent / "eval-checks.sqlite")
    try:
        # without a judge of its own, the model under test judges itself (reports say so)
        async with model_and_judge(cfg, cache) as (model, judge):
            log.info("model under test %s, judge %s, %d rows", model.model, judge.model, len(rows))
            results = await gather_or_cancel(*(
                evaluate_row(r, cfg, model, judge, prompts, taxonomy, progress, checks_cache) for r in rows))
    finally:
        cache.close()
        checks_cache.close()
    metrics = compute_metrics(results, cfg.rule_policy)
    path = resolve_eval_path(cfg.data)
    metrics |= coverage(count_rows(path), len(rows), cfg.limit, cfg.sample)
    metrics |= {"data": str(path), "model": results[0]["model"],
                "judge": results[0]["judge_model"], "seconds": round(time.time() - started, 2),
                "settings": {"answer_temperature": cfg.answer_temperature, "judge_temperature": cfg.judge_temperature,
                             "seed": cfg.seed, "rule_checks": cfg.rule_checks},
                "templates": {name: prompts.version(name) for name in ("grade", "extract_checks")}}
    write_table_atomic(out_dir / "rows.parquet", to_table(results, EVAL_ROW, {"model": metrics["model"]}))
    write_json_atomic(out_dir / "results.json", metrics)
    return EvalResult(out_dir, metrics, results)
