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

Near duplicates are found with MinHash + LSH banding (16 bands x 4) and confirmed by the Jaccard
of the shingle sets (as CRC-32 ids; on the strings themselves near the threshold). The MinHash is
one-permutation hashing with rotation densification (Li, Owen and Zhang 2012; Shrivastava and Li
2014): one hash per shingle spread over 64 bins instead of 64 salted hashes per shingle, which
keeps pure Python at about 2 s for 24k candidate rows and well under a minute for 100k.

How it runs. Rules 1-3 read no text: they are planned from small records per row (`Candidates`:
row id, seed id, constraint count; `_Plan`). Rule 4 compares a row only with rows kept before it.
`build_splits` holds the rows and prepares each text as it goes (`_Index`). `stream_splits`, for
rows that stay on disk (flows/outputs.py), reads the texts rule 4 compares once, in classes of
equal normalised text; keeps of a class its LSH band keys in memory and its shingle ids in a
temporary file (`_TextTable`); then takes the decisions in order, looking up a text's LSH
candidates among the classes kept so far in the sorted band keys and reading back only their
shingle ids for the Jaccard (`_ClassIndex`). Same candidates, same Jaccard, same order: the same
result, with memory for a few hundred bytes per distinct text.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import unicodedata
import zlib
from array import array
from dataclasses import dataclass, field
from functools import cache
from itertools import chain
from pathlib import Path
from typing import Callable, Iterator, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "TRAIN_SPLITS",
    "SplitConfig",
    "SplitResult",
    "build_splits",
    "Candidates",
    "normalise_instruction",
    "official_eval_instructions",
    "stream_splits",
    "TextSource",
]

TRAIN_SPLITS = ("sft", "dpo", "iopo")
ALL_SPLITS = (*TRAIN_SPLITS, "eval")  # where a candidate can end, in the order results list them
DEFAULT_EVAL_PATH = Path(__file__).resolve().parent.parent / "data" / "trace-eval" / "202409_trace_evaluation.jsonl"

SHINGLE = 5  # characters per shingle
NUM_BINS = 64  # MinHash signature length
BANDS, ROWS_PER_BAND = 16, 4  # LSH: P(candidate) = 1 - (1 - J^4)^16: 0.9998 at J=0.8, 0.12 at J=0.3
BORDER = 0.02  # Jaccard this close to the threshold is recomputed on shingle strings, not ids
_BIN_BITS = 6  # log2(NUM_BINS)
_VALUE_BITS = 64 - _BIN_BITS
_VALUE_MASK = (1 << _VALUE_BITS) - 1
_M64 = (1 << 64) - 1
_MIX = 0x9E3779B97F4A7C15  # odd 64-bit constant: spreads a 32-bit hash over the top bits
_EMPTY = 1 << 64  # above every value: marks an empty bin


@dataclass(frozen=True)
class SplitConfig:
    eval_size: int = 100  # rows in the held-out eval split (fewer when capped by eval_fraction)
    eval_fraction: float = 0.1  # never more than this share of all seeds goes to eval
    eval_histogram: dict[int, float] | None = None  # constraint-count shape of eval; None = official Trace eval
    weights: dict[str, float] = field(default_factory=lambda: {"sft": 1.0, "dpo": 1.0, "iopo": 1.0})
    near_duplicate_threshold: float = 0.8  # Jaccard similarity of character 5-gram shingles
    seed: int = 0

    def __post_init__(self):
        if self.eval_size < 0:
            raise ValueError(f"eval_size must be >= 0, got {self.eval_size}")
        if not 0 <= self.eval_fraction <= 1:
            raise ValueError(f"eval_fraction must be in [0, 1], got {self.eval_fraction}")
        if not 0 < self.near_duplicate_threshold <= 1:
            raise ValueError(f"near_duplicate_threshold must be in (0, 1], got {self.near_duplicate_threshold}")
        unknown = set(self.weights) - set(TRAIN_SPLITS)
        if unknown or any(w < 0 for w in self.weights.values()):
            raise ValueError(f"weights: keys among {TRAIN_SPLITS}, values >= 0; got {self.weights}")
        if self.eval_histogram is not None and any(v < 0 for v in self.eval_histogram.values()):
            raise ValueError("eval_histogram: values must be >= 0")


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


# --- text normalisation, shingles, MinHash ------------------------------------------------------

