"""`--suite all`: every evaluation suite whose data is present, on one model under test, and the
IOPO paper's Table 3 from their results.

    result = await evaluate_all(cfg, progress)   # cfg: EvalConfig with suite="all"

Trace and IFEval always run (their official sets ship with trace-build); CFBench and ComplexBench
run when their files are given (cfbench_data / complexbench_data in the config, or
--cfbench-data / --complexbench-data). Each suite runs as it does on its own, with its own
defaults (answer temperature, request cache), into <out>/<suite>/; a backend named for the model
or the judge is started once for all of them. The table has the paper's columns:

    Trace IF-S / IF-M     the strict reading (every constraint scored 10), as the paper reports
    IFEval S-Acc / L-Acc  prompt-level accuracy, strict and loose
    CFBench CSR/ISR/PSR   the full set (easy and hard)
    ComplexBench          DRFR (dependencies applied), in the language of --lang

with the paper's Qwen2-7B IOPO row beside it for reference. A column computed from part of its
benchmark (rows left out by --limit / --sample, or left unscored) is marked `*`, and a note says
from how many rows and why. <out>/results.md and results.json hold the table; each suite's
folder holds its own results.
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from flows.config import EvalConfig
from flows.llm.backends import llm_endpoints
from flows.progress import NoProgress, Progress
from flows.store import write_json_atomic, write_text_atomic
from flows.suites import SUITES, unscored, unscored_reasons, why_text

PAPER_ROW = "Qwen2-7B IOPO (the IOPO paper)"
PAPER_QWEN2_7B_IOPO = {"trace_if_s": 82.0, "trace_if_m": 68.9, "ifeval_s_acc": 59.9, "ifeval_l_acc": 63.6,
                       "cfbench_csr": 80.7, "cfbench_isr": 47.0, "cfbench_psr": 58.7, "complexbench": 72.6}


def columns() -> list[tuple[str, str, str]]:
    """(suite, key, header) of every column, in the registry's order (the paper's)."""
    return [(name, key, header) for name, suite in SUITES.items() for key, header in suite.columns]


@dataclass
class AllResult:
    out_dir: Path
    metrics: dict  # the table and a summary per suite
    suites: dict  # suite -> its own result (out_dir, metrics)


def suites_to_run(cfg: EvalConfig) -> list[str]:
    """Every suite that needs no file, and those whose file is given."""
    return [name for name, suite in SUITES.items() if suite.all_data is None or getattr(cfg, suite.all_data)]


def suite_config(cfg: EvalConfig, suite: str, model=None, judge=None) -> EvalConfig:
    """The config of one suite of an `all` run: the same servers and settings, the suite's own
    data, folder and defaults; a suite decided by rules gets no judge."""
    entry = SUITES[suite]
    raw = cfg.model_dump()
    raw |= {"suite": suite, "out": str(Path(cfg.out) / suite),
            "data": getattr(cfg, entry.all_data) if entry.all_data else None}
    if model is not None:
        raw["model"] = model.model_dump()
    if judge is not None:
        raw["judge"] = judge.model_dump()
    if not entry.judged:
        raw["judge"] = None
    return EvalConfig.model_validate(raw)


def check_data(cfg: EvalConfig) -> None:
    """Read the benchmark files before anything is paid for: a bad file stops the run at once."""
    if cfg.cfbench_data:
        from flows.cfbench.data import load_rows

        load_rows(cfg.cfbench_data)
    if cfg.complexbench_data:
        from flows.complexbench.data import load_rows
        from flows.complexbench.suite import check_language

        path = Path(cfg.complexbench_data)
        check_language(path, load_rows(path), cfg.lang)


def table_values(suites: dict) -> dict:
    """The Table 3 columns (percent, one decimal; None where the suite did not run) from the
    suites' metrics."""
    values = {key: None for _, key, _ in columns()}
    for name, metrics in suites.items():
        values |= SUITES[name].table(metrics)
    return values


def _cell(value: float | None, partial: bool) -> str:
    return "-" if value is None else f"{value:.1f}" + ("*" if partial else "")


def _partial(info: dict) -> bool:
    """Whether a suite's numbers come from part of its benchmark: rows left out by --limit /
    --sample, or left unscored. (Results of an older run, without in_data: unscored only.)"""
    return info["scored"] < info.get("in_data", info["scored"] + info["unscored"])


def _partial_columns(metrics: dict) -> set[str]:
    """The columns of suites whose numbers come from part of their benchmark."""
    return {key for suite, key, _ in columns() if suite in metrics["suites"] and _partial(metrics["suites"][suite])}


def _rows_markdown(rows: list[tuple[str, dict]]) -> list[str]:
    """The table: one row per (label, metrics), then the paper's."""
    header = [name for _, _, name in columns()]
    lines = ["| model | " + " | ".join(header) + " |", "|---" * (len(header) + 1) + "|"]
    for label, metrics in rows:
        partial = _partial_columns(metrics)
        lines.append(f"| {label} | " + " | ".join(_cell(metrics["table"].get(key), key in partial)
                                                 for _, key, _ in columns()) + " |")
    paper = rows[0][1]["paper"]
    lines += [f"| {PAPER_ROW} | " + " | ".join(_cell(paper.get(key), False) for _, key, _ in columns()) + " |", ""]
    return lines


