"""Final splits: candidate rows of the pipeline -> `sft`, `dpo`, `iopo` and a held-out `eval`.

    result = build_splits({"sft": [...], "dpo": [...], "iopo": [...]}, SplitConfig(),
                          reference_instructions=official_eval_instructions())

Rules, applied in order and deterministic given ``SplitConfig.seed`` (independent of the order
of the input lists):

1. Eval: seeds with an sft candidate, stratified by constraint count to the shape of
   ``eval_histogram`` (largest-remainder allocation; a short count bucket is filled from the
   nearest counts), at most ``eval_fraction`` of all seeds. One sft row per eval seed.
2. The other rows of an eval seed are rejected: ``seed_in_eval``.
3. Every other seed goes to exactly one train split: the least filled (assigned / weight) of
   those it has a candidate in, seeds taken in sha256(seed_id, config.seed) order. Its rows in
   the other splits: ``seed_assigned_to_<split>``; a split of weight 0 takes nothing
   (``split_disabled`` when a seed has no other split).
4. Instruction texts (``prompt``; for iopo also ``prompt2``) are normalised (NFKC, casefold,
   punctuation removed, whitespace collapsed) and compared exactly and by Jaccard similarity of
   character 5-gram shingles (works for Chinese). Eval rows duplicating an earlier eval row:
   ``duplicate_instruction`` (split "eval"). Train rows, first matching reason wins:
   ``contaminates_eval``, ``contaminates_trace_eval`` (the reference set, i.e. the official
   Trace eval), ``duplicate_instruction``, ``near_duplicate_instruction`` (vs earlier kept train
   rows of all three splits).
5. Every candidate row ends in exactly one place: a split or ``rejects``.

How it runs, in three parts. Rules 1-3 read no text: flows/split_plan.py plans them from small
records per row (`Candidates`: row id, seed id, constraint count; `_Plan`). Near duplicates are
flows/near_duplicates.py's (MinHash, LSH, Jaccard). Here, one execution: `stream_splits` reads
the texts rule 4 compares once, from a `TextSource` (the run folder's shards, flows/outputs.py;
or rows in memory, `build_splits`), in classes of equal normalised text; keeps of a class its
LSH band keys in memory and its shingle ids in a temporary file (`_TextTable`); then takes the
decisions in order (rule 4 compares a row only with rows kept before it), looking up a text's
LSH candidates among the classes kept so far and reading back only their shingle ids for the
Jaccard (`_ClassIndex`). Memory: a few hundred bytes per distinct text.
"""
from __future__ import annotations

import hashlib
import json
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Protocol

import numpy as np

from flows.near_duplicates import (BANDS, BORDER, TextFile, band_keys, normalise_instruction, shingle_ids, shingles,
                                   signature, similarity)
from flows.split_plan import _DISABLED, _EVAL, ALL_SPLITS, TRAIN_SPLITS, Candidates, Key, SplitConfig, _Plan

DEFAULT_EVAL_PATH = Path(__file__).resolve().parent.parent / "data" / "trace-eval" / "202409_trace_evaluation.jsonl"


@dataclass
class SplitResult:
    splits: dict[str, list[dict]]  # "sft", "dpo", "iopo", "eval" -> rows (eval rows are sft rows)
    rejects: list[dict]  # {"row_id", "seed_id", "split", "reason", "detail"}

    def counts(self) -> dict[str, int]:
        """Rows per split and rejects per reason, for reports."""
        out = {name: len(rows) for name, rows in self.splits.items()}
        for r in self.rejects:
            out[f"rejected:{r['reason']}"] = out.get(f"rejected:{r['reason']}", 0) + 1
        return out


def official_eval_instructions(path: str | Path | None = None) -> list[str]:
    """The user-message texts of the official Trace eval set (1,042 rows)."""
    p = Path(path) if path is not None else DEFAULT_EVAL_PATH
    out = []
    with p.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                out.append(next(m["content"] for m in row["messages"] if m["role"] == "user"))
    return out


def _fields(split: str, row: dict) -> tuple[str, ...]:
    """The instruction texts rule 4 compares for a row: x1, and x2 of an iopo row that has one."""
    return ("prompt", "prompt2") if split == "iopo" and row.get("prompt2") is not None else ("prompt",)



