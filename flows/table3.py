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

with the paper's Qwen2-7B IOPO row beside it for reference. <out>/results.md and results.json
hold the table; each suite's folder holds its own results.
"""
from __future__ import annotations

import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from flows.config import EvalConfig
from flows.llm.backends import llm_endpoints
from flows.pipeline import NoProgress, Progress
from flows.store import write_json_atomic, write_text_atomic

# (key, header) in the order of the paper's Table 3
COLUMNS = (("trace_if_s", "Trace IF-S"), ("trace_if_m", "Trace IF-M"), ("ifeval_s_acc", "IFEval S-Acc"),
           ("ifeval_l_acc", "IFEval L-Acc"), ("cfbench_csr", "CFBench CSR"), ("cfbench_isr", "CFBench ISR"),
           ("cfbench_psr", "CFBench PSR"), ("complexbench", "ComplexBench"))
PAPER_ROW = "Qwen2-7B IOPO (the IOPO paper)"
PAPER_QWEN2_7B_IOPO = dict(zip((key for key, _ in COLUMNS), (82.0, 68.9, 59.9, 63.6, 80.7, 47.0, 58.7, 72.6)))
SUITE_NAMES = {"trace": "Trace", "ifeval": "IFEval", "cfbench": "CFBench", "complexbench": "ComplexBench"}
MISSING = {"cfbench": "no data file (--cfbench-data FILE: PKU-Baichuan-MLSystemLab/CFBench data/cfbench_data.json)",
           "complexbench": "no data file (--complexbench-data FILE: thu-coai/ComplexBench data/data_final.json)"}


@dataclass
class AllResult:
    out_dir: Path
    metrics: dict  # the table and a summary per suite
    suites: dict  # suite -> its own result (out_dir, metrics)


def suites_to_run(cfg: EvalConfig) -> list[str]:
    return ["trace", "ifeval"] + (["cfbench"] if cfg.cfbench_data else []) + (
        ["complexbench"] if cfg.complexbench_data else [])


def suite_config(cfg: EvalConfig, suite: str, model=None, judge=None) -> EvalConfig:
    """The config of one suite of an `all` run: the same servers and settings, the suite's own
    data, folder and defaults; IFEval has no judge."""
    raw = cfg.model_dump()
    raw |= {"suite": suite, "out": str(Path(cfg.out) / suite),
            "data": {"cfbench": cfg.cfbench_data, "complexbench": cfg.complexbench_data}.get(suite)}
    if model is not None:
        raw["model"] = model.model_dump()
    if judge is not None:
        raw["judge"] = judge.model_dump()
    if suite == "ifeval":
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


def _rate(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 1)


def table_values(suites: dict) -> dict:
    """The Table 3 columns (percent, one decimal; None where the suite did not run) from the
    suites' metrics."""
    values = dict.fromkeys(key for key, _ in COLUMNS)
    if "trace" in suites:
        m = suites["trace"]
        values |= {"trace_if_s": _rate(m["if_s"]["strict"]["rate"]), "trace_if_m": _rate(m["if_m"]["strict"]["rate"])}
    if "ifeval" in suites:
        m = suites["ifeval"]
        values |= {"ifeval_s_acc": _rate(m["strict"]["prompt_level"]["rate"]),
                   "ifeval_l_acc": _rate(m["loose"]["prompt_level"]["rate"])}
    if "cfbench" in suites:
        full = suites["cfbench"]["full"]
        values |= {"cfbench_csr": _rate(full["CSR"]), "cfbench_isr": _rate(full["ISR"]),
                   "cfbench_psr": _rate(full["PSR"])}
    if "complexbench" in suites:
        values["complexbench"] = _rate(suites["complexbench"]["drfr"]["rate"])
    return values


def _cell(value: float | None, incomplete: bool) -> str:
    return "-" if value is None else f"{value:.1f}" + ("*" if incomplete else "")


def _incomplete_columns(metrics: dict) -> set[str]:
    return {key for key, _ in COLUMNS for suite, info in metrics["suites"].items()
            if key.startswith(suite) and info["incomplete"]}


