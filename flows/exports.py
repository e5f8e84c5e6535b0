"""Write a run's final splits in the layouts people train and evaluate with.

    counts = write_exports(out_dir, {"sft": rows, "eval": rows, "dpo": rows, "iopo": rows}, card)
    counts = export_split_files(out_dir, {"sft": path, "eval": path, ...}, card)   # split files

The second reads the split files a batch at a time and writes every file as it goes (JSON arrays
element by element, the card's statistics accumulated), so memory does not grow with the rows.
Both write the same bytes (a Parquet file of more than one batch has a row group per batch).

Input rows, per split (any split may be absent; no other split name is accepted):
- ``sft``, ``eval``: the columns of ``stage_schema("respond")`` plus ``messages``
  ([system, user = prompt, assistant = response]);
- ``dpo``: those plus ``rejected_response``, ``rejected_scores``, ``rejected_overall``
  (y_win = ``response``, y_lose = ``rejected_response``);
- ``iopo``: the sft columns for (x1, y1) = (``prompt``, ``response``) plus the columns of the
  ``iopo`` stage (``prompt2`` = x2, ``response2`` = y2, ``edit_op``, ``constraints2``, scores...).

Layout under ``out_dir`` (every file written to a temporary name, then renamed; data files before
the index files that name them; files of a split that is absent or empty this time are removed):

hf/
    ``{split}.parquet``  every contract column of the split, lists and structs kept nested.
    ``README.md``        the Hugging Face dataset card: YAML front matter (one config per split,
                         since the splits have different columns: ``sft``, ``dpo``, ``iopo`` as split
                         ``train``, ``eval`` as split ``test``; licence; languages; task category),
                         then the funnel, constraint-count histograms and dimension shares next to
                         the paper's, acceptance rates, models and template versions.
    Load a file with ``datasets.load_dataset("parquet", data_files={"train": "hf/sft.parquet"})``
    or the folder with ``datasets.load_dataset("hf", config)``, config one the card lists.

llamafactory/  (LLaMA-Factory ShareGPT layout; default tags: from / value / human / gpt)
    ``trace_sft.json``, ``trace_eval.json``: ``{"conversations": [{"from": "human", "value": x},
        {"from": "gpt", "value": y}], "system": "You are a helpful assistant."}``
    ``trace_dpo.json`` (ranking): ``{"conversations": [{"from": "human", "value": x}],
        "chosen": {"from": "gpt", "value": y_win}, "rejected": {"from": "gpt", "value": y_lose},
        "system": ...}``
    ``trace_iopo.json`` (ranking), exactly the official IOPO example's structure
        (shared/data/trace-eval/official_iopo_example.json): ``{"conversations": [{"from": "human",
        "value": x1}, {"from": "human", "value": x2}], "chosen": {"from": "gpt", "value": y1},
        "rejected": {"from": "gpt", "value": y2}}``. It has no ``system`` key, like the official
        example, so its dataset_info entry maps no system column (the template's default system
        prompt applies). Mainline LLaMA-Factory's ShareGPT converter rejects two consecutive human
        turns (paper-notes.md section 7): this file is for an IOPO-aware loader.
    ``dataset_info.json``: one entry per file, as LLaMA-Factory documents it, e.g.
        ``"trace_dpo": {"file_name": "trace_dpo.json", "formatting": "sharegpt", "ranking": true,
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected",
        "system": "system"}}``. Point ``dataset_dir`` at the folder and use ``dataset: trace_sft``.

trl/  (JSON Lines, TRL's conversational formats)
    ``sft.jsonl``:  ``{"messages": [{"role": "system", ...}, {"role": "user", "content": x},
                    {"role": "assistant", "content": y}]}``
    ``dpo.jsonl``:  ``{"prompt": [{"role": "system", "content": ...}, {"role": "user", "content": x}],
                    "chosen": [{"role": "assistant", "content": y_win}],
                    "rejected": [{"role": "assistant", "content": y_lose}]}``
    ``iopo.jsonl``: ``{"x1": ..., "y1": ..., "x2": ..., "y2": ..., "system": ..., "edit_op": ...}``
                    (y1 answers x1 and fails x2; y2 answers x2 and fails x1).

trace/
    ``eval.jsonl``: the eval split in the official Trace evaluation layout (fields: id, messages,
    type "trace", description, constraints, input ("NULL" when none), constraints_num,
    constraints_splits, levels2, category "trace-build"); ``messages[1].content`` is
    ``serialise_instruction(description, constraints_splits, input)``.

Returned: ``{export: {file: rows}}`` with export in hf, llamafactory, trl, trace and ``file`` relative
to ``out_dir``; only data files are listed (not README.md nor dataset_info.json).

The card (every key optional; a missing or malformed one shows as "not recorded"):
    {
      "title": str,                                  # default "Trace-style complex instructions"
      "license": str,                                # Hugging Face licence id, default "apache-2.0"
      "funnel": [{"stage", "in", "out", "rejected", "reasons": {code: n}}],   # flows.report.funnel
      "models": [str],                               # models as the server reported them
      "templates": {template: version},
      "taxonomy_version": str,
      "acceptance": {pipeline: {key: {"tried": n, "accepted": m}}},   # e.g. "iopo": {"add": ...}
                                                     # or {pipeline: {"tried": n, "accepted": m}}
      "paper": {"train_histogram": {count: n}, "eval_histogram": {count: n},
                "dimension_share": {dimension_id: percent}},    # each missing one: taxonomy/paper_stats.yaml
    }
"""
from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from flows.contracts import SCHEMA_VERSION, SPLIT_STAGE, SYSTEM_PROMPT, serialise_instruction, split_schema
from flows.report import reasons_text
from flows.store import (
    BATCH_ROWS,
    ParquetStreamWriter,
    TextStreamWriter,
    read_batches,
    schema_with_meta,
    to_table,
    write_json_atomic,
    write_text_atomic,
)
from flows.taxonomy import TaxonomyError, load_paper_stats, load_taxonomy

