"""Training metrics as tables and text for the UI and the terminal."""
from __future__ import annotations

from flows.words import plural

# Columns worth a glance, in order; a method logs the ones that apply to it.
KEY_METRICS = ("loss", "accuracy_x1", "accuracy_x2", "margin_x1", "margin_x2", "accuracy_y1", "accuracy_y2",
               "margin_y1", "margin_y2", "reward_chosen",
               "reward_rejected", "accuracy", "margin", "nll_per_token", "lr", "grad_norm", "tokens_per_s",
               "peak_mem_gb")


def metrics_table(history: list[dict], max_rows: int = 200) -> list[dict]:
    """Logged steps (evenly thinned to max_rows, the last kept), rounded for reading."""
    stride = max(1, -(-len(history) // max_rows))
    rows = history[::stride]
    if history and rows[-1] is not history[-1]:
        rows.append(history[-1])
    return [{"step": r["step"], **{k: _round(r[k]) for k in KEY_METRICS if r.get(k) is not None}} for r in rows]


def _round(value):
    return round(value, 6) if isinstance(value, float) else value


def summary_markdown(report: dict) -> str:
    first, last = report["first"], report["last"]
    lines = [
        f"# {report['method']} training", "",
        f"Model `{report['model']}`, data `{report['data']}`: {plural(report['examples'], 'example')}, "
        f"{plural(report['steps'], 'step')} in {report['seconds']} s on {report['device']} ({report['dtype']}, "
        f"{'LoRA' if report['lora'] else 'full fine-tuning'}, reference: {report['reference'] or 'none'}).", "",
        f"Saved to `{report['final']}`. Truncated sequences: {report['truncated_sequences']}.", "",
        "| metric | first step | last step |", "|---|---|---|",
    ]
    lines += [f"| {k} | {_round(first[k])} | {_round(last[k])} |" for k in KEY_METRICS
              if first.get(k) is not None and last.get(k) is not None]
    return "\n".join(lines) + "\n"