class TextSource(Protocol):
    def read_texts(self, wanted: dict[str, list[int]]) -> Iterator[tuple[str, int, dict]]:
        """(split, position, row) for every wanted position (sorted, per split), in any order;
        the row has at least `prompt` and, in iopo, `prompt2`."""


class _TextTable:
    """The texts stream_splits compares, kept out of memory. Candidate texts and references are
    grouped in classes of equal normalised text (16 bytes of blake2b, not Python's salted hash);
    per class: its LSH band keys in memory, its shingle ids and normalised text in a TextFile.
    The band keys of all classes, sorted, give each class the classes it shares a key with: its
    LSH candidates."""

    def __init__(self, cands: Candidates, threshold: float, directory: str | Path | None = None):
        self.threshold = threshold
        self.of_text = {name: array("i", [-1]) * (2 * cands.size(name)) for name in TRAIN_SPLITS}  # (pos, field)
        self.ref_classes = array("i")
        self.bands = array("q")  # BANDS per class (zeros for a class without shingles)
        self.has_bands = bytearray()
        self.file = TextFile(directory)
        self._by_digest: dict[bytes, int] = {}
        self._keys, self._owners = np.empty(0, np.int64), np.empty(0, np.int32)  # all band keys, sorted; their classes
        self._shares = np.empty(0, bool)  # per class: some band key of it is another class's too

    def __len__(self) -> int:
        return len(self.has_bands)

    def _class_of(self, text: str) -> int:
        norm = normalise_instruction(text)
        digest = hashlib.blake2b(norm.encode("utf-8"), digest_size=16).digest()
        c = self._by_digest.setdefault(digest, len(self))
        if c == len(self):  # a new class
            ids = shingle_ids(shingles(norm))
            self.bands.extend(band_keys(signature(ids)) if ids else [0] * BANDS)
            self.has_bands.append(bool(ids))
            self.file.append(ids, norm)
        return c

    def add_texts(self, references, wanted: dict[str, list[int]], source: TextSource) -> None:
        """Every reference and the texts of the wanted candidates, once; then the band index."""
        self.ref_classes.extend(self._class_of(text) for text in references)
        for split, pos, row in source.read_texts(wanted):
            for f, name in enumerate(_fields(split, row)):
                self.of_text[split][2 * pos + f] = self._class_of(row[name])
        self._by_digest = {}  # classes are formed: the digests are not needed any more
        self.file.flush()
        self._index_bands()

    def _index_bands(self) -> None:
        classes = np.flatnonzero(np.frombuffer(self.has_bands, np.uint8))
        keys = np.frombuffer(self.bands, np.int64).reshape(-1, BANDS)[classes].ravel()
        order = np.argsort(keys, kind="stable")
        self._keys, self._owners = keys[order], np.repeat(classes.astype(np.int32), BANDS)[order]
        shared = np.zeros(len(keys), bool)  # a key that is there more than once
        shared[1:] = self._keys[1:] == self._keys[:-1]
        shared[:-1] |= shared[1:].copy()
        self._shares = np.zeros(len(self), bool)
        self._shares[self._owners[shared]] = True

    def texts(self, key: Key) -> list[tuple[str, int]]:
        """The key's (field, text class) pairs: the texts rule 4 compares for it."""
        of = self.of_text[key[0]]
        out = [("prompt", of[2 * key[1]])]
        if of[2 * key[1] + 1] >= 0:
            out.append(("prompt2", of[2 * key[1] + 1]))
        assert out[0][1] >= 0, f"no text read for candidate {key}"
        return out

    def neighbours(self, c: int) -> set[int]:
        """The other classes that share an LSH band key with class c."""
        if not self._shares[c]:
            return set()
        mine = np.frombuffer(self.bands, np.int64)[c * BANDS:(c + 1) * BANDS]
        lo, hi = np.searchsorted(self._keys, mine, "left"), np.searchsorted(self._keys, mine, "right")
        out = {o for a, b in zip(lo.tolist(), hi.tolist()) if b - a > 1 for o in self._owners[a:b].tolist()}
        out.discard(c)
        return out

    def similarity(self, c: int, others: list[int]) -> list[float]:
        """The Jaccard of class c with each of `others` (near_duplicates.similarity), or 0.0 where
        the sizes alone rule a match out: the Jaccard of two sets is at most the smaller size over
        the larger, and below threshold - BORDER the id Jaccard decides (no string recheck), so
        such a pair is below the threshold whatever its ids; they are not read."""
        n_c, ids_c = self.file.size(c), None
        out = []
        for o in others:
            n_o = self.file.size(o)
            if min(n_c, n_o) < (self.threshold - BORDER) * max(n_c, n_o):
                out.append(0.0)
                continue
            ids_c = ids_c if ids_c is not None else set(self.file.ids(c))
            out.append(similarity(ids_c, self.file.ids(o), self.threshold,
                                   lambda o=o: (self.file.norm(c), self.file.norm(o))))
        return out


