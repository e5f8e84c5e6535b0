"""The Trace constraint taxonomy (5 types x 26 dimensions) as data, loaded and validated.

The data lives in ``taxonomy/taxonomy.yaml`` (types, dimensions, definitions, the Chinese
``levels2`` labels of the official eval set) and ``taxonomy/paper_stats.yaml`` (the paper's
histograms and shares). This module only reads and checks them; it does not hard-code the
5/26 counts so a user may extend the taxonomy.

    >>> tax = load_taxonomy()
    >>> tax.dimension("numerical").zh
    '数值约束'
    >>> tax.by_zh("包含约束").id
    'inclusion'
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from flows.errors import UserError

__all__ = [
    "TAXONOMY_DIR",
    "DEFAULT_TAXONOMY_PATH",
    "DEFAULT_PAPER_STATS_PATH",
    "TaxonomyError",
    "ConstraintType",
    "Dimension",
    "Taxonomy",
    "load_taxonomy",
    "load_paper_stats",
    "train_count_distribution",
]

TAXONOMY_DIR = Path(__file__).resolve().parent.parent / "taxonomy"
DEFAULT_TAXONOMY_PATH = TAXONOMY_DIR / "taxonomy.yaml"
DEFAULT_PAPER_STATS_PATH = TAXONOMY_DIR / "paper_stats.yaml"


class TaxonomyError(UserError, ValueError):
    """A taxonomy or paper-stats file is malformed. The message names the file and entry."""


@dataclass(frozen=True)
class ConstraintType:
    id: str
    name: str
    name_zh: str
    share: float  # the paper's percent of eval constraints


@dataclass(frozen=True)
class Dimension:
    id: str
    type: str  # a ConstraintType id
    name: str
    zh: str  # the label exactly as the eval set's levels2 writes it
    definition: str
    definition_zh: str
    rule_checkable: bool
    eval_share: float  # the paper's percent of eval constraints
    examples: tuple[str, ...]


@dataclass(frozen=True)
class Taxonomy:
    version: str
    types: tuple[ConstraintType, ...]
    dimensions: tuple[Dimension, ...]  # in file order
    content_hash: str  # sha256 of the file bytes, first 16 hex digits
    path: Path | None = None

    @property
    def version_id(self) -> str:
        """What rows record: the declared version and the hash of the exact file."""
        return f"{self.version}@{self.content_hash}"

    @property
    def ids(self) -> tuple[str, ...]:
        """Dimension ids in file order."""
        return tuple(d.id for d in self.dimensions)

    @property
    def type_ids(self) -> tuple[str, ...]:
        return tuple(t.id for t in self.types)

    def dimension(self, id: str) -> Dimension:
        for d in self.dimensions:
            if d.id == id:
                return d
        raise KeyError(f"unknown dimension id {id!r}")

    def type(self, id: str) -> ConstraintType:
        for t in self.types:
            if t.id == id:
                return t
        raise KeyError(f"unknown constraint type id {id!r}")

    def by_zh(self, label: str) -> Dimension | None:
        """The dimension whose Chinese label is ``label`` (surrounding whitespace ignored)."""
        label = label.strip()
        for d in self.dimensions:
            if d.zh == label:
                return d
        return None

    def dimensions_of(self, type_id: str) -> tuple[Dimension, ...]:
        return tuple(d for d in self.dimensions if d.type == type_id)


# --------------------------------------------------------------------------- validation

_TYPE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "name": str,
    "name_zh": str,
    "share": (int, float),
}
_DIM_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": str,
    "type": str,
    "name": str,
    "zh": str,
    "definition": str,
    "definition_zh": str,
    "rule_checkable": bool,
    "eval_share": (int, float),
    "examples": list,
}


def _tname(t: type | tuple[type, ...]) -> str:
    if isinstance(t, tuple):
        return "number" if set(t) == {int, float} else "/".join(x.__name__ for x in t)
    return {list: "list", str: "string", bool: "bool"}.get(t, t.__name__)


def _check_entry(path: Path, where: str, entry: Any, fields: dict) -> None:
    if not isinstance(entry, dict):
        raise TaxonomyError(f"{path}: {where}: expected a mapping, got {type(entry).__name__}")
    for key, want in fields.items():
        if key not in entry or entry[key] is None:
            raise TaxonomyError(f"{path}: {where}: missing field {key!r}")
        val = entry[key]
        # bool is an int subclass: reject it for numbers, and ints for bools
        if isinstance(val, bool) and want is not bool:
            ok = False
        else:
            ok = isinstance(val, want)
        if not ok:
            raise TaxonomyError(
                f"{path}: {where}: field {key!r} must be {_tname(want)}, "
                f"got {type(val).__name__} {val!r}"
            )
        if want is str and not val.strip():
            raise TaxonomyError(f"{path}: {where}: field {key!r} is empty")
    # Extra keys are allowed (ignored) so people can annotate entries while refining.


def _where(kind: str, i: int, entry: Any) -> str:
    ident = entry.get("id") if isinstance(entry, dict) else None
    return f"{kind}[{i}]" + (f" (id {ident!r})" if ident is not None else "")


def _parse(path: Path, raw: bytes) -> Taxonomy:
    try:
        doc = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        msg = " ".join(str(e).split())
        raise TaxonomyError(f"{path}: invalid YAML: {msg}") from None
    if not isinstance(doc, dict):
        raise TaxonomyError(f"{path}: top level must be a mapping")
    for key in ("version", "types", "dimensions"):
        if key not in doc or doc[key] is None:
            raise TaxonomyError(f"{path}: missing top-level field {key!r}")
    version = doc["version"]
    if isinstance(version, bool) or not isinstance(version, (str, int, float)):
        raise TaxonomyError(f"{path}: top-level 'version' must be a string")
    for key in ("types", "dimensions"):
        if not isinstance(doc[key], list) or not doc[key]:
            raise TaxonomyError(f"{path}: top-level {key!r} must be a non-empty list")

    types: list[ConstraintType] = []
    seen_type: set[str] = set()
    for i, e in enumerate(doc["types"]):
        where = _where("types", i, e)
        _check_entry(path, where, e, _TYPE_FIELDS)
        if e["id"] in seen_type:
            raise TaxonomyError(f"{path}: {where}: duplicate type id {e['id']!r}")
        seen_type.add(e["id"])
        types.append(ConstraintType(e["id"], e["name"], e["name_zh"], float(e["share"])))

    dims: list[Dimension] = []
    seen_id: set[str] = set()
    seen_zh: dict[str, str] = {}
    for i, e in enumerate(doc["dimensions"]):
        where = _where("dimensions", i, e)
        _check_entry(path, where, e, _DIM_FIELDS)
        if e["id"] in seen_id:
            raise TaxonomyError(f"{path}: {where}: duplicate dimension id {e['id']!r}")
        if e["type"] not in seen_type:
            raise TaxonomyError(
                f"{path}: {where}: unknown type {e['type']!r} (known: {', '.join(sorted(seen_type))})"
            )
        zh = e["zh"].strip()
        if zh in seen_zh:
            raise TaxonomyError(
                f"{path}: {where}: duplicate zh label {zh!r} (also on {seen_zh[zh]!r})"
            )
        examples = e["examples"]
        if not all(isinstance(x, str) and x.strip() for x in examples):
            raise TaxonomyError(f"{path}: {where}: field 'examples' must be a list of non-empty strings")
        seen_id.add(e["id"])
        seen_zh[zh] = e["id"]
        dims.append(
            Dimension(
                id=e["id"],
                type=e["type"],
                name=e["name"].strip(),
                zh=zh,
                definition=" ".join(e["definition"].split()),
                definition_zh=e["definition_zh"].strip(),
                rule_checkable=e["rule_checkable"],
                eval_share=float(e["eval_share"]),
                examples=tuple(x.strip() for x in examples),
            )
        )

    return Taxonomy(
        version=str(version),
        types=tuple(types),
        dimensions=tuple(dims),
        content_hash=hashlib.sha256(raw).hexdigest()[:16],
        path=path,
    )


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Load and validate a taxonomy YAML (default: the repo's taxonomy/taxonomy.yaml)."""
    p = Path(path) if path is not None else DEFAULT_TAXONOMY_PATH
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise TaxonomyError(f"{p}: cannot read: {e.strerror or e}") from None
    return _parse(p, raw)


