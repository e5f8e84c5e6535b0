"""Bad input gives one line naming the file, row and field, or a reject with a reason."""
import json
import sqlite3

import pytest


from conftest import read_rows, run_cli


def one_line_error(done, *needles):
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_file(tmp_path):
    one_line_error(run_cli("run", "--seeds", tmp_path / "nope.jsonl", "--backend", "simulated", "--out", tmp_path / "o"),
                   "nope.jsonl", "no such file")


def test_empty_file(tmp_path):
    f = tmp_path / "empty.jsonl"
    f.write_text("")
    one_line_error(run_cli("run", "--seeds", f, "--backend", "simulated", "--out", tmp_path / "o"), "empty.jsonl", "no seed rows")
    assert not (tmp_path / "o").exists()


def test_no_text_column_csv(tmp_path):
    f = tmp_path / "seeds.csv"
    f.write_text("prompt,lang\nhello,en\n")
    one_line_error(run_cli("run", "--seeds", f, "--backend", "simulated", "--out", tmp_path / "o"),
                   "seeds.csv", "no 'text' column", "prompt")


def test_jsonl_row_without_field(tmp_path):
    f = tmp_path / "seeds.jsonl"
    f.write_text('{"text": "ok"}\n{"prompt": "x"}\n')
    one_line_error(run_cli("run", "--seeds", f, "--backend", "simulated", "--out", tmp_path / "o"), "seeds.jsonl:2", "'text'")


def test_non_utf8(tmp_path):
    f = tmp_path / "seeds.jsonl"
    f.write_bytes(b'{"text": "fine"}\n{"text": "caf\xe9"}\n')
    one_line_error(run_cli("run", "--seeds", f, "--backend", "simulated", "--out", tmp_path / "o"), "seeds.jsonl:2", "UTF-8")


def test_bad_config(tmp_path):
    c = tmp_path / "c.yaml"
    c.write_text("llm:\n  max_in_flight: zero\n")
    one_line_error(run_cli("run", "--config", c, "--backend", "simulated", "--out", tmp_path / "o"), "c.yaml", "llm.max_in_flight")


def test_no_server(tmp_path):
    one_line_error(run_cli("run", "--base-url", "http://127.0.0.1:9/v1", "--out", tmp_path / "o", "--quiet"),
                   "LLM server")


def test_bad_rows_are_rejects_and_jinja_reaches_prompt_verbatim(sim, tmp_path):
    f = tmp_path / "seeds.jsonl"
    rows = [{"text": "Write a haiku about {{ 7*7 }} and {% raw %}"}, {"text": ""}, {"text": "   "},
            {"text": "x" * 1_000_000}, {"text": "Write a haiku about {{ 7*7 }} and {% raw %}"}, {"text": 42}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    done = run_cli("run", "--seeds", f, "--base-url", sim.base_url, "--out", out, "--quiet")
    assert done.returncode == 0, done.stderr
    rejects = read_rows(out / "stages" / "seeds" / "rejects-00000.parquet")
    assert sorted(r["reason"] for r in rejects) == ["duplicate_seed", "empty_seed", "empty_seed", "not_text", "seed_too_long"]
    assert all(":" in r["detail"] and "seeds.jsonl" in r["detail"] for r in rejects)
    with sqlite3.connect(out / "llm-cache.sqlite") as db:
        requests = [json.loads(r[0]) for r in db.execute("SELECT request FROM answers WHERE stage = 'taxonomy'")]
    assert len(requests) == 1
    assert "Write a haiku about {{ 7*7 }} and {% raw %}" in requests[0]["messages"][-1]["content"]
    assert "49" not in requests[0]["messages"][-1]["content"]


def test_seed_sources_glob_and_fsspec_url(tmp_path):
    import fsspec

    from flows.errors import InputError
    from flows.seeds import load_seeds

    (tmp_path / "2026-11-01.jsonl").write_text('{"text": "one"}\n')
    (tmp_path / "2026-11-02.jsonl").write_text('{"text": "two"}\n')
    (tmp_path / "notes.txt").write_text("not seeds")
    batch = load_seeds(str(tmp_path / "2026-11-*.jsonl"))
    assert [r["text"] for r in batch.rows] == ["one", "two"]
    with pytest.raises(InputError, match="no .jsonl, .parquet or .csv files match"):
        load_seeds(str(tmp_path / "2025-*.jsonl"))

    memory = fsspec.filesystem("memory")
    memory.pipe("/pool/night1.jsonl", b'{"text": "from a bucket"}\n')
    batch = load_seeds("memory://pool/")
    assert batch.rows[0]["text"] == "from a bucket" and batch.rows[0]["source"] == "memory:///pool/night1.jsonl:1"


def test_max_in_flight_auto_over_subscribes_the_server_by_a_quarter_and_needs_its_size(tmp_path):
    from flows.config import ConfigError, load_config
    from flows.llm.backends import client_for

    cfg = load_config(None, {"llm.max_in_flight": "auto", "llm.max_num_seqs": 64, "llm.base_urls": ["http://x/v1"]})
    assert cfg.llm.in_flight_per_endpoint == 80 and cfg.llm.server_seqs == 64
    client = client_for(cfg.llm, ["http://a/v1", "http://b/v1"], "json_schema", None)
    assert client._slots._free == 160  # per endpoint
    plain = load_config(None, {"llm.max_in_flight": 48})
    assert plain.llm.in_flight_per_endpoint == 48 and plain.llm.server_seqs == 48  # a launched vLLM runs as many
    c = tmp_path / "c.yaml"
    c.write_text("llm:\n  max_in_flight: auto\n")
    with pytest.raises(ConfigError, match="max_in_flight: auto needs max_num_seqs"):
        load_config(c)
    one_line_error(run_cli("run", "--max-in-flight", "auto", "--backend", "simulated", "--out", tmp_path / "o"),
                   "max_in_flight: auto needs max_num_seqs")


def test_seeds_in_flight_default_to_a_few_per_client_slot_and_the_old_setting_says_its_new_name(tmp_path):
    from flows.config import SEEDS_PER_SLOT, load_config
    from flows.llm.backends import client_for

    cfg = load_config(None, {"llm.max_in_flight": 48})
    client = client_for(cfg.llm, ["http://a/v1", "http://b/v1"], "json_schema", None)
    assert client.slots == 96 and cfg.execution.seeds_at_once(client.slots) == SEEDS_PER_SLOT * 96
    assert load_config(None, {"execution.seeds_in_flight": 300}).execution.seeds_at_once(client.slots) == 300
    c = tmp_path / "c.yaml"
    c.write_text("execution:\n  windows_in_flight: 2\n")
    one_line_error(run_cli("run", "--config", c, "--backend", "simulated", "--out", tmp_path / "o"),
                   str(c), "windows_in_flight is now seeds_in_flight")
    assert not (tmp_path / "o").exists()