@cache
def _punctuation_table() -> dict[int, str]:
    """Every Unicode punctuation code point (categories P*) -> a space."""
    return {cp: " " for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp))[0] == "P"}


def normalise_instruction(text: str) -> str:
    """NFKC, casefold, punctuation removed (as a word break), whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_punctuation_table())
    return " ".join(text.split())


def _shingles(norm: str) -> set[str]:
    if len(norm) <= SHINGLE:
        return {norm} if norm else set()
    return {norm[i:i + SHINGLE] for i in range(len(norm) - SHINGLE + 1)}


def _jaccard(a: set, b) -> float:
    inter = len(a.intersection(b))
    return inter / (len(a) + len(b) - inter)


def _signature(ids: set[int]) -> list[int]:
    """One-permutation MinHash: each shingle's hash picks a bin by its top bits and competes for
    that bin's minimum by the rest; empty bins borrow the next filled bin's value (rotation)."""
    sig = [_EMPTY] * NUM_BINS
    for h in ids:
        x = (h + 1) * _MIX & _M64
        b, v = x >> _VALUE_BITS, x & _VALUE_MASK
        if v < sig[b]:
            sig[b] = v
    for i in range(NUM_BINS):
        if sig[i] == _EMPTY:
            for d in range(1, NUM_BINS):
                v = sig[(i + d) % NUM_BINS]
                if v <= _VALUE_MASK:  # a filled bin, not itself borrowed
                    sig[i] = v + d * (1 << _VALUE_BITS)  # offset by the distance, as in densification
                    break
    return sig


def _band_keys(sig: list[int]) -> list[int]:
    # hash() of a tuple of ints is deterministic across runs (only str/bytes hashing is salted);
    # a rare collision only adds a candidate, which the Jaccard check then rejects.
    r = ROWS_PER_BAND
    return [hash((b, *sig[b * r:(b + 1) * r])) for b in range(BANDS)]


def _shingle_ids(shingles: set[str]) -> set[int]:
    """Shingles as 4-byte ids (CRC-32): what MinHash and the first Jaccard check use."""
    crc = zlib.crc32
    return {crc(s.encode("utf-8")) for s in shingles}


def _similarity(ids_a: set[int], ids_b, threshold: float, norms: Callable[[], tuple[str, str]]) -> float:
    """The Jaccard that decides a near duplicate: of the shingle ids, or within BORDER of the
    threshold (where a CRC collision could tip it) of the shingle strings of the two `norms()`."""
    j = _jaccard(ids_a, ids_b)
    if abs(j - threshold) < BORDER:
        norm_a, norm_b = norms()
        j = _jaccard(_shingles(norm_a), _shingles(norm_b))
    return j


def _fields(split: str, row: dict) -> tuple[str, ...]:
    """The instruction texts rule 4 compares for a row: x1, and x2 of an iopo row that has one."""
    return ("prompt", "prompt2") if split == "iopo" and row.get("prompt2") is not None else ("prompt",)


class _Text:
    """An instruction text prepared once: normalised form, shingle ids (CRC-32 of each shingle),
    LSH band keys of their MinHash."""
    __slots__ = ("norm", "ids", "bands")

    def __init__(self, text: str):
        self.norm = normalise_instruction(text)
        self.ids = _shingle_ids(_shingles(self.norm))
        self.bands = _band_keys(_signature(self.ids)) if self.ids else []


class _Index:
    """Texts seen so far, searchable by exact normalised text and by Jaccard >= threshold.

    Per entry it keeps the normalised text and the shingle ids as 4-byte ints. LSH candidates
    are checked by the Jaccard of the id sets, and within BORDER of the threshold (where a
    CRC collision could matter) on the shingle strings themselves."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self.labels: list[str] = []
        self.norms: list[str] = []
        self.ids: list[array] = []
        self.exact: dict[str, int] = {}
        self.buckets: dict[int, int | list[int]] = {}

    def add(self, t: _Text, label: str) -> None:
        i = len(self.labels)
        self.labels.append(label)
        self.norms.append(t.norm)
        self.ids.append(array("I", t.ids))
        self.exact.setdefault(t.norm, i)
        for key in t.bands:
            cur = self.buckets.get(key)
            if cur is None:
                self.buckets[key] = i
            elif isinstance(cur, int):
                self.buckets[key] = [cur, i]
            else:
                cur.append(i)

    def find(self, t: _Text) -> tuple[str, str] | None:
        """(label of the matched entry, "exact" or "jaccard 0.xxx"), or None."""
        i = self.exact.get(t.norm)
        if i is not None:
            return self.labels[i], "exact"
        cands: set[int] = set()
        for key in t.bands:
            cur = self.buckets.get(key)
            if cur is None:
                continue
            if isinstance(cur, int):
                cands.add(cur)
            else:
                cands.update(cur)
        best = None
        for i in sorted(cands):
            j = _similarity(t.ids, self.ids[i], self.threshold, lambda i=i: (t.norm, self.norms[i]))
            if j >= self.threshold and (best is None or j > best[1]):
                best = (i, j)
        if best is None:
            return None
        return self.labels[best[0]], f"jaccard {best[1]:.3f}"


