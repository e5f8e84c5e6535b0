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
"""
from __future__ import annotations

import hashlib
import json
import sys
import unicodedata
import zlib
from array import array
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

__all__ = [
    "TRAIN_SPLITS",
    "SplitConfig",
    "SplitResult",
    "build_splits",
    "normalise_instruction",
    "official_eval_instructions",
]

TRAIN_SPLITS = ("sft", "dpo", "iopo")
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


class _Text:
    """An instruction text prepared once: normalised form, shingles, shingle ids (CRC-32 of each
    shingle), LSH band keys of their MinHash."""
    __slots__ = ("norm", "shingles", "ids", "bands")

    def __init__(self, text: str):
        self.norm = normalise_instruction(text)
        self.shingles = _shingles(self.norm)
        crc = zlib.crc32
        self.ids = {crc(s.encode("utf-8")) for s in self.shingles}
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
            j = _jaccard(t.ids, self.ids[i])
            if abs(j - self.threshold) < BORDER:
                j = _jaccard(t.shingles, _shingles(self.norms[i]))
            if j >= self.threshold and (best is None or j > best[1]):
                best = (i, j)
        if best is None:
            return None
        return self.labels[best[0]], f"jaccard {best[1]:.3f}"


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


def _pick_eval(pool: dict[int, list[str]], target: int, histogram: dict[int, float]) -> list[str]:
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


def build_splits(candidates: dict[str, list[dict]], config: SplitConfig = SplitConfig(),
                 reference_instructions: list[str] | tuple[str, ...] = ()) -> SplitResult:
    unknown = set(candidates) - set(TRAIN_SPLITS)
    if unknown:
        raise ValueError(f"candidates: unknown splits {sorted(unknown)}; expected {TRAIN_SPLITS}")
    cands = {name: list(candidates.get(name) or ()) for name in TRAIN_SPLITS}

    # Every candidate is (split, position); `placed` records where it ended, exactly once.
    placed: dict[tuple[str, int], str] = {}
    splits: dict[str, list[dict]] = {name: [] for name in (*TRAIN_SPLITS, "eval")}
    rejects: list[dict] = []

    def keep(key: tuple[str, int], split: str) -> None:
        assert key not in placed, f"candidate {key} placed twice"
        placed[key] = split
        splits[split].append(cands[key[0]][key[1]])

    def reject(key: tuple[str, int], reason: str, detail: str = "", split: str | None = None) -> None:
        assert key not in placed, f"candidate {key} placed twice"
        placed[key] = "rejects"
        row = cands[key[0]][key[1]]
        rejects.append({"row_id": row["row_id"], "seed_id": row["seed_id"], "split": split or key[0],
                        "reason": reason, "detail": detail})

    # Rows per seed per split, each list in a deterministic order (row_id, then position).
    by_seed: dict[str, dict[str, list[tuple[str, int]]]] = {}
    for name in TRAIN_SPLITS:
        for i, row in enumerate(cands[name]):
            by_seed.setdefault(row["seed_id"], {}).setdefault(name, []).append((name, i))
    for per_split in by_seed.values():
        for keys in per_split.values():
            keys.sort(key=lambda k: (cands[k[0]][k[1]]["row_id"], k[1]))
    rank = {s: _rank(s, config.seed) for s in by_seed}
    seed_order = sorted(by_seed, key=lambda s: (rank[s], s))

    # 1. eval seeds, stratified by the constraint count of the seed's first sft row.
    n_seeds = len(seed_order)
    cap = int(config.eval_fraction * n_seeds + 1e-9)
    if n_seeds >= 2 and config.eval_size > 0:
        cap = max(cap, 1)
    pool: dict[int, list[str]] = {}
    for s in seed_order:
        if "sft" in by_seed[s]:
            first = by_seed[s]["sft"][0]
            pool.setdefault(len(cands["sft"][first[1]]["constraints"] or ()), []).append(s)
    target = min(config.eval_size, cap, sum(len(v) for v in pool.values()))
    histogram = config.eval_histogram if config.eval_histogram is not None else _default_eval_histogram()
    eval_seeds = set(_pick_eval(pool, target, histogram))

    # 1b/2. eval rows (deduplicated among themselves); the other rows of eval seeds.
    eval_index = _Index(config.near_duplicate_threshold)
    for s in seed_order:
        if s not in eval_seeds:
            continue
        first, *extra = by_seed[s]["sft"]
        row = cands["sft"][first[1]]
        t = _Text(row["prompt"])
        hit = eval_index.find(t)
        if hit:
            reject(first, "duplicate_instruction", f"prompt matches eval row {hit[0]} ({hit[1]})", split="eval")
        else:
            keep(first, "eval")
            eval_index.add(t, row["row_id"])
        for key in extra:
            reject(key, "seed_in_eval", "another sft row of this seed is in eval")
        for name in ("dpo", "iopo"):
            for key in by_seed[s].get(name, ()):
                reject(key, "seed_in_eval", f"eval row {row['row_id']}")

    # 3. each remaining seed to one train split, balancing assigned rows / weight.
    weights = {name: float(config.weights.get(name, 0.0)) for name in TRAIN_SPLITS}
    assigned = {name: 0 for name in TRAIN_SPLITS}
    train_keys: list[tuple[str, int]] = []
    for s in seed_order:
        if s in eval_seeds:
            continue
        options = [name for name in TRAIN_SPLITS if name in by_seed[s] and weights[name] > 0]
        if not options:
            for keys in by_seed[s].values():
                for key in keys:
                    reject(key, "split_disabled", f"weight of {key[0]} is 0 and the seed has no other split")
            continue
        chosen = min(options, key=lambda n: (assigned[n] / weights[n], TRAIN_SPLITS.index(n)))
        assigned[chosen] += len(by_seed[s][chosen])
        for name, keys in by_seed[s].items():
            if name == chosen:
                train_keys.extend(keys)
            else:
                for key in keys:
                    reject(key, f"seed_assigned_to_{chosen}", f"{len(by_seed[s][chosen])} row(s) in {chosen}")

    # 4. decontamination and dedupe of train rows, in seed order.
    ref_index = _Index(config.near_duplicate_threshold)
    for i, text in enumerate(reference_instructions):
        ref_index.add(_Text(text), f"#{i}")
    train_index = _Index(config.near_duplicate_threshold)
    for key in train_keys:
        row = cands[key[0]][key[1]]
        fields = ["prompt", "prompt2"] if key[0] == "iopo" and row.get("prompt2") is not None else ["prompt"]
        texts = [(f, _Text(row[f])) for f in fields]
        verdict = None
        for reason, index, what in (("contaminates_eval", eval_index, "eval row"),
                                    ("contaminates_trace_eval", ref_index, "official eval instruction"),
                                    ("duplicate_instruction", train_index, "train row")):
            hits = [(f, hit) for f, t in texts if (hit := index.find(t))]
            if hits:
                f, (label, how) = min(hits, key=lambda h: h[1][1] != "exact")  # an exact hit first
                if reason == "duplicate_instruction" and how != "exact":
                    reason = "near_duplicate_instruction"
                verdict = (reason, f"{f} matches {what} {label} ({how})")
                break
        if verdict:
            reject(key, *verdict)
        else:
            keep(key, key[0])
            for f, t in texts:
                train_index.add(t, row["row_id"])

    # 5. accounting: every candidate row in exactly one place.
    total = sum(len(rows) for rows in cands.values())
    assert len(placed) == total, f"{total - len(placed)} candidate rows unaccounted for"
    assert sum(len(rows) for rows in splits.values()) + len(rejects) == total
    return SplitResult(splits=splits, rejects=rejects)
