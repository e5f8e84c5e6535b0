"""The shipped taxonomy, paper stats, vendored eval set and demo seeds."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from flows.taxonomy import (
    DEFAULT_TAXONOMY_PATH,
    ConstraintType,
    Dimension,
    Taxonomy,
    TaxonomyError,
    load_paper_stats,
    load_taxonomy,
    train_count_distribution,
)

REPO = Path(__file__).resolve().parent.parent
EVAL = REPO / "data" / "trace-eval" / "202409_trace_evaluation.jsonl"
SEEDS = REPO / "data" / "seeds" / "demo.jsonl"
EVAL_SHA256 = "ca9e7577ee0732021db49ba7cb6ad3632eadb8398b1129fe54d104ded41b78f4"
RULE_CHECKABLE = {
    "numerical", "output_format", "numbering_and_list", "hierarchical_structure",
    "inclusion", "exclusion", "multilingual", "template",
}


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return load_taxonomy()


@pytest.fixture(scope="module")
def eval_rows() -> list[dict]:
    with EVAL.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------- shipped taxonomy


def test_shipped_taxonomy_loads(tax):
    assert isinstance(tax, Taxonomy)
    assert tax.version
    assert len(tax.content_hash) == 16
    assert tax.content_hash == hashlib.sha256(DEFAULT_TAXONOMY_PATH.read_bytes()).hexdigest()[:16]
    assert all(isinstance(t, ConstraintType) for t in tax.types)
    assert all(isinstance(d, Dimension) for d in tax.dimensions)
    assert load_taxonomy(DEFAULT_TAXONOMY_PATH) == tax


def test_five_types_26_dimensions(tax):
    assert [t.id for t in tax.types] == ["content", "situation", "style", "format", "example"]
    assert len(tax.dimensions) == 26
    assert len(set(tax.ids)) == 26
    assert tax.ids == tuple(d.id for d in tax.dimensions)
    counts = {t.id: len(tax.dimensions_of(t.id)) for t in tax.types}
    assert counts == {"content": 6, "situation": 7, "style": 4, "format": 7, "example": 2}


def test_dimension_fields(tax):
    for d in tax.dimensions:
        assert d.id.isidentifier() and d.id == d.id.lower(), d.id
        assert d.definition and d.definition_zh and d.name and d.zh
        assert 1 <= len(d.examples) <= 2, d.id
        assert d.eval_share > 0
    assert {d.id for d in tax.dimensions if d.rule_checkable} == RULE_CHECKABLE


def test_lookup(tax):
    assert tax.dimension("numerical").zh == "数值约束"
    assert tax.dimension("nl_process_background").type == "situation"
    assert tax.by_zh("包含约束").id == "inclusion"
    assert tax.by_zh("markdown流程背景信息约束").id == "markdown_process_background"
    assert tax.by_zh("模版约束").id == "template"
    assert tax.by_zh("模板约束") is None
    assert tax.by_zh("nonsense") is None
    with pytest.raises(KeyError):
        tax.dimension("nonsense")


def test_type_shares_match_paper(tax):
    for t in tax.types:
        total = sum(d.eval_share for d in tax.dimensions_of(t.id))
        assert total == pytest.approx(t.share, abs=0.15), t.id
    assert sum(t.share for t in tax.types) == pytest.approx(100, abs=0.1)


def test_every_eval_label_maps_except_two_oddities(tax, eval_rows):
    unmapped = {
        (r["id"], label) for r in eval_rows for label in r["levels2"] if tax.by_zh(label) is None
    }
    assert unmapped == {("903", "输入格式约束"), ("951", "·")}
    used = {label for r in eval_rows for label in r["levels2"]}
    assert {d.zh for d in tax.dimensions} <= used  # every dimension occurs in the eval set


# --------------------------------------------------------------------------- validation


def _broken(tmp_path: Path, mutate) -> Path:
    doc = yaml.safe_load(DEFAULT_TAXONOMY_PATH.read_text(encoding="utf-8"))
    mutate(doc)
    p = tmp_path / "broken.yaml"
    p.write_text(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return p


def _error(path: Path) -> str:
    with pytest.raises(TaxonomyError) as ei:
        load_taxonomy(path)
    msg = str(ei.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


def test_duplicate_id(tmp_path):
    def mutate(doc):
        doc["dimensions"][3]["id"] = "theme"
    msg = _error(_broken(tmp_path, mutate))
    assert "dimensions[3]" in msg and "theme" in msg and "duplicate" in msg


def test_duplicate_zh(tmp_path):
    def mutate(doc):
        doc["dimensions"][5]["zh"] = doc["dimensions"][0]["zh"]
    msg = _error(_broken(tmp_path, mutate))
    assert "numerical" in msg and "主题约束" in msg and "duplicate" in msg


def test_unknown_type(tmp_path):
    def mutate(doc):
        doc["dimensions"][2]["type"] = "contnet"
    msg = _error(_broken(tmp_path, mutate))
    assert "inclusion" in msg and "contnet" in msg and "unknown type" in msg


def test_missing_zh(tmp_path):
    def mutate(doc):
        del doc["dimensions"][7]["zh"]
    msg = _error(_broken(tmp_path, mutate))
    assert "target_audience" in msg and "'zh'" in msg and "missing" in msg


def test_wrong_field_type(tmp_path):
    def mutate(doc):
        doc["dimensions"][0]["rule_checkable"] = "no"
    msg = _error(_broken(tmp_path, mutate))
    assert "theme" in msg and "rule_checkable" in msg


def test_invalid_yaml_and_missing_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("types: [\n", encoding="utf-8")
    _error(p)
    _error(tmp_path / "absent.yaml")


def test_extension_allowed(tmp_path):
    def mutate(doc):
        doc["dimensions"].append(dict(doc["dimensions"][0], id="input_format", zh="输入格式约束"))
    tax = load_taxonomy(_broken(tmp_path, mutate))
    assert len(tax.dimensions) == 27
    assert tax.by_zh("输入格式约束").id == "input_format"


# --------------------------------------------------------------------------- paper stats


def test_paper_stats(tax, eval_rows):
    stats = load_paper_stats()
    ev = stats["eval"]["constraint_count_hist"]
    tr = stats["train"]["constraint_count_hist"]
    assert sorted(ev) == list(range(1, 16)) and sorted(tr) == list(range(1, 16))
    assert sum(ev.values()) == 1042 and ev[1] == 200
    assert sum(tr.values()) == 119345
    from collections import Counter
    assert ev == dict(Counter(r["constraints_num"] for r in eval_rows))
    shares = stats["dimension_shares"]
    assert list(shares) == list(tax.ids)
    labels = Counter(label for r in eval_rows for label in r["levels2"])
    for d in tax.dimensions:
        assert shares[d.id]["count"] == labels[d.zh]
        assert shares[d.id]["paper_pct"] == d.eval_share
        assert shares[d.id]["eval_pct"] == pytest.approx(d.eval_share, abs=1.0)


def test_train_count_distribution():
    dist = train_count_distribution()
    assert sorted(dist) == list(range(1, 16))
    assert sum(dist.values()) == pytest.approx(1.0)
    assert max(dist, key=dist.get) == 4


# --------------------------------------------------------------------------- vendored data, seeds


def test_eval_file_unchanged(eval_rows):
    assert hashlib.sha256(EVAL.read_bytes()).hexdigest() == EVAL_SHA256
    assert len(eval_rows) == 1042
    assert (EVAL.parent / "LICENSE").read_text().count("Tongyi-CCAI") == 1
    assert (EVAL.parent / "official_iopo_example.json").is_file()


def test_demo_seeds():
    rows = [json.loads(line) for line in SEEDS.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert 25 <= len(rows) <= 40
    assert len({r["id"] for r in rows}) == len(rows)
    assert all(set(r) >= {"id", "text", "lang"} for r in rows)
    assert all(isinstance(r["text"], str) and r["text"].strip() for r in rows)
    assert {r["lang"] for r in rows} == {"zh", "en"}
    assert sorted(r["lang"] for r in rows[:6]) == ["en"] * 3 + ["zh"] * 3


def test_the_taxonomy_report_keeps_the_frequent_new_types_in_bounded_memory():
    from flows.report import taxonomy_report

    def rows():
        for i in range(3000):  # one frequent proposal among thousands of one-off names
            types = [{"name": f"one-off {i}", "description": "d"}]
            if i % 10 == 0:
                types.append({"name": "Emoji  Usage", "description": f"use emoji {i % 3}"})
            yield {"fit_dimensions": ["inclusion"], "new_constraint_types": types, "text": f"seed {i}"}

    report = taxonomy_report(rows(), load_taxonomy(), max_new_types=50)
    types = report["candidate_new_types"]
    assert len(types) == 50 and report["seeds"] == 3000
    top = types[0]
    assert top["name"] == "emoji usage" and top["count"] - top["error"] <= 300 <= top["count"]
    assert len(top["descriptions"]) == 3 and top["example_seeds"] == ["seed 0", "seed 10", "seed 20"]
    assert taxonomy_report(rows(), load_taxonomy(), max_new_types=50) == report  # deterministic
    exact = taxonomy_report(rows(), load_taxonomy(), max_new_types=10_000)["candidate_new_types"]
    assert (exact[0]["name"], exact[0]["count"], exact[0]["error"]) == ("emoji usage", 300, 0)
