"""Builds of any size: seeds read lazily and admitted in windows, a bad row found before any
request is paid, and the same rows whatever the window size."""
import asyncio
import json

import pytest

from conftest import DEMO_SEEDS, assert_accounted, read_rows, run_cli, sim_requests, start_sim
from flows.build import build_trace
from flows.config import load_config
from flows.seeds import iter_seeds, seed_shards


class WindowLog:
    """A window tracker that records which windows ran and how many ran at once."""

    def __init__(self):
        self.windows, self.running, self.most = [], 0, 0

    async def __call__(self, number, first_shard, last_shard, run):
        self.windows.append((number, first_shard, last_shard))
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            return await run()
        finally:
            self.running -= 1


def build(out, base_url, max_in_flight=64, **execution):
    cfg = load_config(None, {"seeds": str(DEMO_SEEDS), "out": str(out), "llm.base_urls": [base_url],
                             "llm.max_in_flight": max_in_flight, "pipeline.shard_size": 2,
                             **{f"execution.{k}": v for k, v in execution.items()}})
    log = WindowLog()
    result = asyncio.run(build_trace(cfg, track=log))
    return result, log


@pytest.mark.slow
def test_windows_bound_what_is_in_flight_and_change_no_row(tmp_path):
    with start_sim(latency_mean=0.02) as server:
        one, one_log = build(tmp_path / "one", server.base_url, window_size=1024)
        paid = sim_requests(server)
    with start_sim(latency_mean=0.02) as server:
        many, many_log = build(tmp_path / "many", server.base_url, window_size=4, seeds_in_flight=8)
        assert sim_requests(server) == paid  # windows change when a request is sent, not which

    assert one_log.windows == [(0, 0, 14)]  # 30 seeds in 15 shards of 2
    # windows overlap: a window starts once the one before is all in, and a slow shard keeps its
    # window open meanwhile; what is bounded is the shards in the stages (the test below)
    assert [w[0] for w in many_log.windows] == list(range(8)) and many_log.most >= 2
    assert many_log.windows[-1] == (7, 14, 14)
    for split in ("sft", "dpo", "iopo", "eval", "rejects"):
        assert read_rows(tmp_path / "one" / "splits" / f"{split}.parquet") == \
            read_rows(tmp_path / "many" / "splits" / f"{split}.parquet"), split
    assert one.manifest["funnel"] == many.manifest["funnel"]
    assert_accounted(tmp_path / "many", 30)


def test_input_rejects_stay_with_the_shard_they_were_read_in(tmp_path):
    seeds = tmp_path / "s.jsonl"
    texts = ["a seed one", "", "a seed two", "a seed one", "a seed three", "   "]
    seeds.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    shards = list(seed_shards(iter_seeds(seeds), 2))
    assert [[r["text"] for r in rows] for rows, _ in shards] == [["a seed one", "a seed two"], ["a seed three"]]
    assert [[r["reason"] for r in rejects] for _, rejects in shards] == [
        ["empty_seed", "duplicate_seed"], ["empty_seed"]]
    empty = tmp_path / "e.jsonl"
    empty.write_text(json.dumps({"text": ""}) + "\n")
    assert [(len(rows), len(rej)) for rows, rej in seed_shards(iter_seeds(empty), 2)] == [(0, 1)]


def test_a_bad_row_at_the_end_of_a_large_file_stops_the_build_before_any_request(tmp_path):
    seeds = tmp_path / "big.jsonl"
    with seeds.open("w") as fh:
        for i in range(50_000):
            fh.write(json.dumps({"text": f"Describe item {i} of the catalogue in two sentences."}) + "\n")
        fh.write('{"text": "the last one", \n')
    with start_sim() as server:
        done = run_cli("run", "--seeds", seeds, "--base-url", server.base_url, "--out", tmp_path / "run", "--quiet")
        assert sim_requests(server) == 0
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"trace-build: error: {seeds}:50001: not valid JSON (Expecting property name "
                                                "enclosed in double quotes)"]
    assert not (tmp_path / "run" / "stages").exists()


