"""The in-memory implementation of rule 4 that flows/splits.py had before its one streaming
execution: each text prepared as it comes (`_Text`) into indexes held in memory (`_Index`), over
the same plan and decisions (split_plan._Plan, splits._decide). tests/test_splits_stream.py holds
the streaming execution to it: same candidates, same Jaccard, same order, the same result."""
from __future__ import annotations

from array import array

from flows.near_duplicates import band_keys, normalise_instruction, shingle_ids, shingles, signature, similarity
from flows.split_plan import TRAIN_SPLITS, Candidates, Key, SplitConfig, _Plan
from flows.splits import SplitResult, _decide, _fields, collect


class _Text:
    """An instruction text prepared once: normalised form, shingle ids (CRC-32 of each shingle),
    LSH band keys of their MinHash."""
    __slots__ = ("norm", "ids", "bands")

    def __init__(self, text: str):
        self.norm = normalise_instruction(text)
        self.ids = shingle_ids(shingles(self.norm))
        self.bands = band_keys(signature(self.ids)) if self.ids else []


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
            j = similarity(t.ids, self.ids[i], self.threshold, lambda i=i: (t.norm, self.norms[i]))
            if j >= self.threshold and (best is None or j > best[1]):
                best = (i, j)
        if best is None:
            return None
        return self.labels[best[0]], f"jaccard {best[1]:.3f}"


def reference_splits(candidates: dict[str, list[dict]], config: SplitConfig = SplitConfig(),
                 reference_instructions: list[str] | tuple[str, ...] = ()) -> SplitResult:
    """The splits as the in-memory implementation took them, before the streaming one replaced it."""
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
    indexes = (_Index(config.near_duplicate_threshold), ref_index, _Index(config.near_duplicate_threshold))
    return collect(_decide(plan, texts, *indexes), cands)