log = logging.getLogger("trace_build")

SPLITS = tuple(SPLIT_STAGE)
HF_SPLIT_NAME = {"sft": "train", "eval": "test", "dpo": "train", "iopo": "train"}
TRACE_FIELDS = ("id", "messages", "type", "description", "constraints", "input", "constraints_num",
                "constraints_splits", "levels2", "category")
TRACE_CATEGORY = "trace-build"

_LF_TAGS_NOTE = "default ShareGPT tags: role_tag from, content_tag value, user_tag human, assistant_tag gpt"


# --------------------------------------------------------------------------- records


def _messages(row: dict) -> list[dict]:
    return row.get("messages") or [{"role": "system", "content": SYSTEM_PROMPT},
                                   {"role": "user", "content": row["prompt"]},
                                   {"role": "assistant", "content": row["response"]}]


def _human(text: str) -> dict:
    return {"from": "human", "value": text}


def _gpt(text: str) -> dict:
    return {"from": "gpt", "value": text}


def lf_sft(row: dict) -> dict:
    return {"conversations": [_human(row["prompt"]), _gpt(row["response"])], "system": SYSTEM_PROMPT}


def lf_dpo(row: dict) -> dict:
    return {"conversations": [_human(row["prompt"])], "chosen": _gpt(row["response"]),
            "rejected": _gpt(row["rejected_response"]), "system": SYSTEM_PROMPT}


def lf_iopo(row: dict) -> dict:
    return {"conversations": [_human(row["prompt"]), _human(row["prompt2"])],
            "chosen": _gpt(row["response"]), "rejected": _gpt(row["response2"])}


LF_RECORD = {"sft": lf_sft, "eval": lf_sft, "dpo": lf_dpo, "iopo": lf_iopo}


def lf_dataset_info(split: str) -> dict:
    entry = {"file_name": f"trace_{split}.json", "formatting": "sharegpt"}
    if split in ("dpo", "iopo"):
        entry["ranking"] = True
        entry["columns"] = {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}
        if split == "dpo":
            entry["columns"]["system"] = "system"
    else:
        entry["columns"] = {"messages": "conversations", "system": "system"}
    return entry


