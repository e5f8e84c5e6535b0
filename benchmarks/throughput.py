"""How busy the pipeline keeps an LLM server: achieved throughput as a fraction of the ideal.

Runs the real stage machinery (flows.build.build_trace: shards, five stages, store, cache) on a
few hundred seeds against the simulated server with capacity C and mean latency L. The ideal is
C / L requests per second; in general, and so for a long-tailed latency, the ideal makespan is
the latency the server actually spent (its `service_seconds`) divided by C: what a perfect
client, never leaving a slot empty, would take for the same draws. The fraction compares it
with the server's busy window (first request to last answer); `wall_seconds` adds the
pipeline's own start and finish (reading seeds, writing splits and the manifest).

    python benchmarks/throughput.py --seeds 300 --capacity 64 --latency 0.5
"""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from flows import aio
from flows.build import build_trace
from flows.config import load_config
from flows.llm import simulator
from flows.llm.cache import RequestCache
from flows.llm.client import LLMCall, LLMClient
from flows.prompts import default_library


def synthetic_seeds(path: Path, n: int) -> None:
    topics = ["rivers", "databases", "tea", "volcanoes", "chess", "bridges", "bees", "jazz", "glaciers", "compilers"]
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"text": f"Write a short explanation of {topics[i % len(topics)]} for reader {i}."}) + "\n")


def measure(latency: str, n_seeds: int, capacity: int, mean: float, shard_size: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp, simulator.start(simulator.SimulatorConfig(
            latency=latency, latency_mean=mean, capacity=capacity)) as server:
        seeds = Path(tmp) / "seeds.jsonl"
        synthetic_seeds(seeds, n_seeds)
        cfg = load_config(None, {"seeds": str(seeds), "out": str(Path(tmp) / "run"),
                                 "llm.base_urls": [server.base_url], "llm.max_in_flight": capacity,
                                 "pipeline.shard_size": shard_size})
        started = time.perf_counter()
        aio.run(build_trace(cfg))
        wall = time.perf_counter() - started
        stats = simulator.stats(server.base_url)
    return report(latency, stats, capacity, wall, seeds=n_seeds)


def report(latency: str, stats: dict, capacity: int, wall: float, **extra) -> dict:
    busy = stats["last_answer_at"] - stats["first_request_at"]
    ideal = stats["service_seconds"] / capacity
    return {"latency": latency, **extra, "requests": stats["requests"], "wall_seconds": round(wall, 2),
            "busy_seconds": round(busy, 2), "ideal_seconds": round(ideal, 2),
            "requests_per_s": round(stats["requests"] / busy, 1), "fraction_of_ideal": round(ideal / busy, 3)}


def measure_bare_client(latency: str, requests: int, capacity: int, mean: float) -> dict:
    """The same number of independent requests through the bare client: the reference."""
    with tempfile.TemporaryDirectory() as tmp, simulator.start(simulator.SimulatorConfig(
            latency=latency, latency_mean=mean, capacity=capacity)) as server:
        prompts = default_library()
        client = LLMClient([server.base_url], RequestCache(Path(tmp) / "c.sqlite"), max_in_flight=capacity)
        calls = [LLMCall(stage="bare", prompt=prompts.render("respond", instruction=f"request {i}"), seed=i)
                 for i in range(requests)]

        async def go():
            try:
                await asyncio.gather(*(client.chat(c) for c in calls))
            finally:
                await client.aclose()

        started = time.perf_counter()
        aio.run(go())
        wall = time.perf_counter() - started
        stats = simulator.stats(server.base_url)
    return report(latency, stats, capacity, wall, bare_client=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=300)
    p.add_argument("--capacity", type=int, default=64)
    p.add_argument("--latency", type=float, default=0.5)
    p.add_argument("--shard-size", type=int, default=16)
    p.add_argument("--no-bare", action="store_true", help="skip the bare-client reference (halves the time)")
    args = p.parse_args()
    for kind in ("constant", "longtail"):
        result = measure(kind, args.seeds, args.capacity, args.latency, args.shard_size)
        print(json.dumps(result), flush=True)
        if not args.no_bare:
            print(json.dumps(measure_bare_client(kind, result["requests"], args.capacity, args.latency)), flush=True)


if __name__ == "__main__":
    main()