def _partial_note(suite: str, info: dict) -> str:
    """Why a suite's columns are marked: "Trace: from 3 of 1,042 rows (--limit 3)"."""
    entry = SUITES[suite]
    evaluated = info["scored"] + info["unscored"]
    why = [info["selected_by"]] if info.get("selected_by") else []
    if info["unscored"]:
        reasons = why_text(unscored_reasons(info.get("failures", {})))
        why.append(f"{info['unscored']} unscored" + (f": {reasons}" if reasons else ""))
    return (f"- \\* {entry.title}: from {info['scored']:,} of {info.get('in_data', evaluated):,} {entry.unit}"
            + (f" ({'; '.join(why)})" if why else "") + ".")


def _notes(metrics: dict) -> list[str]:
    """What each column is read from, what did not run, which columns come from part of their
    benchmark and why, and the judges' caveat."""
    lines = [f"- {SUITES[suite].reading.format(n=info['scored'], lang=info.get('lang'))}; results in "
             f"`{info['out']}`." for suite, info in metrics["suites"].items()]
    lines += [f"- {SUITES[suite].title} not run: {why}." for suite, why in metrics["not_run"].items()]
    lines += [_partial_note(suite, info) for suite, info in metrics["suites"].items() if _partial(info)]
    if any(info["incomplete"] for info in metrics["suites"].values()):
        lines.append("- Rerun the same command to finish the rows servers left (answered rows come from the caches).")
    return lines + ["", ("The paper's judges: CFBench's numbers come from a GPT-4o judge and ComplexBench's from "
                         "GPT-4, as their authors evaluate; a run judged by another model is not comparable with them.")]


def table_markdown(metrics: dict) -> str:
    """Table 3 as markdown: this run's row and the paper's, then what each column is read from."""
    lines = [f"# Table 3: `{metrics['model']}` (judge `{metrics['judge']}`)", ""]
    lines += _rows_markdown([(f"`{metrics['model']}` (this run)", metrics)])
    lines += _notes(metrics)
    return "\n".join(lines) + "\n"


def comparison_markdown(rows: list[tuple[str, dict]]) -> str:
    """Table 3 of several models evaluated alike (a trained model and its base): one row each,
    the paper's, then the judge and results folder of each row. The first row's notes stand for
    all: their settings are the same."""
    lines = ["# Table 3: " + " vs ".join(label for label, _ in rows), ""]
    lines += _rows_markdown(rows)
    lines += [f"- {label}: `{metrics['model']}`, judged by `{metrics['judge']}`"
              + (" (itself: give evaluate_after a judge to compare models fairly)"
                 if metrics["judge"] == metrics["model"] else "") + f"; results in `{metrics['out']}`."
              for label, metrics in rows]
    lines += _notes(rows[0][1])
    return "\n".join(lines) + "\n"


async def evaluate_all(cfg: EvalConfig, progress: Progress = NoProgress()) -> AllResult:
    started = time.time()
    check_data(cfg)
    out_dir = Path(cfg.out)
    results: dict = {}
    with ExitStack() as servers:  # a backend is started once for every suite
        urls, dialect = servers.enter_context(llm_endpoints(cfg.model))
        model = cfg.model.model_copy(update={"base_urls": urls, "backend": None, "dialect": dialect})
        judge = None
        if cfg.judge is not None and (cfg.judge.base_urls or cfg.judge.backend):
            judge_urls, judge_dialect = servers.enter_context(llm_endpoints(cfg.judge))
            judge = cfg.judge.model_copy(update={"base_urls": judge_urls, "backend": None, "dialect": judge_dialect})
        for suite in suites_to_run(cfg):
            results[suite] = await SUITES[suite].runner()(suite_config(cfg, suite, model, judge), progress)
    suites = {suite: result.metrics for suite, result in results.items()}
    judged = next((m for name, m in suites.items() if SUITES[name].judged), next(iter(suites.values())))
    metrics = {
        "suite": "all", "model": judged["model"], "judge": judged["judge"],
        "table": table_values(suites), "paper": {"row": PAPER_ROW, **PAPER_QWEN2_7B_IOPO},
        "suites": {suite: {"out": str(result.out_dir), "incomplete": result.metrics["incomplete"],
                           "unscored": unscored(SUITES[suite], result.metrics)[0],
                           "scored": result.metrics["scored"], "failures": result.metrics["failures"],
                           **{k: result.metrics[k] for k in ("in_data", "selected_by") if k in result.metrics},
                           **({"lang": result.metrics["lang"]} if "lang" in result.metrics else {})}
                   for suite, result in results.items()},
        "not_run": {name: suite.missing for name, suite in SUITES.items() if name not in results},
        "incomplete": sum(m["incomplete"] for m in suites.values()),
        "unscored": sum(unscored(SUITES[name], m)[0] for name, m in suites.items()),
        "answers_from_cache": sum(m["answers_from_cache"] for m in suites.values()),
        "seconds": round(time.time() - started, 2),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "results.json", metrics)
    write_text_atomic(out_dir / "results.md", table_markdown(metrics))
    return AllResult(out_dir, metrics, results)