def _rows_markdown(rows: list[tuple[str, dict]]) -> list[str]:
    """The table: one row per (label, metrics), then the paper's."""
    lines = ["| model | " + " | ".join(name for _, name in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for label, metrics in rows:
        incomplete = _incomplete_columns(metrics)
        lines.append(f"| {label} | " + " | ".join(_cell(metrics["table"][key], key in incomplete)
                                                 for key, _ in COLUMNS) + " |")
    paper = rows[0][1]["paper"]
    lines += [f"| {PAPER_ROW} | " + " | ".join(f"{paper[key]:.1f}" for key, _ in COLUMNS) + " |", ""]
    return lines


def _notes(metrics: dict, incomplete: bool) -> list[str]:
    """What each column is read from, what did not run, and the judges' caveat."""
    read = {"trace": "Trace: strict reading (every constraint scored 10) over {n} rows",
            "ifeval": "IFEval: prompt-level accuracy, strict and loose, over {n} prompts",
            "cfbench": "CFBench: the full set (easy and hard), {n} rows",
            "complexbench": "ComplexBench: DRFR with dependencies ({lang}), {n} instructions"}
    lines = [f"- {read[suite].format(n=info['scored'], lang=info.get('lang'))}; results in `{info['out']}`."
             for suite, info in metrics["suites"].items()]
    lines += [f"- {SUITE_NAMES[suite]} not run: {why}." for suite, why in metrics["not_run"].items()]
    if incomplete:
        lines.append("- \\* incomplete: rows the servers left unscored are not counted; rerun the same command to "
                     "finish (everything already answered comes from the request caches).")
    return lines + ["", ("The paper's judges: CFBench's numbers come from a GPT-4o judge and ComplexBench's from "
                         "GPT-4, as their authors evaluate; a run judged by another model is not comparable with them.")]


def table_markdown(metrics: dict) -> str:
    """Table 3 as markdown: this run's row and the paper's, then what each column is read from."""
    lines = [f"# Table 3: `{metrics['model']}` (judge `{metrics['judge']}`)", ""]
    lines += _rows_markdown([(f"`{metrics['model']}` (this run)", metrics)])
    lines += _notes(metrics, bool(_incomplete_columns(metrics)))
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
    lines += _notes(rows[0][1], any(_incomplete_columns(m) for _, m in rows))
    return "\n".join(lines) + "\n"


async def evaluate_all(cfg: EvalConfig, progress: Progress = NoProgress()) -> AllResult:
    from flows.cfbench.suite import evaluate_cfbench
    from flows.complexbench.suite import evaluate_complexbench
    from flows.evaluation import evaluate
    from flows.ifeval.suite import evaluate_ifeval

    runners = {"trace": evaluate, "ifeval": evaluate_ifeval, "cfbench": evaluate_cfbench,
               "complexbench": evaluate_complexbench}
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
            results[suite] = await runners[suite](suite_config(cfg, suite, model, judge), progress)
    suites = {suite: result.metrics for suite, result in results.items()}
    trace = suites["trace"]
    metrics = {
        "suite": "all", "model": trace["model"], "judge": trace["judge"],
        "table": table_values(suites), "paper": {"row": PAPER_ROW, **PAPER_QWEN2_7B_IOPO},
        "suites": {suite: {"out": str(result.out_dir), "incomplete": result.metrics["incomplete"],
                           "scored": result.metrics["scored"], "failures": result.metrics["failures"],
                           **({"lang": result.metrics["lang"]} if suite == "complexbench" else {})}
                   for suite, result in results.items()},
        "not_run": {suite: why for suite, why in MISSING.items() if suite not in results},
        "incomplete": sum(m["incomplete"] for m in suites.values()),
        "answers_from_cache": sum(m["answers_from_cache"] for m in suites.values()),
        "seconds": round(time.time() - started, 2),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out_dir / "results.json", metrics)
    write_text_atomic(out_dir / "results.md", table_markdown(metrics))
    return AllResult(out_dir, metrics, results)
