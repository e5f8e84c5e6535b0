"""The split plan: rules 1-3 of flows/splits.py, which read no text. From small records per
candidate row (`Candidates`: row id, seed, constraint count) it picks the eval seeds (stratified
by constraint count), and gives every other seed one train split (`_Plan`)."""
from __future__ import annotations

import hashlib
from array import array
from dataclasses import dataclass, field
from itertools import chain
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

TRAIN_SPLITS = ("sft", "dpo", "iopo")
ALL_SPLITS = (*TRAIN_SPLITS, "eval")  # where a candidate can end, in the order results list them


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


# --- candidates --------------------------------------------------

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