def trl_sft(row: dict) -> dict:
    return {"messages": _messages(row)}


def trl_dpo(row: dict) -> dict:
    return {"prompt": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": row["prompt"]}],
            "chosen": [{"role": "assistant", "content": row["response"]}],
            "rejected": [{"role": "assistant", "content": row["rejected_response"]}]}


def trl_iopo(row: dict) -> dict:
    return {"x1": row["prompt"], "y1": row["response"], "x2": row["prompt2"], "y2": row["response2"],
            "system": SYSTEM_PROMPT, "edit_op": row.get("edit_op")}


TRL_RECORD = {"sft": trl_sft, "dpo": trl_dpo, "iopo": trl_iopo}


def _input(value) -> str:
    return value if isinstance(value, str) and value.strip() and value != "NULL" else "NULL"


def trace_eval_record(row: dict) -> dict:
    """One eval row in the official Trace evaluation layout."""
    lines = [f"{i}. {c['text']}" for i, c in enumerate(row["constraints"], start=1)]
    input_text = _input(row.get("input"))
    return {
        "id": str(row["row_id"]),
        "messages": [{"role": "system", "content": SYSTEM_PROMPT},
                     {"role": "user", "content": serialise_instruction(row["description"], lines, input_text)}],
        "type": "trace",
        "description": row["description"],
        "constraints": "\n".join(lines),
        "input": input_text,
        "constraints_num": len(lines),
        "constraints_splits": lines,
        "levels2": [c.get("dimension_zh") or "" for c in row["constraints"]],
        "category": TRACE_CATEGORY,
    }


TRACE_RECORD = {"eval": trace_eval_record}
RECORD_COLUMNS = ("row_id", "prompt", "response", "messages", "rejected_response", "prompt2", "response2",
                  "edit_op", "constraints", "input", "description")  # what the records and the card read


# --------------------------------------------------------------------------- card


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return " ".join(text.replace("|", "\\|").split()) or "-"


def _table(header: list[str], rows: list[list], align: str | None = None) -> list[str]:
    align = align or "l" * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return lines + [""]


def _pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _int_keys(hist) -> dict[int, float]:
    out: dict[int, float] = {}
    if isinstance(hist, dict):
        for k, v in hist.items():
            try:
                out[int(k)] = float(v)
            except (TypeError, ValueError):
                continue
    return out


def _paper_defaults() -> dict:
    try:
        stats = load_paper_stats()
    except (TaxonomyError, OSError) as e:  # the card must still be written
        log.warning("paper stats unavailable for the dataset card: %s", e)
        return {}
    return {"train_histogram": stats["train"]["constraint_count_hist"],
            "eval_histogram": stats["eval"]["constraint_count_hist"],
            "dimension_share": {k: v.get("paper_pct") for k, v in (stats.get("dimension_shares") or {}).items()
                                if isinstance(v, dict)}}