# --- candidates and the rules that read no text --------------------------------------------------

Key = tuple[str, int]  # a candidate: (split, position in that split's input)


# Batches of tiny shard files held before they are copied into one: each holds read buffers far
# larger than its rows (Candidates here, flows/outputs.py's _coalesce).
COMPACT_EVERY = 64


class Candidates:
    """What the split rules keep of each candidate row, per split in input order: its row id, its
    seed (a number into `seeds`, so a seed id is held once) and, for sft rows, the constraint
    count (it shapes eval). Held in Arrow and numpy arrays, a few dozen bytes a row, and never as
    a Python string per row: millions of small strings kept while the rows they were read from
    come and go would pin the interpreter's memory arenas. The row itself stays where it is."""

    def __init__(self):
        self._batches: dict[str, list[tuple[pa.Array, pa.Array]]] = {name: [] for name in TRAIN_SPLITS}
        self._pending: dict[str, list[tuple[pa.Array, pa.Array]]] = {name: [] for name in TRAIN_SPLITS}
        self._counts: list[np.ndarray] = []  # constraint counts of the sft batches
        self._sizes = dict.fromkeys(TRAIN_SPLITS, 0)
        self._arrays: tuple | None = None  # (row_ids, seeds, seed_nos, n_constraints), built when first read

    @classmethod
    def from_rows(cls, candidates: dict[str, list[dict]]) -> Candidates:
        out = cls()
        for name in TRAIN_SPLITS:
            rows = candidates.get(name) or ()
            out.add_batch(name, pa.array([r["row_id"] for r in rows], pa.string()),
                          pa.array([r["seed_id"] for r in rows], pa.string()),
                          np.array([len(r.get("constraints") or ()) for r in rows], np.int32))
        return out

    def add_batch(self, split: str, row_ids: pa.Array, seed_ids: pa.Array,
                  n_constraints: np.ndarray | None = None) -> None:
        """The next candidates of `split`, in input order (constraint counts for sft rows)."""
        batches, pending = self._batches[split], self._pending[split]
        pending.append((row_ids, seed_ids))
        if len(pending) == COMPACT_EVERY:  # copied out of the read buffers they point into
            batches.append((pa.concat_arrays([r for r, _ in pending]), pa.concat_arrays([s for _, s in pending])))
            pending.clear()
        if split == "sft":
            self._counts.append(np.asarray(n_constraints, np.int32))
        self._sizes[split] += len(row_ids)
        self._arrays = None

    def _built(self) -> tuple:
        if self._arrays is None:
            for name in TRAIN_SPLITS:
                self._batches[name] += self._pending[name]
                self._pending[name].clear()
            row_ids = {name: pa.chunked_array([r for r, _ in self._batches[name]], pa.string()).combine_chunks()
                       for name in TRAIN_SPLITS}
            seed_ids = pa.chunked_array([s for name in TRAIN_SPLITS for _, s in self._batches[name]], pa.string())
            seeds = pc.unique(seed_ids)
            numbers = pc.index_in(seed_ids, value_set=seeds).to_numpy(zero_copy_only=False).astype(np.int64)
            bounds = np.cumsum([0] + [self._sizes[name] for name in TRAIN_SPLITS])
            seed_nos = {name: numbers[bounds[i]:bounds[i + 1]] for i, name in enumerate(TRAIN_SPLITS)}
            counts = np.concatenate(self._counts) if self._counts else np.zeros(0, np.int32)
            self._arrays = (row_ids, seeds, seed_nos, counts)
        return self._arrays

    @property
    def row_ids(self) -> dict[str, pa.Array]:
        return self._built()[0]

    @property
    def seeds(self) -> pa.Array:
        """Every distinct seed id, in order of first appearance."""
        return self._built()[1]

    @property
    def seed_nos(self) -> dict[str, np.ndarray]:
        return self._built()[2]

    @property
    def n_constraints(self) -> np.ndarray:
        return self._built()[3]

    def size(self, split: str) -> int:
        return self._sizes[split]

    def row_id(self, key: Key) -> str:
        return self.row_ids[key[0]][key[1]].as_py()

    def seed_id(self, key: Key) -> str:
        return self.seeds[int(self.seed_nos[key[0]][key[1]])].as_py()


