"""IFEval's scoring: strict and loose verdicts, prompt- and instruction-level accuracy.

Strict: each instruction checked on the response as it is. Loose: an instruction counts as
followed when it holds on any of eight variants of the response: as it is, without its first
line, without its last line, without both, and each of these with every `*` removed (so Markdown
emphasis or a "Sure, here is..." opening line does not decide). An empty response follows
nothing, in both.

    lines = [result_line(p, response, verdicts(p, response, loose=False)) for p, response in ...]
    metrics = accuracy(lines)   # prompt_level, instruction_level, by_category, by_instruction
"""
from __future__ import annotations

from collections import defaultdict

from flows.ifeval.instructions import check_instruction
from flows.suites import SUITES, summary_lines

MODES = ("strict", "loose")


def loose_variants(response: str) -> list[str]:
    """The eight responses loose scoring tries, in IFEval's order."""
    lines = response.split("\n")
    cut = ["\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    return [response, response.replace("*", ""), *cut, *(text.replace("*", "") for text in cut)]


def verdicts(prompt: dict, response: str, loose: bool = False) -> list[bool]:
    """Whether each of the prompt's instructions is followed (strict, or loose)."""
    candidates = loose_variants(response) if loose else [response]
    return [any(text.strip() and check_instruction(instruction, text, kwargs, prompt["prompt"])
                for text in candidates)
            for instruction, kwargs in zip(prompt["instruction_id_list"], prompt["kwargs"])]


def result_line(prompt: dict, response: str, follows: list[bool]) -> dict:
    """One line of eval_results_{strict,loose}.jsonl, as IFEval writes it (keys in its order)."""
    return {"follow_all_instructions": all(follows), "follow_instruction_list": follows,
            "instruction_id_list": prompt["instruction_id_list"], "prompt": prompt["prompt"], "response": response}


def _share(followed: int, n: int) -> dict:
    return {"n": n, "followed": followed, "rate": round(followed / n, 4) if n else None}


def accuracy(lines: list[dict]) -> dict:
    """Prompt-level (all of a prompt's instructions followed) and instruction-level accuracy, and
    instruction-level accuracy per category (`keywords`, `length_constraints`, ...) and per
    instruction type."""
    prompts_followed = sum(line["follow_all_instructions"] for line in lines)
    by_category: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_instruction: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for line in lines:
        for instruction, followed in zip(line["instruction_id_list"], line["follow_instruction_list"]):
            for counts in (by_category[instruction.split(":")[0]], by_instruction[instruction]):
                counts[0] += 1
                counts[1] += followed
    n_instructions = sum(n for n, _ in by_instruction.values())
    return {
        "prompt_level": _share(prompts_followed, len(lines)),
        "instruction_level": _share(sum(k for _, k in by_instruction.values()), n_instructions),
        "by_category": {c: _share(k, n) for c, (n, k) in sorted(by_category.items())},
        "by_instruction": {i: _share(k, n) for i, (n, k) in sorted(by_instruction.items())},
    }


# The IOPO paper's Table 3 (IFEval S-Acc / L-Acc, Qwen2-7B), to read our numbers against.
PAPER_QWEN2_7B = {"Instruct": (51.6, 56.4), "DPO": (52.7, 58.2), "IOPO": (59.9, 63.6)}


def _pct(share: dict) -> str:
    return "-" if share["rate"] is None else f"{100 * share['rate']:.1f} ({share['followed']}/{share['n']})"


def metrics_markdown(metrics: dict) -> str:
    """The result tables, for the Prefect artifact, results.md and the terminal."""
    strict, loose = metrics["strict"], metrics["loose"]
    lines = [f"# IFEval: `{metrics['model']}`", "", *summary_lines(SUITES["ifeval"], metrics), "",
             "| | strict | loose |", "|---|---|---|",
             f"| prompt-level | {_pct(strict['prompt_level'])} | {_pct(loose['prompt_level'])} |",
             f"| instruction-level | {_pct(strict['instruction_level'])} | {_pct(loose['instruction_level'])} |", "",
             "The IOPO paper's IFEval S-Acc / L-Acc (Table 3, Qwen2-7B): "
             + ", ".join(f"{name} {s} / {l}" for name, (s, l) in PAPER_QWEN2_7B.items())
             + " (by their size, prompt-level).", "",
             "## By category (instruction-level)", "", "| category | strict | loose |", "|---|---|---|"]
    lines += [f"| {c} | {_pct(m)} | {_pct(loose['by_category'][c])} |" for c, m in strict["by_category"].items()]
    lines += ["", "## By instruction (instruction-level)", "", "| instruction | strict | loose |", "|---|---|---|"]
    lines += [f"| {i} | {_pct(m)} | {_pct(loose['by_instruction'][i])} |" for i, m in strict["by_instruction"].items()]
    return "\n".join(lines) + "\n"