def _taxonomy_zh() -> dict[str, str]:
    try:
        return {d.id: d.zh for d in load_taxonomy().dimensions}
    except (TaxonomyError, OSError):  # the card must still be written
        return {}


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                        (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def _shares(values: dict) -> dict:
    """Percent values as given, or fractions (summing to at most about 1) turned into percent."""
    nums = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    scale = 100.0 if nums and sum(nums.values()) <= 1.5 else 1.0
    return {k: v * scale for k, v in nums.items()}


@dataclass
class SplitStats:
    """What the dataset card shows of a split, gathered a row at a time."""
    rows: int = 0
    counts: Counter = field(default_factory=Counter)  # constraints per instruction -> rows
    dimensions: Counter = field(default_factory=Counter)  # dimension -> constraints
    zh: dict = field(default_factory=dict)  # dimension -> its Chinese label, the last row's

    def add(self, row: dict) -> None:
        constraints = row.get("constraints") or []
        self.rows += 1
        self.counts[len(constraints)] += 1
        for c in constraints:
            self.dimensions[c.get("dimension")] += 1
            self.zh[c.get("dimension")] = c.get("dimension_zh")


def _tags(present: list[str]) -> list[str]:
    """The card's tags; a preference tag only where that split has rows, as its config."""
    pairs = [s for s in ("dpo", "iopo") if s in present]
    return ["instruction-following", "complex-instructions", *(["preference"] if pairs else []), *pairs, "trace"]


def _loading_text(present: list[str]) -> str:
    """How to load the folder, naming only configs that have files (`datasets` refuses any other)."""
    if not present:
        return "No split has rows in this run: there is nothing to load."
    names = ", ".join(f"`{s}`" for s in present)
    return (f"Load one file with `datasets.load_dataset(\"parquet\", data_files={{\"{HF_SPLIT_NAME[present[0]]}\": "
            f"\"{present[0]}.parquet\"}})`, or the folder with `datasets.load_dataset(path, \"{present[0]}\")` "
            f"(configs: {names}).")


def card_markdown(stats: dict[str, SplitStats], card: dict) -> str:
    """The Hugging Face dataset card (README.md) for the hf/ folder, from each split's stats."""
    card = card if isinstance(card, dict) else {}
    # An empty split gets no files: an empty Parquet file does not load in `datasets`.
    stats = {name: s for name, s in stats.items() if s.rows}
    present = [s for s in SPLITS if s in stats]
    configs = [{"config_name": s, **({"default": True} if i == 0 else {}),
                "data_files": [{"split": HF_SPLIT_NAME[s], "path": f"{s}.parquet"}]}
               for i, s in enumerate(present)]
    title = str(card.get("title") or "Trace-style complex instructions")
    front = {
        "license": str(card.get("license") or "apache-2.0"),
        "language": ["zh", "en"],
        "task_categories": ["text-generation"],
        "tags": _tags(present),
        "pretty_name": title,
        "size_categories": [_size_category(max((stats[s].rows for s in present), default=0))],
        "configs": configs,
    }
    intro = ("Complex instruction-following data built with the Trace recipe of the IOPO paper "
             "(arXiv 2411.06208): simple seed instructions expanded with constraints from a 5-type, "
             "26-dimension taxonomy, structured into description / constraints / input, quality-checked, "
             "answered and graded per constraint. Each instruction is serialised as the official Trace "
             "layout (description, numbered constraint lines, then `# Inputs:` and the input when there "
             f"is one), system prompt \"{SYSTEM_PROMPT}\". Licence: the data was generated by the models "
             "listed below; check their terms too.")
    out = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
           f"# {title}", "", intro, "", "## Splits", ""]
    what = {"sft": "instruction and a response scoring 10 on every constraint",
            "eval": "held-out instructions in the same layout (also in the official Trace JSONL layout)",
            "dpo": "instruction, chosen response (full score), rejected response (made worse on purpose)",
            "iopo": "(x1, y1, x2, y2): x2 edits x1's constraints; y1 fits x1 only, y2 fits x2 only"}
    out += _table(["config", "split", "rows", "file", "content"],
                  [[s, HF_SPLIT_NAME[s], stats[s].rows, f"{s}.parquet", what[s]] for s in present],
                  "llrll")
    out += [_loading_text(present), ""]

    out += ["## Funnel per stage", ""]
    funnel = card.get("funnel")
    if isinstance(funnel, list) and funnel:
        rows = []
        for r in funnel:
            if not isinstance(r, dict):
                continue
            rows.append([r.get("stage"), r.get("in"), r.get("out"), r.get("rejected"),
                         reasons_text(r if isinstance(r.get("reasons"), dict) else {**r, "reasons": {}})])
        out += _table(["stage", "in", "out", "rejected", "reasons"], rows, "lrrrl")
    else:
        out += ["Not recorded.", ""]

    paper = {**_paper_defaults(), **(card["paper"] if isinstance(card.get("paper"), dict) else {})}
    train_h, eval_h = _int_keys(paper.get("train_histogram")), _int_keys(paper.get("eval_histogram"))
    hists = {s: stats[s].counts for s in present}
    counts = sorted(set(train_h) | set(eval_h) | {k for h in hists.values() for k in h})
    out += ["## Constraints per instruction", "",
            ("Share of each split's instructions by number of constraints (for iopo: x1's), next to the "
             "paper's train set and the official eval set."), ""]
    if counts:
        rows = []
        for k in counts:
            rows.append([k, _pct(train_h.get(k, 0), sum(train_h.values())) if train_h else "-",
                         _pct(eval_h.get(k, 0), sum(eval_h.values())) if eval_h else "-",
                         *[_pct(hists[s].get(k, 0), stats[s].rows) for s in present]])
        out += _table(["constraints", "paper train", "paper eval", *present], rows, "r" * (3 + len(present)))
    else:
        out += ["No rows.", ""]

    paper_dims = _shares(paper.get("dimension_share") or {}) if isinstance(paper.get("dimension_share"), dict) else {}
    dim_counts = {s: stats[s].dimensions for s in present}
    zh = _taxonomy_zh()
    for s in present:  # the rows' own labels win; the last split's, the last row's
        zh |= stats[s].zh
    dims = list(paper_dims) + sorted({d for h in dim_counts.values() for d in h if d not in paper_dims}, key=str)
    out += ["## Constraint dimensions", "",
            "Share of constraints per taxonomy dimension, next to the paper's share of eval constraints.", ""]
    if dims:
        rows = [[d, zh.get(d) or "", f"{paper_dims[d]:.1f}%" if d in paper_dims else "-",
                 *[_pct(dim_counts[s].get(d, 0), sum(dim_counts[s].values())) for s in present]] for d in dims]
        out += _table(["dimension", "zh", "paper", *present], rows, "ll" + "r" * (1 + len(present)))
    else:
        out += ["No rows.", ""]

    out += ["## Acceptance rates", ""]
    acceptance = card.get("acceptance")
    rows = []
    if isinstance(acceptance, dict):
        for pipeline, entries in acceptance.items():
            if not isinstance(entries, dict):
                continue
            items = [("all", entries)] if "tried" in entries else list(entries.items())
            for key, e in items:
                if not isinstance(e, dict):
                    continue
                tried, accepted = e.get("tried"), e.get("accepted")
                rate = _pct(accepted, tried) if isinstance(tried, (int, float)) and isinstance(accepted, (int, float)) else "-"
                rows.append([pipeline, key, tried, accepted, rate])
    out += _table(["data", "kind", "tried", "accepted", "rate"], rows, "llrrr") if rows else ["Not recorded.", ""]

    out += ["## Models and templates", ""]
    models = card.get("models")
    models = [models] if isinstance(models, str) else models if isinstance(models, list) else []
    out += ["Models: " + (", ".join(f"`{m}`" for m in models) if models else "not recorded."), "",
            "Taxonomy version: " + (f"`{card['taxonomy_version']}`" if card.get("taxonomy_version") else "not recorded."), ""]
    templates = card.get("templates")
    if isinstance(templates, dict) and templates:
        out += _table(["template", "version"], [[k, v] for k, v in sorted(templates.items())])
    else:
        out += ["Template versions: not recorded.", ""]
    out += ["## Other layouts", "",
            ("The same run also exports LLaMA-Factory ShareGPT files (`llamafactory/`, "
             f"{_LF_TAGS_NOTE}), TRL JSON Lines (`trl/`) and the eval split in the official Trace "
             "evaluation layout (`trace/eval.jsonl`)."), ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- writing


class _JsonArrayWriter(TextStreamWriter):
    """A JSON array written an element at a time: the same bytes as write_json_atomic(path, list)
    (indent 2, so an element's lines are indented once more; a string never holds a raw newline)."""

    def __init__(self, path: Path):
        super().__init__(path)
        self.n = 0

    def add(self, value) -> None:
        item = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
        self.write(("[\n  " if self.n == 0 else ",\n  ") + item)
        self.n += 1

    def _finish(self) -> None:
        self.write("\n]\n" if self.n else "[]\n")


class _JsonLinesWriter(TextStreamWriter):
    def add(self, value) -> None:
        self.write(json.dumps(value, ensure_ascii=False) + "\n")


def _export_files(split: str) -> dict[str, str]:
    """The files of a split per export, relative to out_dir."""
    files = {"hf": f"hf/{split}.parquet", "llamafactory": f"llamafactory/trace_{split}.json"}
    if split in TRL_RECORD:
        files["trl"] = f"trl/{split}.jsonl"
    if split in TRACE_RECORD:
        files["trace"] = "trace/eval.jsonl"
    return files


class _SplitExport:
    """Every file of one split, written together a batch at a time, plus the split's card stats.
    As a context manager: all files renamed in order at the end, or all removed on an error."""

    def __init__(self, out_dir: Path, split: str):
        self.split, self.files, self.stats = split, _export_files(split), SplitStats()
        self.records = {"llamafactory": LF_RECORD[split], "trl": TRL_RECORD.get(split),
                        "trace": TRACE_RECORD.get(split)}
        self.writers: dict = {}
        try:
            for export, rel in self.files.items():
                self.writers[export] = self._open(export, out_dir / rel)
        except BaseException:
            self._abort()
            raise

    def _open(self, export: str, path: Path):
        if export == "hf":
            meta = {"split": self.split, "schema_version": SCHEMA_VERSION}
            return ParquetStreamWriter(path, schema_with_meta(split_schema(self.split), meta))
        return _JsonArrayWriter(path) if export == "llamafactory" else _JsonLinesWriter(path)

    def add(self, batch: pa.RecordBatch) -> None:
        self.writers["hf"].write(batch)
        for row in batch.select([c for c in RECORD_COLUMNS if c in batch.schema.names]).to_pylist():
            for export, writer in self.writers.items():
                if export != "hf":
                    writer.add(self.records[export](row))
            self.stats.add(row)

    def _abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._abort()
            return
        for writer in self.writers.values():
            writer.close()


def _check_splits(names) -> None:
    unknown = set(names) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; known: {list(SPLITS)}")


def _remove(path: Path) -> None:
    if path.exists():
        path.unlink()


def _write_all(out_dir: Path, batches: dict[str, Iterable[pa.RecordBatch]], card: dict) -> dict:
    """Every export of the splits in `batches` (split -> its rows, a batch at a time; an absent
    split's files are removed), then the index files that name them."""
    result: dict[str, dict[str, int]] = {"hf": {}, "llamafactory": {}, "trl": {}, "trace": {}}
    stats: dict[str, SplitStats] = {}
    for split in SPLITS:
        if split not in batches:
            for rel in _export_files(split).values():
                _remove(out_dir / rel)
            continue
        with _SplitExport(out_dir, split) as export:
            for batch in batches[split]:
                export.add(batch)
        for name, rel in export.files.items():
            result[name][rel] = export.stats.rows
        stats[split] = export.stats

    # index files last, so they only ever name files that exist
    write_json_atomic(out_dir / "llamafactory" / "dataset_info.json",
                      {f"trace_{s}": lf_dataset_info(s) for s in SPLITS if s in stats})
    write_text_atomic(out_dir / "hf" / "README.md", card_markdown(stats, card or {}))
    return result


def write_exports(out_dir: Path, splits: dict[str, list[dict]], card: dict, batch_rows: int = BATCH_ROWS) -> dict:
    """Write every export of `splits` (rows in memory) under `out_dir` (layout: module docstring).

    Returns {export: {file relative to out_dir: rows}} for the manifest."""
    _check_splits(splits)

    def batches(split: str, rows: list[dict]):
        yield from to_table(rows, split_schema(split), {}).to_batches(max_chunksize=batch_rows)

    # An empty split gets no files: an empty Parquet file does not load in `datasets`.
    return _write_all(Path(out_dir), {s: batches(s, rows) for s, rows in splits.items() if rows}, card)


def export_split_files(out_dir: Path, paths: dict[str, Path], card: dict, batch_rows: int = BATCH_ROWS) -> dict:
    """write_exports from split files (split -> path), read `batch_rows` rows at a time."""
    _check_splits(paths)

    present = {}
    for split, path in paths.items():
        with pq.ParquetFile(path) as f:
            if f.metadata.num_rows:  # an empty split gets no files, as in write_exports
                present[split] = read_batches(path, batch_size=batch_rows)
    return _write_all(Path(out_dir), present, card)
