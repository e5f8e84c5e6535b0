"""Reports derived from a run folder's files: the funnel per stage and the taxonomy report."""
from __future__ import annotations

import heapq

from collections import Counter
from pathlib import Path
from typing import Iterable

import pyarrow.parquet as pq

from flows.contracts import PAIR_STAGES, STAGES
from flows.store import ShardStore, read_batches
from flows.words import plural


def _count(paths) -> int:
    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)


def funnel(run_dir: Path | str) -> list[dict]:
    """Per stage: rows in, rows out, rows rejected by reason; then per split (sft with eval held out)."""
    store = ShardStore(run_dir)
    rows = []
    for stage in ("seeds",) + STAGES + PAIR_STAGES:
        shards = store.stage_files(stage)
        if stage in PAIR_STAGES and not shards:
            continue  # preference data was not built in this run
        out = _count(shards)
        reasons: Counter = Counter()
        for path in store.stage_files(stage, "rejects"):
            reasons.update(pq.read_table(path, columns=["reason"]).column("reason").to_pylist())
        rejected = sum(reasons.values())
        rows.append({"stage": stage, "in": out + rejected, "out": out, "rejected": rejected,
                     "reasons": dict(sorted(reasons.items()))})
    rejects_path = store.split_path("rejects")
    if rejects_path.exists():  # the splits: each candidate lands in one split or in the rejects
        split_rejects: Counter = Counter()  # (split, reason) -> rows, read a batch at a time
        for batch in read_batches(rejects_path, ["split", "reason"]):
            split_rejects.update(zip(batch.column("split").to_pylist(), batch.column("reason").to_pylist()))
        sizes = {name: _count([store.split_path(name)]) if store.split_path(name).exists() else 0
                 for name in ("sft", "eval", "dpo", "iopo")}
        for name, sources in (("sft", ("sft", "eval")), ("dpo", ("dpo",)), ("iopo", ("iopo",))):
            if name in PAIR_STAGES and name not in {r["stage"] for r in rows}:
                continue
            reasons = Counter()
            for (split, reason), n in split_rejects.items():
                if split in sources:
                    reasons[reason] += n
            out = sizes[name]
            held_out = sizes["eval"] if name == "sft" else 0
            rows.append({"stage": f"split:{name}", "in": out + held_out + sum(reasons.values()), "out": out,
                         "rejected": sum(reasons.values()),
                         "reasons": dict(sorted(reasons.items())), **({"eval": held_out} if held_out else {})})
    return rows


def reasons_text(row: dict) -> str:
    """A funnel row's rejects by reason (and rows held out for eval) as one cell of text."""
    parts = [f"{k}={v}" for k, v in (row.get("reasons") or {}).items()]
    if row.get("eval"):
        parts.append(f"(held out for eval: {row['eval']})")
    return ", ".join(parts) or "-"


def cost_text(manifest: dict) -> str:
    """What this run paid, what the request cache gave, and what every run of the folder paid."""
    runs = manifest.get("runs") or []
    if not runs:
        return ""
    last = runs[-1]
    text = (f"this run: {plural(last['requests'], 'request')} paid, {plural(last['cache_hits'], 'answer')} from the "
            f"request cache, {plural(last['prompt_tokens'] + last['completion_tokens'], 'token')}, "
            f"{last['seconds']:,.0f} s")
    if len(runs) > 1:
        total = manifest.get("usage_total") or {}
        requests = sum(stage.get("requests", 0) for stage in total.values())
        text += f"; all {len(runs)} runs of this folder: {plural(requests, 'request')} paid"
    return text


def written_exports(manifest: dict) -> list[str]:
    """The export formats that have at least one file in this run."""
    return [name for name, files in (manifest.get("exports") or {}).items() if files]


def format_funnel(rows: list[dict]) -> str:
    lines = [f"{'stage':<12}{'in':>7}{'out':>7}{'rejected':>10}  reasons"]
    for r in rows:
        reasons = reasons_text(r)
        lines.append(f"{r['stage']:<12}{r['in']:>7}{r['out']:>7}{r['rejected']:>10}  {reasons}")
    return "\n".join(lines)


MAX_NEW_TYPES = 1000  # candidate new types tracked at once: memory does not grow with the seeds


