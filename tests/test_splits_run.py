"""A run's splits and exports, loaded the way their consumers load them."""
import json

import datasets
import pytest

from conftest import assert_accounted, read_rows
from flows.near_duplicates import normalise_instruction
from flows.splits import official_eval_instructions


@pytest.fixture(scope="module")
def run_dir(sim_run_dir):
    return sim_run_dir


def test_all_four_splits_and_accounting(run_dir):
    assert_accounted(run_dir, 90)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    for split in ("sft", "dpo", "iopo", "eval"):
        rows = read_rows(run_dir / "splits" / f"{split}.parquet")
        assert len(rows) == manifest["splits"][split]["rows"] > 0, split
    acceptance = manifest["acceptance"]
    assert acceptance["iopo"]["accepted"] == manifest["funnel"][[r["stage"] for r in manifest["funnel"]].index("iopo")]["out"]
    assert sum(v["tried"] for v in acceptance["iopo_by_edit"].values()) == acceptance["iopo"]["tried"]


def test_no_seed_in_two_splits_and_no_contamination(run_dir):
    seeds, texts = {}, {}
    for split in ("sft", "dpo", "iopo", "eval"):
        rows = read_rows(run_dir / "splits" / f"{split}.parquet")
        seeds[split] = {r["seed_id"] for r in rows}
        texts[split] = {normalise_instruction(t) for r in rows for t in (r["prompt"], r.get("prompt2")) if t}
    names = list(seeds)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not seeds[a] & seeds[b], (a, b)
    train = texts["sft"] | texts["dpo"] | texts["iopo"]
    assert not train & texts["eval"]
    assert not train & {normalise_instruction(t) for t in official_eval_instructions()}


def test_exports_load_like_their_consumers_and_match_the_manifest(run_dir):
    manifest = json.loads((run_dir / "manifest.json").read_text())
    exports = run_dir / "exports"
    for split in ("sft", "dpo", "iopo", "eval"):
        n = manifest["splits"][split]["rows"]
        hf = datasets.load_dataset("parquet", data_files={"train": str(exports / "hf" / f"{split}.parquet")})
        assert hf["train"].num_rows == n
        assert len(json.loads((exports / "llamafactory" / f"trace_{split}.json").read_text())) == n
        if split != "eval":
            assert len((exports / "trl" / f"{split}.jsonl").read_text().splitlines()) == n
    info = json.loads((exports / "llamafactory" / "dataset_info.json").read_text())
    assert all((exports / "llamafactory" / entry["file_name"]).exists() for entry in info.values())
    assert info["trace_iopo"]["ranking"] is True
    trace = [json.loads(line) for line in (exports / "trace" / "eval.jsonl").read_text().splitlines()]
    assert len(trace) == manifest["splits"]["eval"]["rows"]
    assert all(r["levels2"] and len(r["levels2"]) == r["constraints_num"] for r in trace)
    card = (exports / "hf" / "README.md").read_text()
    assert card.startswith("---") and "iopo" in card
