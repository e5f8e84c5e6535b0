"""Incremental refresh: seeds already built cost nothing; only new seeds are paid for."""
import pytest

from conftest import DEMO_SEEDS, assert_accounted, read_rows, run_cli, sim_requests, start_sim


@pytest.mark.slow
def test_three_new_seeds_cost_exactly_their_own_requests(tmp_path):
    lines = DEMO_SEEDS.read_text(encoding="utf-8").splitlines()
    old, new = tmp_path / "old.jsonl", tmp_path / "new.jsonl"
    old.write_text("\n".join(lines[:27]) + "\n", encoding="utf-8")
    new.write_text("\n".join(lines[27:30]) + "\n", encoding="utf-8")
    pool = tmp_path / "pool"  # the nightly source: a folder that grows
    pool.mkdir()
    (pool / "a.jsonl").write_text(old.read_text(encoding="utf-8"), encoding="utf-8")

    with start_sim() as server:
        first = run_cli("run", "--seeds", pool, "--base-url", server.base_url, "--out", tmp_path / "night", "--quiet")
        assert first.returncode == 0, first.stderr
        night1 = sim_requests(server)
        (pool / "b.jsonl").write_text(new.read_text(encoding="utf-8"), encoding="utf-8")
        second = run_cli("run", "--seeds", pool, "--base-url", server.base_url, "--out", tmp_path / "night", "--quiet")
        assert second.returncode == 0, second.stderr
        night2 = sim_requests(server) - night1
    with start_sim() as server:  # what the 3 new seeds cost on their own
        alone = run_cli("run", "--seeds", new, "--base-url", server.base_url, "--out", tmp_path / "alone", "--quiet")
        assert alone.returncode == 0, alone.stderr
        cost_of_new = sim_requests(server)

    assert night2 == cost_of_new > 0
    assert_accounted(tmp_path / "night", 30)
    seeds_in_splits = {r["seed_id"] for s in ("sft", "dpo", "iopo", "eval")
                       for r in read_rows(tmp_path / "night" / "splits" / f"{s}.parquet")}
    rejected = {r["seed_id"] for r in read_rows(tmp_path / "night" / "splits" / "rejects.parquet")}
    graded = {r["seed_id"] for p in (tmp_path / "night" / "stages" / "respond").glob("shard-*.parquet")
              for r in read_rows(p)}
    assert graded == seeds_in_splits | rejected  # the splits are rebuilt from every seed built so far