class _ClassIndex:
    """The texts added so far, over the classes of a _TextTable: a text is found exactly when its
    class was added, else as the most similar added class among its neighbours at or above the
    threshold (ties: the earliest added)."""

    def __init__(self, table: _TextTable):
        self.table = table
        self.first = array("i", [-1]) * len(table)  # per class: its entry number, -1 when not added
        self.labels: list[str] = []

    def add(self, c: int, label: str) -> None:
        if self.first[c] < 0:
            self.first[c] = len(self.labels)
            self.labels.append(label)

    def find(self, c: int) -> tuple[str, str] | None:
        if self.first[c] >= 0:
            return self.labels[self.first[c]], "exact"
        others = [o for o in self.table.neighbours(c) if self.first[o] >= 0]
        if not others:
            return None
        best = None
        for o, j in zip(others, self.table.similarity(c, others)):
            entry = self.first[o]
            if j >= self.table.threshold and (best is None or j > best[1] or (j == best[1] and entry < best[0])):
                best = (entry, j)
        if best is None:
            return None
        return self.labels[best[0]], f"jaccard {best[1]:.3f}"


def stream_splits(cands: Candidates, source: TextSource, config: SplitConfig = SplitConfig(),
                  reference_instructions: list[str] | tuple[str, ...] = (),
                  workdir: str | Path | None = None) -> Iterator[tuple]:
    """build_splits for rows that stay where they are: from the small records of `cands` and the
    texts `source` reads once, every candidate's place as ("keep", key, split) or ("reject", key,
    record), in the order build_splits fills its lists. In memory: the records and, per distinct
    text, its band keys and a few offsets; the shingles wait in a temporary file in `workdir`."""
    plan = _Plan(cands, config)
    table = _TextTable(cands, config.near_duplicate_threshold, workdir)
    try:
        table.add_texts(reference_instructions, plan.compared_rows(), source)
        ref_index = _ClassIndex(table)
        for i, c in enumerate(table.ref_classes):
            ref_index.add(c, f"#{i}")
        yield from _decide(plan, table.texts, _ClassIndex(table), ref_index, _ClassIndex(table))
    finally:
        table.file.close()


# --- rule 4 and the outcome of every row ---------------------------------------------------------

