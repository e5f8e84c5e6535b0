"""The CFBench suite: the model under test answers each row's `prompt`, the judge decides every
criterion 0 or 1 (given the prompt, the reference answer `gold` when there is one, and the
response), and CSR / ISR / PSR are computed as the official evaluation does (flows.cfbench.metrics).

    result = await evaluate_cfbench(cfg, progress)   # cfg: EvalConfig with suite="cfbench"

The judge follows CFBench's official protocol (code/evalaute.py): one call per row with the
prompt, the reference answer (empty when there is none), the response and the criteria, a 0/1
verdict per criterion in order, the criterion's text copied beside it. Where the official judge
writes "criterion<TAB>score" blocks, ours answers JSON ({"scores": [{"criterion", "score"}]}),
validated against a schema that fixes the number of entries, each criterion's text and a score
of 0 or 1, so an answer that does not fit is asked again (the client's parse retries) instead
of being parsed leniently. The template (prompts/cfbench_judge.j2) is written for this project
after the official one, not copied from it (the official repository carries no licence); the
paper's judge is GPT-4o, so numbers are comparable with published ones only under that judge.

The out folder gets:
    responses.jsonl      one line per answered row: idx, prompt, response
    judgments.jsonl      one line per row: idx, split, criteria, the judge's verdicts, CSR/ISR/PSR,
                         failure (null when scored)
    results.json         CSR / ISR / PSR for easy, hard and full, by type and subtype; model,
                         judge, failures, settings
    results.md           the same as tables
    llm-cache.sqlite     every answer and verdict paid for: a rerun asks only for what is missing
A row the model failed itself (answer too long, empty) is scored with every criterion unmet; a
row the server left without an answer or the judge without verdicts is not scored (listed as
unscored; any unscored row makes the command exit 1, flows/suites.py).

"""
from __future__ import annotations

from flows.config import EvalConfig
from flows.contracts import request_seed
from flows.cfbench.metrics import aggregate
from flows.judged_suite import Benchmark, SuiteResult, answer, data_file, pct, run_benchmark, share_rows
from flows.llm.client import LLMCall, LLMClient, LLMFailure
from flows.progress import NoProgress, Progress
from flows.prompts import PromptLibrary
from flows.suites import SUITES, summary_lines

PHASES = ["answer", "judge"]


def judge_schema(criteria: list[str]) -> dict:
    """One {"criterion": its text, "score": 0 or 1} per criterion, in order."""
    entries = [{"type": "object", "properties": {"criterion": {"const": text}, "score": {"enum": [0, 1]}},
                "required": ["criterion", "score"]} for text in criteria]
    return {"type": "object", "required": ["scores"], "properties": {"scores": {
        "type": "array", "prefixItems": entries, "minItems": len(entries), "maxItems": len(entries)}}}


async def evaluate_row(row, cfg: EvalConfig, model: LLMClient, judge: LLMClient, prompts: PromptLibrary,
                       progress: Progress) -> dict:
    """One row answered and judged: its judgments.jsonl line (verdicts None when not scored)."""
    from flows.cfbench.metrics import row_metrics

    line = {"idx": row.id, "split": row.split, "criteria": [[c.text, c.priority, c.type, c.subtype] for c in row.criteria],
            "response": None, "verdicts": None, "judge_reply": None, "CSR": None, "ISR": None, "PSR": None,
            "failure": None, "answer_cached": False, "model": model.model, "judge_model": judge.model}
    got = await answer(model, cfg, "cfbench_answer", row.prompt, "cfbench", row.id, "answer")
    progress.advance("answer")
    line |= {"response": got["response"], "failure": got["failure"], "answer_cached": got["cached"],
             "model": got["model"]}
    if got["failure"]:
        progress.advance("judge")
        if got["response"] is None:
            return line
        verdicts = [0] * len(row.criteria)  # the model failed itself: nothing is followed
        return line | {"verdicts": verdicts, **row_metrics(row, verdicts)}
    criteria = [c.text for c in row.criteria]
    try:
        judged = await judge.chat(LLMCall(
            stage="judge", prompt=prompts.render("cfbench_judge", prompt=row.prompt, gold=row.gold or "",
                                                 response=got["response"], criteria=criteria),
            schema=judge_schema(criteria), temperature=cfg.judge_temperature, max_tokens=cfg.judge_max_tokens,
            seed=request_seed(cfg.seed, "cfbench", row.id, "judge")))
    except LLMFailure as exc:
        return line | {"failure": f"judge_failed:{exc.reason}"}
    finally:
        progress.advance("judge")
    verdicts = [int(entry["score"]) for entry in judged.data["scores"]]
    return line | {"verdicts": verdicts, "judge_reply": judged.content, "judge_model": judged.model,
                   **row_metrics(row, verdicts)}


def metrics_markdown(metrics: dict) -> str:
    """The result tables, for the Prefect artifact, results.md and the terminal."""
    lines = [f"# CFBench: `{metrics['model']}` judged by `{metrics['judge']}`", "",
             *summary_lines(SUITES["cfbench"], metrics), "",
             "| set | rows | CSR | ISR | PSR |", "|---|---|---|---|---|"]
    for name in ("easy", "hard", "full"):
        m = metrics[name]
        lines.append(f"| {name} | {m['n']} | {pct(m['CSR'])} | {pct(m['ISR'])} | {pct(m['PSR'])} |")
    lines += ["", ("The IOPO paper's CFBench (Table 3, Qwen2-7B IOPO, full set): CSR 80.7, ISR 47.0, PSR 58.7, "
                   "judged by GPT-4o as CFBench's authors judge; other judges give numbers that are not comparable."),
              "", "## By constraint type (criteria met)", ""]
    lines += share_rows("type", metrics["by_type"])
    lines += ["", "## By constraint subtype (criteria met)", ""]
    lines += share_rows("subtype", metrics["by_subtype"])
    return "\n".join(lines) + "\n"


CFBENCH = Benchmark(
    name="cfbench", templates=("cfbench_judge",), row_id="idx", evaluate_row=evaluate_row, aggregate=aggregate,
    markdown=metrics_markdown, totals=lambda rows: dict.fromkeys(PHASES, len(rows)),
    response=lambda row, line: {"idx": row.id, "prompt": row.prompt, "response": line["response"]})


async def evaluate_cfbench(cfg: EvalConfig, progress: Progress = NoProgress()) -> SuiteResult:
    from flows.cfbench.data import load_rows

    path = data_file(cfg, cfg.cfbench_data, "cfbench", "PKU-Baichuan-MLSystemLab/CFBench, data/cfbench_data.json")
    return await run_benchmark(CFBENCH, cfg, path, load_rows(path), progress)