class _FrequentNames:
    """The most frequent names of a stream in bounded memory (Space-Saving, Metwally et al. 2005):
    at most `capacity` entries; a new name replaces the least counted one (the earliest of equal
    counts) and inherits its count as its possible error. A name seen more than N/capacity times
    in N is always kept, and its count is exact up to its error."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.entries: dict[str, dict] = {}
        self._order = 0
        self._heap: list[tuple[int, int, str]] = []  # (count, order, name); stale ones are skipped

    def _least(self) -> str:
        while True:
            count, at, name = heapq.heappop(self._heap)
            entry = self.entries.get(name)
            if entry is not None and (entry["count"], entry["_at"]) == (count, at):
                return name

    def add(self, name: str) -> dict:
        entry = self.entries.get(name)
        if entry is None:
            if len(self.entries) < self.capacity:
                entry = {"count": 0, "error": 0}
            else:
                old = self.entries.pop(self._least())
                entry = {"count": old["count"], "error": old["count"]}
            entry |= {"descriptions": [], "example_seeds": []}
            self.entries[name] = entry
        entry["count"] += 1
        self._order += 1
        entry["_at"] = self._order
        heapq.heappush(self._heap, (entry["count"], self._order, name))
        if len(self._heap) > 4 * self.capacity:  # drop the stale entries: the heap stays bounded
            self._heap = [(e["count"], e["_at"], n) for n, e in self.entries.items()]
            heapq.heapify(self._heap)
        return entry


def taxonomy_report(tagged: Iterable[dict], taxonomy, max_new_types: int = MAX_NEW_TYPES) -> dict:
    """How the seed pool maps onto the taxonomy, and the constraint types it lacks (the
    `max_new_types` most frequent). `tagged` (the taxonomy stage's rows) is read once, so it may
    be a stream (ShardStore.iter_rows)."""
    seeds = 0
    per_dimension: Counter = Counter()
    candidates = _FrequentNames(max_new_types)
    for row in tagged:
        seeds += 1
        per_dimension.update(row["fit_dimensions"])
        for t in row["new_constraint_types"]:
            entry = candidates.add(" ".join(t["name"].lower().split()))
            if len(entry["descriptions"]) < 3 and t["description"] not in entry["descriptions"]:
                entry["descriptions"].append(t["description"])
            if len(entry["example_seeds"]) < 3:
                entry["example_seeds"].append(row["text"][:200])
    ranked = sorted(candidates.entries.items(), key=lambda kv: (-kv[1]["count"], kv[0]))
    return {
        "seeds": seeds,
        "taxonomy_version": taxonomy.version_id,
        "dimensions": [{"id": d.id, "name": d.name, "zh": d.zh, "seeds": per_dimension.get(d.id, 0)}
                       for d in taxonomy.dimensions],
        # count: seeds proposing the name; error: how much of it may belong to names it replaced
        "candidate_new_types": [{"name": k, **{f: v[f] for f in ("count", "error", "descriptions", "example_seeds")}}
                                for k, v in ranked],
    }


def taxonomy_report_markdown(report: dict) -> str:
    lines = [f"# Taxonomy report ({plural(report['seeds'], 'seed')}, taxonomy {report['taxonomy_version']})", "",
             "| dimension | zh | seeds it fits |", "|---|---|---:|"]
    lines += [f"| {d['id']} | {d['zh']} | {d['seeds']} |" for d in report["dimensions"]]
    lines += ["", "## Candidate new constraint types", ""]
    if not report["candidate_new_types"]:
        lines.append("None proposed.")
    for c in report["candidate_new_types"]:
        lines.append(f"- **{c['name']}** ({plural(c['count'], 'seed')}): {'; '.join(c['descriptions'])}")
        lines += [f"  - e.g. {s}" for s in c["example_seeds"]]
    return "\n".join(lines) + "\n"


def agreement_markdown(agreement: dict) -> str:
    """Rule checks vs the judge (flows.rules.agreement) as a markdown section; empty when none."""
    if not agreement:
        return ""
    lines = ["", "## Rule checks vs judge", "", "| dimension | constraints | agree | rate |", "|---|---|---|---|"]
    lines += [f"| {dim} | {a['n']} | {a['agree']} | {a['rate']:.2f} |" for dim, a in agreement.items()]
    return "\n".join(lines) + "\n"