def _decide(plan: _Plan, texts, eval_index, ref_index, train_index) -> Iterator[tuple]:
    """Every candidate's place, in the order the rules reach it: ("keep", key, split) or
    ("reject", key, {"row_id", "seed_id", "split", "reason", "detail"}). `texts(key)` gives the
    key's (field, text class) pairs, which its indexes (_ClassIndex) take."""
    cands = plan.cands
    placed = {name: bytearray(cands.size(name)) for name in TRAIN_SPLITS}

    def place(key: Key) -> None:
        assert not placed[key[0]][key[1]], f"candidate {key} placed twice"
        placed[key[0]][key[1]] = 1

    def keep(key: Key, split: str) -> tuple:
        place(key)
        return "keep", key, split

    def reject(key: Key, reason: str, detail: str = "", split: str | None = None) -> tuple:
        place(key)
        return "reject", key, {"row_id": cands.row_id(key), "seed_id": cands.seed_id(key), "split": split or key[0],
                               "reason": reason, "detail": detail}

    # 1b/2. eval rows (deduplicated among themselves); the other rows of eval seeds.
    for k, group in plan.groups():
        if plan.outcome[k] != _EVAL:
            continue
        first, *extra = group["sft"]
        row_id = cands.row_id(first)
        [(_, t)] = texts(first)  # an sft row: its prompt
        hit = eval_index.find(t)
        if hit:
            yield reject(first, "duplicate_instruction", f"prompt matches eval row {hit[0]} ({hit[1]})", split="eval")
        else:
            yield keep(first, "eval")
            eval_index.add(t, row_id)
        for key in extra:
            yield reject(key, "seed_in_eval", "another sft row of this seed is in eval")
        for name in ("dpo", "iopo"):
            for key in group.get(name, ()):
                yield reject(key, "seed_in_eval", f"eval row {row_id}")

    # 3. the rows of each train seed outside its split.
    for k, group in plan.groups():
        outcome = plan.outcome[k]
        if outcome == _DISABLED:
            for keys in group.values():
                for key in keys:
                    yield reject(key, "split_disabled", f"weight of {key[0]} is 0 and the seed has no other split")
        elif outcome >= 0:
            chosen = TRAIN_SPLITS[outcome]
            for name, keys in group.items():
                if name != chosen:
                    for key in keys:
                        yield reject(key, f"seed_assigned_to_{chosen}", f"{len(group[chosen])} row(s) in {chosen}")

    # 4. decontamination and dedupe of train rows, in seed order.
    for key in plan.train_rows():
        pairs = texts(key)
        verdict = None
        for reason, index, what in (("contaminates_eval", eval_index, "eval row"),
                                    ("contaminates_trace_eval", ref_index, "official eval instruction"),
                                    ("duplicate_instruction", train_index, "train row")):
            hits = [(f, hit) for f, t in pairs if (hit := index.find(t))]
            if hits:
                f, (label, how) = min(hits, key=lambda h: h[1][1] != "exact")  # an exact hit first
                if reason == "duplicate_instruction" and how != "exact":
                    reason = "near_duplicate_instruction"
                verdict = (reason, f"{f} matches {what} {label} ({how})")
                break
        if verdict:
            yield reject(key, *verdict)
        else:
            yield keep(key, key[0])
            for f, t in pairs:
                train_index.add(t, cands.row_id(key))

    # 5. accounting: every candidate row in exactly one place.
    missing = sum(len(flags) - sum(flags) for flags in placed.values())
    assert not missing, f"{missing} candidate rows unaccounted for"


def build_splits(candidates: dict[str, list[dict]], config: SplitConfig = SplitConfig(),
                 reference_instructions: list[str] | tuple[str, ...] = ()) -> SplitResult:
    """The splits of candidate rows held in memory: stream_splits over them, the rows themselves
    gathered into the result."""
    unknown = set(candidates) - set(TRAIN_SPLITS)
    if unknown:
        raise ValueError(f"candidates: unknown splits {sorted(unknown)}; expected {TRAIN_SPLITS}")
    cands = {name: list(candidates.get(name) or ()) for name in TRAIN_SPLITS}

    class Rows:  # a TextSource over the rows in memory
        def read_texts(self, wanted: dict[str, list[int]]) -> Iterator[tuple[str, int, dict]]:
            return ((split, pos, cands[split][pos]) for split, positions in wanted.items() for pos in positions)

    return collect(stream_splits(Candidates.from_rows(cands), Rows(), config, reference_instructions), cands)


def collect(events: Iterator[tuple], cands: dict[str, list[dict]]) -> SplitResult:
    """The rows of `cands` gathered where the events (stream_splits') place them."""
    splits: dict[str, list[dict]] = {name: [] for name in ALL_SPLITS}
    rejects: list[dict] = []
    for event in events:
        if event[0] == "keep":
            (split, pos), name = event[1], event[2]
            splits[name].append(cands[split][pos])
        else:
            rejects.append(event[2])
    assert sum(len(rows) for rows in splits.values()) + len(rejects) == sum(len(rows) for rows in cands.values())
    return SplitResult(splits=splits, rejects=rejects)