_EVAL, _DISABLED = -1, -2  # a seed's outcome when it is not a train split's index


def _group_by_seed(cands: Candidates, seed: int) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Seed ids in rank order, and every candidate as (split index, position) sorted by (seed rank,
    split, row id, position): the k-th seed's rows are [starts[k], starts[k + 1]). Sorted by Arrow,
    whose string order (UTF-8 bytes) is Python's (code points)."""
    ranked = pa.table({"rank": [_rank(s, seed) for s in cands.seeds.to_pylist()], "seed": cands.seeds})
    order = pc.sort_indices(ranked, [("rank", "ascending"), ("seed", "ascending")]).to_numpy()
    place = np.empty(len(order), np.int64)
    place[order] = np.arange(len(order))
    sizes = [cands.size(name) for name in TRAIN_SPLITS]
    members = pa.table({
        "seed": place[np.concatenate([cands.seed_nos[n] for n in TRAIN_SPLITS])],
        "split": np.repeat(np.arange(len(TRAIN_SPLITS), dtype=np.int8), sizes),
        "row_id": pa.concat_arrays([cands.row_ids[n] for n in TRAIN_SPLITS]),
        "pos": np.concatenate([np.arange(n, dtype=np.int64) for n in sizes]),
    })
    ranked = members.take(pc.sort_indices(members, [(c, "ascending") for c in ("seed", "split", "row_id", "pos")]))
    starts = np.searchsorted(ranked["seed"].to_numpy(), np.arange(len(order) + 1))
    return (cands.seeds.take(order).to_pylist(), ranked["split"].to_numpy(), ranked["pos"].to_numpy(), starts)


class _Plan:
    """Rules 1-3, which read no text: the seeds in rank order with their candidates per split
    (each list sorted by row id, then position), the eval seeds, and the split of every other
    seed (`outcome`: a TRAIN_SPLITS index, _EVAL or _DISABLED)."""

    def __init__(self, cands: Candidates, config: SplitConfig):
        self.cands = cands
        self.seed_order, self._split, self._pos, self._starts = _group_by_seed(cands, config.seed)
        self.outcome = array("b", [0]) * len(self.seed_order)
        for k in self._eval_seeds(config):
            self.outcome[k] = _EVAL
        self._assign(config)

    def group(self, k: int) -> dict[str, list[Key]]:
        """The k-th seed's candidates per split, splits in TRAIN_SPLITS order."""
        lo, hi = self._starts[k], self._starts[k + 1]
        out: dict[str, list[Key]] = {}
        for s, pos in zip(self._split[lo:hi].tolist(), self._pos[lo:hi].tolist()):
            out.setdefault(TRAIN_SPLITS[s], []).append((TRAIN_SPLITS[s], pos))
        return out

    def groups(self) -> Iterator[tuple[int, dict[str, list[Key]]]]:
        for k in range(len(self.seed_order)):
            yield k, self.group(k)

    def _eval_seeds(self, config: SplitConfig) -> list[int]:
        """1. eval seeds, stratified by the constraint count of the seed's first sft row."""
        n_seeds = len(self.seed_order)
        cap = int(config.eval_fraction * n_seeds + 1e-9)
        if n_seeds >= 2 and config.eval_size > 0:
            cap = max(cap, 1)
        pool: dict[int, list[int]] = {}
        for k in range(n_seeds):
            first = self._starts[k]
            if first < self._starts[k + 1] and self._split[first] == 0:  # sft sorts first
                pool.setdefault(int(self.cands.n_constraints[self._pos[first]]), []).append(k)
        target = min(config.eval_size, cap, sum(len(v) for v in pool.values()))
        histogram = config.eval_histogram if config.eval_histogram is not None else _default_eval_histogram()
        return _pick_eval(pool, target, histogram)

    def _assign(self, config: SplitConfig) -> None:
        """3. each remaining seed to one train split, balancing assigned rows / weight."""
        weights = {name: float(config.weights.get(name, 0.0)) for name in TRAIN_SPLITS}
        assigned = {name: 0 for name in TRAIN_SPLITS}
        for k, group in self.groups():
            if self.outcome[k] == _EVAL:
                continue
            options = [name for name in TRAIN_SPLITS if name in group and weights[name] > 0]
            if not options:
                self.outcome[k] = _DISABLED
                continue
            chosen = min(options, key=lambda n: (assigned[n] / weights[n], TRAIN_SPLITS.index(n)))
            assigned[chosen] += len(group[chosen])
            self.outcome[k] = TRAIN_SPLITS.index(chosen)

    def eval_rows(self) -> Iterator[Key]:
        """The sft row each eval seed offers to eval, in seed order."""
        for k, group in self.groups():
            if self.outcome[k] == _EVAL:
                yield group["sft"][0]

    def train_rows(self) -> Iterator[Key]:
        """The rows of each train seed's split, in seed order: the order rule 4 decides them in."""
        for k, group in self.groups():
            if self.outcome[k] >= 0:
                yield from group[TRAIN_SPLITS[self.outcome[k]]]

    def compared_rows(self) -> dict[str, list[int]]:
        """Positions per split of the rows whose texts rule 4 compares: eval rows and train rows."""
        rows: dict[str, list[int]] = {name: [] for name in TRAIN_SPLITS}
        for split, pos in chain(self.eval_rows(), self.train_rows()):
            rows[split].append(pos)
        return {name: sorted(positions) for name, positions in rows.items()}


