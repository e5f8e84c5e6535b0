"""The export layouts: Hugging Face parquet + card, LLaMA-Factory ShareGPT, TRL JSONL, Trace eval JSONL."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from conftest import DEMO_SEEDS, run_cli
from flows.contracts import SYSTEM_PROMPT, serialise_instruction
from flows.exports import TRACE_FIELDS, write_exports

REPO = Path(__file__).resolve().parent.parent
OFFICIAL_IOPO = REPO / "data" / "trace-eval" / "official_iopo_example.json"
OFFICIAL_EVAL = REPO / "data" / "trace-eval" / "202409_trace_evaluation.jsonl"


def constraint(i, text, dim, zh, type_):
    return {"id": f"c{i}", "text": text, "dimension": dim, "dimension_zh": zh, "type": type_}


def scores(constraints, score=10):
    return [{"constraint_id": c["id"], "score": score, "explanation": "ok"} for c in constraints]


def serialise(description, constraints, input_text):
    return serialise_instruction(description, [f"{i}. {c['text']}" for i, c in enumerate(constraints, 1)], input_text)


def base_row(n, description, constraints, input_text, response):
    prompt = serialise(description, constraints, input_text)
    return {
        "row_id": f"r{n:04d}", "seed_id": f"s{n:04d}", "parent_id": f"p{n:04d}", "stage": "respond",
        "model": "qwen2-72b-instruct", "templates": json.dumps({"respond": "v1", "grade": "v1"}),
        "sampling": "{}", "taxonomy_version": "1.0@abc", "text": "seed", "lang": "zh", "source": "seeds.jsonl:1",
        "fit_dimensions": [c["dimension"] for c in constraints], "new_constraint_types": [],
        "target_dimensions": [c["dimension"] for c in constraints], "instruction": prompt,
        "description": description, "constraints": constraints, "input": input_text,
        "qc_complete": True, "qc_complete_reasoning": "", "qc_non_redundant": True, "qc_non_redundant_reasoning": "",
        "prompt": prompt, "response": response, "scores": scores(constraints), "overall": 10,
        "overall_explanation": "all met", "full_score": True,
        "messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt},
                     {"role": "assistant", "content": response}],
    }


ZH = [constraint(1, "标题长度控制在10至15个字之间；", "numerical", "数值约束", "content"),
      constraint(2, "采用激励鼓舞的语气风格；", "tone_and_style", "语气风格约束", "style")]
EN = [constraint(1, "Answer in exactly three bullet points.", "numbering_and_list", "编号和列表约束", "format"),
      constraint(2, "Mention the word \"harbour\".", "inclusion", "包含约束", "content"),
      constraint(3, "Use a formal tone.", "tone_and_style", "语气风格约束", "style")]


def sft_rows():
    return [base_row(1, "为一篇关于高中生“备考”的论文提供一个标题", ZH, "NULL", "“高考前夜：点燃梦想”"),
            base_row(2, "Summarise the text below.", EN, "The harbour was busy | at dawn.\nShips left.",
                     "- One\n- harbour\n- Three"),
            base_row(3, "写一首关于秋天的短诗", ZH[:1], "NULL", "秋风起，落叶飞。")]


def eval_rows():
    return [base_row(11, "为一首歌曲写一个简短描述", ZH, "\"Hotel California\" — 老鹰乐队。", "描述……"),
            base_row(12, "Write a product blurb.", EN[:2], "NULL", "- a\n- harbour\n- c")]


def dpo_rows():
    rows = []
    for row in sft_rows()[:2]:
        rows.append({**row, "stage": "dpo", "rejected_response": "坏的回答 / a worse answer",
                     "rejected_scores": scores(row["constraints"], 3), "rejected_overall": 3})
    return rows


def iopo_rows():
    rows = []
    for n, (row, op) in enumerate(zip(sft_rows()[:2], ("revise", "add")), start=21):
        if op == "revise":
            c2 = [constraint(1, "标题长度控制在16至20个字之间；", "numerical", "数值约束", "content"), ZH[1]]
            edited = ["c1"]
        else:
            c2 = row["constraints"] + [constraint(4, "End with a question.", "template", "模版约束", "format")]
            edited = ["c4"]
        prompt2 = serialise(row["description"], c2, row["input"])
        rows.append({**row, "row_id": f"r{n:04d}", "stage": "iopo", "edit_op": op, "edited_constraint_ids": edited,
                     "constraints2": c2, "prompt2": prompt2, "response2": f"y2 for {op}：第二个回答",
                     "scores_y2_x2": scores(c2), "scores_y1_x2": scores(c2, 4),
                     "scores_y2_x1": scores(row["constraints"], 5)})
    return rows


CARD = {
    "funnel": [{"stage": "seeds", "in": 10, "out": 9, "rejected": 1, "reasons": {"too_long": 1}},
               {"stage": "respond", "in": 6, "out": 6, "rejected": 0, "reasons": {}}],
    "models": ["qwen2-72b-instruct"],
    "templates": {"respond": "v1", "grade": "v1"},
    "taxonomy_version": "1.0@abc",
    "acceptance": {"iopo": {"add": {"tried": 4, "accepted": 1}, "revise": {"tried": 3, "accepted": 1}},
                   "dpo": {"tried": 3, "accepted": 2}},
    "paper": {"train_histogram": {"1": 991, "2": 8003, "3": 26421}, "eval_histogram": {1: 200, 2: 101},
              "dimension_share": {"numerical": 17.6, "inclusion": 18.7}},
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("exports")
    splits = {"sft": sft_rows(), "eval": eval_rows(), "dpo": dpo_rows(), "iopo": iopo_rows()}
    result = write_exports(out, splits, CARD)
    return out, splits, result


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_returned_counts_name_the_files(exported):
    out, splits, result = exported
    assert set(result) == {"hf", "llamafactory", "trl", "trace"}
    assert result["hf"] == {f"hf/{s}.parquet": len(rows) for s, rows in splits.items()}
    assert result["trace"] == {"trace/eval.jsonl": 2}
    assert result["trl"] == {"trl/sft.jsonl": 3, "trl/dpo.jsonl": 2, "trl/iopo.jsonl": 2}
    for files in result.values():
        for rel in files:
            assert (out / rel).is_file()
    assert not [p for p in out.rglob(".*") if p.is_file()], "temporary files left behind"


def test_hf_parquet_loads_with_datasets(exported, tmp_path):
    import datasets  # a test dependency: the export must load the way its consumer loads it
    out, splits, result = exported
    for split in splits:
        ds = datasets.load_dataset("parquet", data_files={"train": str(out / "hf" / f"{split}.parquet")},
                                   cache_dir=str(tmp_path))["train"]
        assert ds.num_rows == result["hf"][f"hf/{split}.parquet"]
        first = ds[0]
        assert isinstance(first["constraints"], list) and isinstance(first["constraints"][0], dict)
        assert first["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    both = datasets.load_dataset("parquet", data_files={"sft": str(out / "hf/sft.parquet"),
                                                        "eval": str(out / "hf/eval.parquet")},
                                 cache_dir=str(tmp_path))
    assert {k: v.num_rows for k, v in both.items()} == {"sft": 3, "eval": 2}
    iopo = datasets.load_dataset("parquet", data_files={"train": str(out / "hf/iopo.parquet")},
                                 cache_dir=str(tmp_path))["train"]
    assert iopo[0]["prompt2"] == splits["iopo"][0]["prompt2"]
    assert iopo[1]["constraints2"][-1]["dimension_zh"] == "模版约束"


def test_hf_card_configs_load_the_folder(exported, tmp_path):
    import datasets  # a test dependency: the export must load the way its consumer loads it
    out, splits, _ = exported
    for split in splits:
        ds = datasets.load_dataset(str(out / "hf"), split, cache_dir=str(tmp_path))
        assert sum(d.num_rows for d in ds.values()) == len(splits[split])


def card_configs(hf: Path) -> tuple[set[str], set[str]]:
    """The configs a card's front matter declares, and those its text tells to load."""
    text = (hf / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(text.split("---\n")[1])
    for c in front["configs"]:  # a config without its files raises in `datasets`
        assert all((hf / f["path"]).is_file() for f in c["data_files"]), c
    return {c["config_name"] for c in front["configs"]}, set(re.findall(r'load_dataset\(path, "(\w+)"\)', text))


def assert_card_loads(hf: Path, cache: Path, splits: set[str]) -> None:
    import datasets  # a test dependency: the card must tell what `datasets` accepts

    declared, told = card_configs(hf)
    assert declared == splits and told and told <= declared
    for name in declared:
        ds = datasets.load_dataset(str(hf), name, cache_dir=str(cache))
        assert sum(d.num_rows for d in ds.values()) > 0, name


def test_card_names_only_the_configs_with_files(tmp_path):
    write_exports(tmp_path, {"sft": sft_rows(), "eval": eval_rows(), "dpo": [], "iopo": []}, {})
    text = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    assert "dpo" not in text.split("---\n")[1] and "iopo" not in text.split("---\n")[1]
    assert_card_loads(tmp_path / "hf", tmp_path / "cache", {"sft", "eval"})


@pytest.mark.slow
def test_cli_run_without_preference_rows_has_a_card_that_loads(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("pipeline:\n  preference_data: false\n")  # no DPO nor IOPO rows, whatever the draws
    done = run_cli("run", "--backend", "simulated", "--seeds", DEMO_SEEDS, "--limit", 4, "--config", config,
                   "--out", tmp_path / "run", "--quiet")
    assert done.returncode == 0, done.stderr
    assert_card_loads(tmp_path / "run" / "exports" / "hf", tmp_path / "cache", {"sft", "eval"})


def test_card_front_matter_and_sections(exported):
    out, splits, _ = exported
    text = (out / "hf" / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["language"] == ["zh", "en"] and front["task_categories"] == ["text-generation"]
    assert front["license"]
    configs = {c["config_name"]: c for c in front["configs"]}
    assert set(configs) == set(splits)
    for split, c in configs.items():
        assert (out / "hf" / c["data_files"][0]["path"]).is_file()
    for split in splits:
        assert split in text
    for needle in ("## Funnel per stage", "too_long=1", "## Constraints per instruction", "paper train",
                   "## Constraint dimensions", "数值约束", "| numerical | 数值约束 | 17.6% |", "## Acceptance rates", "25.0%", "66.7%",
                   "qwen2-72b-instruct", "1.0@abc", "| respond | v1 |"):
        assert needle in text, needle
    # the English input held a "|": table cells stay intact
    assert all(line.count("|") >= 2 for line in text.splitlines() if line.startswith("|"))


def test_card_survives_missing_keys(tmp_path):
    write_exports(tmp_path, {"sft": sft_rows()}, {})
    text = (tmp_path / "hf" / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n") and "Not recorded." in text and "sft" in text
    write_exports(tmp_path / "b", {"eval": eval_rows()},
                  {"funnel": None, "acceptance": {"iopo": "x"}, "paper": {"train_histogram": "bad"}, "models": "m"})
    assert "`m`" in (tmp_path / "b" / "hf" / "README.md").read_text(encoding="utf-8")


def test_absent_split_files_are_removed(tmp_path):
    write_exports(tmp_path, {"sft": sft_rows(), "dpo": dpo_rows()}, {})
    assert (tmp_path / "llamafactory/trace_dpo.json").exists()
    result = write_exports(tmp_path, {"sft": sft_rows(), "dpo": []}, {})  # empty: as good as absent
    assert not (tmp_path / "llamafactory/trace_dpo.json").exists()
    assert not (tmp_path / "hf/dpo.parquet").exists() and not (tmp_path / "trl/dpo.jsonl").exists()
    info = json.loads((tmp_path / "llamafactory/dataset_info.json").read_text(encoding="utf-8"))
    assert set(info) == {"trace_sft"} and result["hf"] == {"hf/sft.parquet": 3}
    with pytest.raises(ValueError):
        write_exports(tmp_path, {"train": sft_rows()}, {})


def test_llamafactory_dataset_info_and_records(exported):
    out, splits, _ = exported
    lf = out / "llamafactory"
    info = json.loads((lf / "dataset_info.json").read_text(encoding="utf-8"))
    assert set(info) == {"trace_sft", "trace_eval", "trace_dpo", "trace_iopo"}
    for entry in info.values():
        assert (lf / entry["file_name"]).is_file()
        assert entry["formatting"] == "sharegpt"
        assert "tags" not in entry  # LLaMA-Factory's defaults: from / value / human / gpt
    assert info["trace_sft"]["columns"] == {"messages": "conversations", "system": "system"}
    assert info["trace_dpo"]["ranking"] is True
    assert info["trace_dpo"]["columns"] == {"messages": "conversations", "chosen": "chosen",
                                            "rejected": "rejected", "system": "system"}
    assert info["trace_iopo"]["ranking"] is True
    assert info["trace_iopo"]["columns"] == {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"}
    for split in ("sft", "eval"):
        records = json.loads((lf / f"trace_{split}.json").read_text(encoding="utf-8"))
        assert len(records) == len(splits[split])
        for rec, row in zip(records, splits[split]):
            assert rec == {"conversations": [{"from": "human", "value": row["prompt"]},
                                             {"from": "gpt", "value": row["response"]}], "system": SYSTEM_PROMPT}
    dpo = json.loads((lf / "trace_dpo.json").read_text(encoding="utf-8"))
    for rec, row in zip(dpo, splits["dpo"], strict=True):
        assert set(rec) == {"conversations", "chosen", "rejected", "system"}
        assert rec["conversations"] == [{"from": "human", "value": row["prompt"]}]
        assert rec["chosen"] == {"from": "gpt", "value": row["response"]}
        assert rec["rejected"] == {"from": "gpt", "value": row["rejected_response"]}
    # Chinese kept as text, not \u escapes
    assert "标题" in (lf / "trace_sft.json").read_text(encoding="utf-8")


def key_structure(value):
    """Keys and nesting of a JSON value, with the ShareGPT role tags kept (they are structure too)."""
    if isinstance(value, dict):
        return {k: (v if k == "from" else key_structure(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [key_structure(v) for v in value]
    return type(value).__name__


def test_iopo_matches_official_example_and_round_trips(exported):
    out, splits, _ = exported
    official = json.loads(OFFICIAL_IOPO.read_text(encoding="utf-8"))
    ours = json.loads((out / "llamafactory" / "trace_iopo.json").read_text(encoding="utf-8"))
    assert isinstance(ours, list) and len(ours) == len(splits["iopo"])
    for rec in ours:
        assert key_structure(rec) == key_structure(official[0])
        assert [t["from"] for t in rec["conversations"]] == ["human", "human"]
        assert rec["chosen"]["from"] == rec["rejected"]["from"] == "gpt"
    for rec, row in zip(ours, splits["iopo"], strict=True):
        x1, x2 = (t["value"] for t in rec["conversations"])
        assert (x1, rec["chosen"]["value"], x2, rec["rejected"]["value"]) == \
            (row["prompt"], row["response"], row["prompt2"], row["response2"])


def test_trl_files(exported):
    out, splits, _ = exported
    sft = read_jsonl(out / "trl" / "sft.jsonl")
    assert [set(r) for r in sft] == [{"messages"}] * 3
    assert sft[1]["messages"] == splits["sft"][1]["messages"]
    assert [m["role"] for m in sft[0]["messages"]] == ["system", "user", "assistant"]
    dpo = read_jsonl(out / "trl" / "dpo.jsonl")
    for rec, row in zip(dpo, splits["dpo"], strict=True):
        assert set(rec) == {"prompt", "chosen", "rejected"}
        assert rec["prompt"] == [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": row["prompt"]}]
        assert rec["chosen"] == [{"role": "assistant", "content": row["response"]}]
        assert rec["rejected"] == [{"role": "assistant", "content": row["rejected_response"]}]
    iopo = read_jsonl(out / "trl" / "iopo.jsonl")
    for rec, row in zip(iopo, splits["iopo"], strict=True):
        assert rec == {"x1": row["prompt"], "y1": row["response"], "x2": row["prompt2"], "y2": row["response2"],
                       "system": SYSTEM_PROMPT, "edit_op": row["edit_op"]}
    assert "第二个回答" in (out / "trl" / "iopo.jsonl").read_text(encoding="utf-8")


def test_trace_eval_layout(exported):
    out, splits, _ = exported
    official_keys = list(json.loads(OFFICIAL_EVAL.open(encoding="utf-8").readline()))
    assert list(TRACE_FIELDS) == official_keys
    rows = read_jsonl(out / "trace" / "eval.jsonl")
    assert len(rows) == len(splits["eval"])
    for rec, row in zip(rows, splits["eval"], strict=True):
        assert list(rec) == official_keys
        assert rec["type"] == "trace" and rec["category"] == "trace-build" and isinstance(rec["id"], str)
        assert rec["constraints_num"] == len(rec["constraints_splits"]) == len(rec["levels2"]) == len(row["constraints"])
        assert rec["constraints"] == "\n".join(rec["constraints_splits"])
        assert rec["constraints_splits"][0].startswith("1. ")
        assert rec["levels2"] == [c["dimension_zh"] for c in row["constraints"]]
        assert rec["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
        assert rec["messages"][1]["role"] == "user"
        assert rec["messages"][1]["content"] == serialise_instruction(
            rec["description"], rec["constraints_splits"], rec["input"])
        assert rec["messages"][1]["content"] == row["prompt"]  # what the model was asked
    assert rows[0]["input"] == "\"Hotel California\" — 老鹰乐队。" and "# Inputs:" in rows[0]["messages"][1]["content"]
    assert rows[1]["input"] == "NULL" and "# Inputs:" not in rows[1]["messages"][1]["content"]
    assert "老鹰乐队" in (out / "trace" / "eval.jsonl").read_text(encoding="utf-8")