# --------------------------------------------------------------------------- paper stats


def load_paper_stats(path: str | Path | None = None) -> dict:
    """The paper's numbers (default: the repo's taxonomy/paper_stats.yaml) as a plain dict.

    Histogram keys are ints (constraint counts)."""
    p = Path(path) if path is not None else DEFAULT_PAPER_STATS_PATH
    try:
        doc = yaml.safe_load(p.read_bytes())
    except OSError as e:
        raise TaxonomyError(f"{p}: cannot read: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise TaxonomyError(f"{p}: invalid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(doc, dict):
        raise TaxonomyError(f"{p}: top level must be a mapping")
    for split in ("train", "eval"):
        sec = doc.get(split)
        if not isinstance(sec, dict) or not isinstance(sec.get("constraint_count_hist"), dict):
            raise TaxonomyError(f"{p}: missing {split}.constraint_count_hist")
        hist = {}
        for k, v in sec["constraint_count_hist"].items():
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise TaxonomyError(f"{p}: {split}.constraint_count_hist[{k!r}]: count must be a non-negative int")
            try:
                hist[int(k)] = v
            except (TypeError, ValueError):
                raise TaxonomyError(f"{p}: {split}.constraint_count_hist: key {k!r} is not an int") from None
        sec["constraint_count_hist"] = dict(sorted(hist.items()))
    return doc


def train_count_distribution(path: str | Path | None = None) -> dict[int, float]:
    """The paper's train constraints-per-instruction histogram, normalised to sum to 1."""
    hist = load_paper_stats(path)["train"]["constraint_count_hist"]
    total = sum(hist.values())
    if total <= 0:
        raise TaxonomyError(f"{path or DEFAULT_PAPER_STATS_PATH}: train.constraint_count_hist is empty")
    return {k: v / total for k, v in hist.items()}