# --- rule 4 and the outcome of every row ---------------------------------------------------------

def _decide(plan: _Plan, texts, eval_index, ref_index, train_index) -> Iterator[tuple]:
    """Every candidate's place, in the order the rules reach it: ("keep", key, split) or
    ("reject", key, {"row_id", "seed_id", "split", "reason", "detail"}). `texts(key)` gives the
    key's (field, text) pairs as its indexes take them (build_splits: _Text and _Index;
    stream_splits: text classes and _ClassIndex)."""
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
    """The splits of candidate rows held in memory (see stream_splits for rows that are not)."""
    unknown = set(candidates) - set(TRAIN_SPLITS)
    if unknown:
        raise ValueError(f"candidates: unknown splits {sorted(unknown)}; expected {TRAIN_SPLITS}")
    cands = {name: list(candidates.get(name) or ()) for name in TRAIN_SPLITS}
    plan = _Plan(Candidates.from_rows(cands), config)

    def texts(key: Key) -> list[tuple[str, _Text]]:
        row = cands[key[0]][key[1]]
        return [(f, _Text(row[f])) for f in _fields(key[0], row)]

    ref_index = _Index(config.near_duplicate_threshold)
    for i, text in enumerate(reference_instructions):
        ref_index.add(_Text(text), f"#{i}")
    splits: dict[str, list[dict]] = {name: [] for name in ALL_SPLITS}
    rejects: list[dict] = []
    indexes = (_Index(config.near_duplicate_threshold), ref_index, _Index(config.near_duplicate_threshold))
    for event in _decide(plan, texts, *indexes):
        if event[0] == "keep":
            (split, pos), name = event[1], event[2]
            splits[name].append(cands[split][pos])
        else:
            rejects.append(event[2])
    assert sum(len(rows) for rows in splits.values()) + len(rejects) == sum(len(rows) for rows in cands.values())
    return SplitResult(splits=splits, rejects=rejects)


# --- the same, streaming ------------------------------------------------------------------------

class TextSource(Protocol):
    def read_texts(self, wanted: dict[str, list[int]]) -> Iterator[tuple[str, int, dict]]:
        """(split, position, row) for every wanted position (sorted, per split), in any order;
        the row has at least `prompt` and, in iopo, `prompt2`."""