@pytest.mark.slow
def test_ranges_built_apart_give_the_one_process_result(tmp_path):
    with start_sim(latency_mean=0.01) as server:
        one, _ = build(tmp_path / "one", server.base_url)
        paid = sim_requests(server)
    with start_sim(latency_mean=0.01) as server:
        ranged, log = build(tmp_path / "ranged", server.base_url, ranges=3, window_size=4)
        assert sim_requests(server) == paid  # no seed built twice, none missed
    parts = sorted(p.name for p in (tmp_path / "ranged" / "stages" / "respond").iterdir())
    assert parts == ["range-00-of-03", "range-01-of-03", "range-02-of-03"]
    for part in parts:  # each range its own request cache and result
        assert (tmp_path / "ranged" / "ranges" / part / "llm-cache.sqlite").exists()
        assert json.loads((tmp_path / "ranged" / "ranges" / part / "result.json").read_text())["range"] == part
    for split in ("sft", "dpo", "iopo", "eval", "rejects"):
        assert read_rows(tmp_path / "one" / "splits" / f"{split}.parquet") == \
            read_rows(tmp_path / "ranged" / "splits" / f"{split}.parquet"), split
    assert one.manifest["funnel"] == ranged.manifest["funnel"]
    assert one.manifest["usage"]["respond"]["requests"] == ranged.manifest["usage"]["respond"]["requests"]
    exports = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one" / "exports").rglob("*") if p.is_file())
    assert exports == sorted(p.relative_to(tmp_path / "ranged")
                             for p in (tmp_path / "ranged" / "exports").rglob("*") if p.is_file())
    assert any(p.name == "trace_sft.json" for p in exports)
    for export in exports:  # every export file, byte for byte (the README's metadata included)
        assert (tmp_path / "one" / export).read_bytes() == (tmp_path / "ranged" / export).read_bytes(), export
    assert_accounted(tmp_path / "ranged", 30)

    # the same folder built again in one process: the ranges' shards go, nothing counts twice
    with start_sim(latency_mean=0.01) as server:
        again, _ = build(tmp_path / "ranged", server.base_url)
    assert not any(p.is_dir() for p in (tmp_path / "ranged" / "stages" / "respond").iterdir())
    assert read_rows(tmp_path / "ranged" / "splits" / "sft.parquet") == read_rows(tmp_path / "one" / "splits" / "sft.parquet")


class CountingProgress:
    """A Progress that records each stage's total (as start and expect grow it) and rows done."""

    def __init__(self):
        self.total, self.done = {}, {}

    def start(self, totals):
        self.total, self.done = dict(totals), dict.fromkeys(totals, 0)

    def expect(self, stage, n=1):
        self.total[stage] += n

    def advance(self, stage, n=1):
        self.done[stage] += n
        assert self.done[stage] <= self.total[stage], f"{stage}: {self.done[stage]} rows done of {self.total[stage]}"


@pytest.mark.slow
def test_progress_totals_are_the_rows_entering_each_stage_and_are_reached(tmp_path):
    out = tmp_path / "run"
    cfg = load_config(None, {"seeds": str(DEMO_SEEDS), "out": str(out), "pipeline.shard_size": 4})
    with start_sim() as server:
        cfg.llm.base_urls = [server.base_url]
        for attempt in ("first run", "rerun from finished shards"):
            progress = CountingProgress()
            result = asyncio.run(build_trace(cfg, progress))
            funnel = {row["stage"]: row for row in result.manifest["funnel"]}
            assert progress.done == progress.total, attempt  # every bar reaches 100%
            for stage, total in progress.total.items():
                assert total == funnel[stage]["in"], (attempt, stage)
    assert funnel["qc"]["in"] < funnel["taxonomy"]["in"]  # rows were dropped on the way: totals differ


class HeldShards:
    """Stands in for run_shard: records which shards are in the stages, and keeps each there
    until the test lets it go."""

    def __init__(self):
        self.inside: list[int] = []
        self.most = 0
        self.release: dict[int, asyncio.Event] = {}

    async def __call__(self, shard, rows, stages, ctx, store, progress, clock=None):
        self.inside.append(shard)
        self.most = max(self.most, len(self.inside))
        await self.release.setdefault(shard, asyncio.Event()).wait()
        self.inside.remove(shard)
        return {"seeds": rows}

    def let_go(self, shard):
        self.release.setdefault(shard, asyncio.Event()).set()


class CountingShards:
    """Wraps run_shard: counts the shards in the stages at once, the work itself unchanged."""

    def __init__(self, run_shard):
        self.run_shard, self.inside, self.most = run_shard, 0, 0

    async def __call__(self, *args, **kwargs):
        self.inside += 1
        self.most = max(self.most, self.inside)
        try:
            return await self.run_shard(*args, **kwargs)
        finally:
            self.inside -= 1


