"""The evaluation suites, one entry each: everything the CLI (`trace-build eval`), the `trace-eval`
flow and `--suite all` (the paper's Table 3, flows/table3.py) need to know about a suite. Adding a
suite is adding an entry.

    suite = SUITES["cfbench"]
    result = await suite.runner()(cfg, progress)      # cfg.suite == "cfbench"
    print(suite.markdown()(result.metrics)); lines = unscored_lines({suite.name: result.metrics})

The code a suite runs is named by "module:function" and imported when used, so that reading this
table (as the config and the CLI's help do) loads none of it. Every suite's results open with the
same tally (summary_lines: scored + unscored = all, the model's own failures apart).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


def _rate(value: float | None) -> float | None:
    return None if value is None else round(100 * value, 1)


@dataclass(frozen=True)
class Suite:
    name: str
    title: str
    help: str  # for `--suite`
    run: str  # "module:function": async (cfg, progress) -> a result with .out_dir and .metrics
    markdown_of: str  # "module:function": metrics -> the result tables as markdown
    artifact: tuple[str, str]  # the trace-eval flow's markdown artifact: key, description
    files: str  # what the CLI prints after the tables; {out} is the results folder
    unit: str  # what a row is called in messages: rows, prompts, instructions
    total: str  # the metrics key of how many there were
    defaults: dict  # EvalConfig defaults for this suite (out folder, answer temperature)
    columns: tuple[tuple[str, str], ...]  # Table 3: (key, header)
    table: Callable[[dict], dict]  # metrics -> Table 3 values (percent) by column key
    headline: Callable[[dict], dict]  # metrics -> the trace-eval flow's return values
    reading: str  # Table 3's note on what the columns read; {n} scored, {lang}
    judged: bool = True  # whether it takes a judge
    all_data: str | None = None  # EvalConfig field whose file makes `--suite all` run it (None: always runs)
    missing: str = ""  # why `--suite all` did not run it, when all_data is not given

    def runner(self) -> Callable:
        return _resolve(self.run)

    def markdown(self) -> Callable[[dict], str]:
        return _resolve(self.markdown_of)


def _resolve(target: str) -> Callable:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


SUITES: dict[str, Suite] = {suite.name: suite for suite in (
    Suite(
        name="trace", title="Trace", help="the Trace protocol with a judge (IF-S, IF-M)",
        run="flows.evaluation:evaluate", markdown_of="flows.evaluation:results_markdown",
        artifact=("trace-eval-results", "IF-S / IF-M and breakdowns of the Trace evaluation"),
        files="rows: {out}/rows.parquet (each row's answer and the judge's scores)  results: {out}/results.json",
        unit="rows", total="rows", defaults={"out": "runs/eval", "answer_temperature": 0.1},
        columns=(("trace_if_s", "Trace IF-S"), ("trace_if_m", "Trace IF-M")),
        table=lambda m: {"trace_if_s": _rate(m["if_s"]["strict"]["rate"]),
                         "trace_if_m": _rate(m["if_m"]["strict"]["rate"])},
        headline=lambda m: {"if_s": m["if_s"]["strict"]["rate"], "if_m": m["if_m"]["strict"]["rate"]},
        reading="Trace: strict reading (every constraint scored 10) over {n} rows"),
    Suite(
        name="ifeval", title="IFEval", help="IFEval's 541 prompts decided by rules (strict and loose)",
        run="flows.ifeval.suite:evaluate_ifeval", markdown_of="flows.ifeval.scoring:metrics_markdown",
        artifact=("ifeval-results", "IFEval strict and loose accuracy, by category and instruction"),
        files="results: {out}/results.json  lines: {out}/eval_results_strict.jsonl, {out}/eval_results_loose.jsonl",
        unit="prompts", total="prompts", defaults={"out": "runs/eval-ifeval", "answer_temperature": 0.0},
        columns=(("ifeval_s_acc", "IFEval S-Acc"), ("ifeval_l_acc", "IFEval L-Acc")),
        table=lambda m: {"ifeval_s_acc": _rate(m["strict"]["prompt_level"]["rate"]),
                         "ifeval_l_acc": _rate(m["loose"]["prompt_level"]["rate"])},
        headline=lambda m: {f"{reading}_{level}_level": m[reading][f"{level}_level"]["rate"]
                            for reading in ("strict", "loose") for level in ("prompt", "instruction")},
        reading="IFEval: prompt-level accuracy, strict and loose, over {n} prompts", judged=False),
    Suite(
        name="cfbench", title="CFBench", help="CFBench with a judge (CSR, ISR, PSR)",
        run="flows.cfbench.suite:evaluate_cfbench", markdown_of="flows.cfbench.suite:metrics_markdown",
        artifact=("cfbench-results", "CFBench CSR / ISR / PSR (easy, hard, full), by type"),
        files="results: {out}/results.json  judgments: {out}/judgments.jsonl",
        unit="rows", total="rows", defaults={"out": "runs/eval-cfbench", "answer_temperature": 0.0},
        columns=(("cfbench_csr", "CFBench CSR"), ("cfbench_isr", "CFBench ISR"), ("cfbench_psr", "CFBench PSR")),
        table=lambda m: {f"cfbench_{k.lower()}": _rate(m["full"][k]) for k in ("CSR", "ISR", "PSR")},
        headline=lambda m: {k: m["full"][k] for k in ("CSR", "ISR", "PSR")},
        reading="CFBench: the full set (easy and hard), {n} rows", all_data="cfbench_data",
        missing="no data file (--cfbench-data FILE: PKU-Baichuan-MLSystemLab/CFBench data/cfbench_data.json)"),
    Suite(
        name="complexbench", title="ComplexBench", help="ComplexBench with rules and a judge (DRFR)",
        run="flows.complexbench.suite:evaluate_complexbench",
        markdown_of="flows.complexbench.suite:metrics_markdown",
        artifact=("complexbench-results", "ComplexBench DRFR, its breakdowns and the coherent test"),
        files="results: {out}/results.json  judgments: {out}/judgments.jsonl",
        unit="instructions", total="instructions",
        defaults={"out": "runs/eval-complexbench", "answer_temperature": 0.0},
        columns=(("complexbench", "ComplexBench"),),
        table=lambda m: {"complexbench": _rate(m["drfr"]["rate"])},
        headline=lambda m: {"drfr": m["drfr"]["rate"]},
        reading="ComplexBench: DRFR with dependencies ({lang}), {n} instructions", all_data="complexbench_data",
        missing="no data file (--complexbench-data FILE: thu-coai/ComplexBench data/data_final.json)"),
)}
ALL = "all"  # every suite whose data is present, and Table 3 (flows/table3.py)
ALL_DEFAULTS = {"out": "runs/eval-all"}


def suite_names() -> list[str]:
    return [*SUITES, ALL]


MODEL_FAILED = "answer_failed:"  # the model's own failure (too long, empty): scored, as not followed


def why_text(counts: dict[str, int]) -> str:
    """failure -> count as the lines say it: "judge_failed unparseable_output 2, ..."."""
    return ", ".join(f"{reason.replace(':', ' ')} {count}" for reason, count in sorted(counts.items()))


def unscored_reasons(failures: dict[str, int]) -> dict[str, int]:
    """The failures that leave a row unscored. A model's own failure (answer_failed: too long,
    empty) is scored, as not followed; anything else is not."""
    return {k: v for k, v in failures.items() if not k.startswith(MODEL_FAILED)}


def unscored(suite: Suite, metrics: dict) -> tuple[int, dict[str, int]]:
    """How many rows the suite left unscored, and why (failure -> count)."""
    return metrics[suite.total] - metrics["scored"], unscored_reasons(metrics["failures"])


def failed_answers(metrics: dict) -> dict[str, int]:
    """The answers the model failed by itself, by kind (output_too_long -> count): scored rows."""
    return {k.removeprefix(MODEL_FAILED): v for k, v in metrics["failures"].items() if k.startswith(MODEL_FAILED)}


def tally_line(suite: Suite, metrics: dict) -> str:
    """The first line of every suite's results, so that each reads alike and adds up: scored +
    unscored = all; why rows are unscored (left out of every table); the answers the model failed
    by itself (scored, as not followed), apart. Each failure is in exactly one of the two."""
    n, reasons = unscored(suite, metrics)
    line = f"{metrics['scored']} of {metrics[suite.total]} {suite.unit} scored, {n} unscored"
    if n:
        line += f" (not counted: {why_text(reasons) or 'no reason recorded'})"
    own = failed_answers(metrics)
    if own:
        line += f"; answers the model failed by itself (counted as not followed): {why_text(own)}"
    return line


def summary_lines(suite: Suite, metrics: dict) -> list[str]:
    """The tally, and where rows failed, how they stand in the tables below (for the suites whose
    tables have no column of their own for them)."""
    n, _ = unscored(suite, metrics)
    own = sum(failed_answers(metrics).values())
    parts = ([f"{suite.unit} whose answer the model failed ({own}) count as not followed"] if own else []) + \
        ([f"unscored {suite.unit} ({n}) are left out"] if n else [])
    return [f"{tally_line(suite, metrics)}."] + ([f"In every table below, {'; '.join(parts)}."] if parts else [])


def unscored_line(suite: Suite, metrics: dict) -> str | None:
    """One line for a result with unscored rows, else None: how many, of how many, and why."""
    n, reasons = unscored(suite, metrics)
    if not n:
        return None
    rerun = ("; rerun the same command to finish the ones servers left (answers so far are cached)"
             if metrics.get("incomplete") else "")
    why = why_text(reasons) or "no reason recorded"
    return f"{suite.title}: {n} of {metrics[suite.total]} {suite.unit} unscored: {why}{rerun}"


def unscored_lines(done: dict[str, dict]) -> list[str]:
    """unscored_line of every suite that left rows unscored ({suite name: its metrics})."""
    return [line for name, metrics in done.items() if (line := unscored_line(SUITES[name], metrics))]