class _TextFile:
    """The shingle ids and normalised text of each text class, appended to an unnamed temporary
    file and read back by class when a Jaccard needs them: in memory, 16 bytes a class."""

    def __init__(self, directory: str | Path | None = None):
        self._file = tempfile.TemporaryFile(dir=directory)
        self._offsets = array("q")
        self._n_ids = array("i")
        self._n_bytes = array("i")  # of the normalised text, UTF-8
        self._end = 0

    def append(self, ids: set[int], norm: str) -> None:
        data, text = array("I", ids).tobytes(), norm.encode("utf-8")
        self._file.write(data + text)
        self._offsets.append(self._end)
        self._n_ids.append(len(ids))
        self._n_bytes.append(len(text))
        self._end += len(data) + len(text)

    def size(self, c: int) -> int:
        """How many shingle ids class c has (in memory: no read)."""
        return self._n_ids[c]

    def ids(self, c: int) -> array:
        out = array("I")
        out.frombytes(os.pread(self._file.fileno(), 4 * self._n_ids[c], self._offsets[c]))
        return out

    def norm(self, c: int) -> str:
        at = self._offsets[c] + 4 * self._n_ids[c]
        return os.pread(self._file.fileno(), self._n_bytes[c], at).decode("utf-8")

    def flush(self) -> None:  # before the first read
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class _TextTable:
    """The texts stream_splits compares, kept out of memory. Candidate texts and references are
    grouped in classes of equal normalised text (16 bytes of blake2b, not Python's salted hash);
    per class: its LSH band keys in memory, its shingle ids and normalised text in a _TextFile.
    The band keys of all classes, sorted, give each class the classes it shares a key with: the
    candidates _Index.find would check (its buckets are keyed by the key's value alone)."""

    def __init__(self, cands: Candidates, threshold: float, directory: str | Path | None = None):
        self.threshold = threshold
        self.of_text = {name: array("i", [-1]) * (2 * cands.size(name)) for name in TRAIN_SPLITS}  # (pos, field)
        self.ref_classes = array("i")
        self.bands = array("q")  # BANDS per class (zeros for a class without shingles)
        self.has_bands = bytearray()
        self.file = _TextFile(directory)
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
            ids = _shingle_ids(_shingles(norm))
            self.bands.extend(_band_keys(_signature(ids)) if ids else [0] * BANDS)
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
        """The key's (field, class) pairs, like build_splits' (field, _Text) pairs."""
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
        """The Jaccard of class c with each of `others`, as _Index.find computes it, or 0.0 where
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
            out.append(_similarity(ids_c, self.file.ids(o), self.threshold,
                                   lambda o=o: (self.file.norm(c), self.file.norm(o))))
        return out


class _ClassIndex:
    """_Index over the classes of a _TextTable: a text is found exactly when its class was added,
    else as the most similar added class among its neighbours (ties: the earliest added, as
    _Index takes the earliest entry). The same candidates, the same Jaccard, the same answer."""

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


# --- the splits ---------------------------------------------------------------------------------

def _rank(seed_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed_id}\x00{seed}".encode()).hexdigest()


def _default_eval_histogram() -> dict[int, float]:
    from flows.taxonomy import load_paper_stats
    return dict(load_paper_stats()["eval"]["constraint_count_hist"])


def _largest_remainder(total: int, weights: dict[int, float]) -> dict[int, int]:
    wsum = sum(weights.values())
    if total <= 0 or wsum <= 0:
        return {k: 0 for k in weights}
    quotas = {k: total * w / wsum for k, w in weights.items()}
    alloc = {k: int(q) for k, q in quotas.items()}
    left = total - sum(alloc.values())
    for k in sorted(quotas, key=lambda k: (-(quotas[k] - alloc[k]), k))[:left]:
        alloc[k] += 1
    return alloc


def _pick_eval(pool: dict[int, list], target: int, histogram: dict[int, float]) -> list:
    """Seeds from `pool` (constraint count -> seeds in rank order), `target` of them in all,
    shaped like `histogram`; a short bucket is filled from the nearest counts (ties: lower)."""
    alloc = _largest_remainder(target, {int(k): float(v) for k, v in histogram.items()})
    taken = {k: 0 for k in pool}
    deficit: dict[int, int] = {}
    for k, want in sorted(alloc.items()):
        got = min(want, len(pool.get(k, ())))
        if got:
            taken[k] = got
        if want > got:
            deficit[k] = want - got
    for k, need in sorted(deficit.items()):
        for _ in range(need):
            spare = [c for c in pool if taken[c] < len(pool[c])]
            if not spare:
                break
            c = min(spare, key=lambda c: (abs(c - k), c))
            taken[c] += 1
    return [s for c in sorted(pool) for s in pool[c][:taken[c]]]