def test_a_build_admits_a_few_seeds_per_client_slot_or_the_seeds_in_flight_given(tmp_path, monkeypatch):
    from flows import pipeline

    counted = CountingShards(pipeline.run_shard)
    monkeypatch.setattr(pipeline, "run_shard", counted)
    with start_sim(latency_mean=0.01) as server:
        # 1 slot: 8 seeds (flows.config.SEEDS_PER_SLOT) are 4 shards of 2, out of the 15
        build(tmp_path / "auto", server.base_url, max_in_flight=1)
        assert counted.most == 4
        counted.most = 0
        build(tmp_path / "given", server.base_url, max_in_flight=1, seeds_in_flight=3)  # whole shards: 2
        assert counted.most == 2
    assert_accounted(tmp_path / "given", 30)


class NoFiles:
    def write_shard(self, *args, **kwargs):
        pass


def test_a_shard_of_the_next_window_enters_as_soon_as_one_of_the_last_leaves(monkeypatch):
    from flows import pipeline

    held = HeldShards()
    monkeypatch.setattr(pipeline, "run_shard", held)
    shards = [([{"seed_id": f"s{i}", "row_id": f"s{i}"}], []) for i in range(6)]  # one seed a shard
    log = WindowLog()

    async def scenario():
        build = asyncio.ensure_future(pipeline.run_all(iter(shards), [], None, NoFiles(), track=log, shard_size=1,
                                                       window_size=2, seeds_in_flight=2))

        async def settle(condition):
            for _ in range(200):
                if condition():
                    return
                await asyncio.sleep(0.005)
            raise AssertionError(f"in the stages: {held.inside}")

        await settle(lambda: held.inside == [0, 1])  # window 0 fills both places
        await asyncio.sleep(0.05)
        assert held.inside == [0, 1]  # and nothing more enters
        held.let_go(0)
        await settle(lambda: held.inside == [1, 2])  # window 1's first shard takes shard 0's place
        held.let_go(2)  # shards leave in any order
        await settle(lambda: held.inside == [1, 3])
        for shard in (1, 3, 4, 5):
            held.let_go(shard)
        return await build

    counts = asyncio.run(scenario())
    assert counts == {"seeds": 6} and held.most == 2
    assert log.windows == [(0, 0, 1), (1, 2, 3), (2, 4, 5)]


class Cycle:
    def __init__(self):
        self.me = self


def test_full_collections_come_once_per_window_and_free_the_old_cyclic_garbage(monkeypatch):
    """In the stages the collector's full passes, which stall the event loop, run when a window
    is done and never on their own (flows/garbage.py); what they are for still happens: cyclic
    garbage that grew old is freed when its window ends, not at the end of the build."""
    import gc
    import weakref

    from flows import pipeline

    held = HeldShards()
    monkeypatch.setattr(pipeline, "run_shard", held)
    shards = [([{"seed_id": f"s{i}", "row_id": f"s{i}"}], []) for i in range(3)]  # a window a shard
    full: list[int] = []

    def on_collection(phase, info):
        if phase == "stop" and info["generation"] == 2:
            full.append(len(held.inside))

    async def scenario():
        build = asyncio.ensure_future(pipeline.run_all(iter(shards), [], None, NoFiles(), shard_size=1,
                                                       window_size=1, seeds_in_flight=3))
        for _ in range(400):
            if held.inside == [0, 1, 2]:
                break
            await asyncio.sleep(0.005)
        kept = [[i] for i in range(300_000)]  # promoted in bulk: CPython would collect it all, often
        old = Cycle()
        gc.collect(1)  # the cycle survives the young collections: it is in the old generation
        freed = weakref.ref(old)
        del old
        assert full == [] and freed() is not None
        held.let_go(0)
        for _ in range(400):
            if freed() is None:
                break
            await asyncio.sleep(0.005)
        assert freed() is None and full == [2]  # freed by window 0's full pass, with windows 1 and 2 still in the stages
        held.let_go(1)
        held.let_go(2)
        await build
        return len(kept)

    frozen, thresholds = gc.get_freeze_count(), gc.get_threshold()
    gc.callbacks.append(on_collection)
    try:
        asyncio.run(scenario())
    finally:
        gc.callbacks.remove(on_collection)
    assert len(full) == 3  # one per window, none of CPython's own
    assert gc.get_threshold() == thresholds and gc.get_freeze_count() == frozen  # as usual after the build
