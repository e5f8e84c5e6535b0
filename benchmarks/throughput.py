"""How busy the pipeline keeps an LLM server: its occupancy over a build, and where it dips.

Runs the real stage machinery (flows.build.build_trace: shards, windows, five stages, store,
cache) on synthetic seeds against the simulated server with capacity C and mean latency L.
Occupancy is the slot-seconds the server spent serving, divided by C times its busy window
(first request to last answer): 1.0 is a client that never leaves a slot empty, for any latency
distribution. `wall_seconds` adds the pipeline's own start and finish (reading seeds, writing
splits and the manifest).

Printed per run, besides the totals:
- the profile: mean requests in service per 5-second bucket (a sparkline, and its lowest value
  between the first and the last bucket, where a stall of the client shows as a dip);
- the client's CPU per request (all of this process: stages, store, HTTP) and the event loop's
  stalls while the server had work: a 5 ms timer late by more than 20 ms, how many, how long in
  all, the worst and when the worst came.

    python benchmarks/throughput.py --seeds 5000 --no-bare
    python benchmarks/throughput.py --seeds 5000 --max-in-flight auto --latency-kinds constant
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from pathlib import Path

from flows import aio
from flows.build import build_trace
from flows.config import in_flight, load_config
from flows.llm import simulator
from flows.llm.cache import RequestCache
from flows.llm.client import LLMCall, LLMClient
from flows.prompts import default_library

BUCKET_S = 5
BARS = "▁▂▃▄▅▆▇█"


def synthetic_seeds(path: Path, n: int) -> None:
    topics = ["rivers", "databases", "tea", "volcanoes", "chess", "bridges", "bees", "jazz", "glaciers", "compilers"]
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"text": f"Write a short explanation of {topics[i % len(topics)]} for reader {i}."}) + "\n")


class LoopLag:
    """Samples the event loop's lateness: a 5 ms timer that fires late means something held
    the loop (a blocking write, a long computation) and no answer was turned into a request."""

    def __init__(self, period: float = 0.005, threshold: float = 0.02):
        self.period, self.threshold = period, threshold
        self.stalls: list[tuple[float, float]] = []  # (epoch seconds at its end, seconds late)
        self.ticked = time.monotonic()  # when the timer last fired

    async def watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.period)
            self.ticked = time.monotonic()
            lag = loop.time() - before - self.period
            if lag > self.threshold:
                self.stalls.append((time.time(), lag))

    def while_serving(self, stats: dict) -> dict:
        """The stalls while the server had work (not the build's start and its outputs), and
        when they came, in seconds from the first request."""
        start, end = stats["first_request_at"], stats["last_answer_at"]
        inside = [(at - start, lag) for at, lag in self.stalls if start <= at - lag and at <= end]
        return {"loop_stalls_over_20ms": len(inside), "loop_stalled_s": round(sum(lag for _, lag in inside), 2),
                "loop_worst_ms": round(1000 * max((lag for _, lag in inside), default=0.0), 1),
                "loop_worst_at_s": [round(at) for at, lag in sorted(inside, key=lambda s: -s[1])[:5]]}


class StallFinder:
    """Where the event loop's time goes when it stalls (--find-stalls): a thread that, whenever
    the LoopLag timer has not fired for `after` seconds, samples the loop thread's stack; and the
    time spent in garbage collection, by generation. Slows the run a little: a diagnosis, not a
    figure."""

    def __init__(self, lag: LoopLag, after: float = 0.05):
        self.lag, self.after = lag, after
        self.samples: list[tuple[float, str]] = []  # (epoch seconds, where the loop thread was)
        self.collections: list[tuple[float, int, float]] = []  # (epoch seconds at its end, generation, seconds)
        self._gc_started = 0.0
        self._stop = threading.Event()

    def _sample(self, loop_thread: int) -> None:
        while not self._stop.wait(0.01):
            if time.monotonic() - self.lag.ticked > self.after:
                frame = sys._current_frames().get(loop_thread)
                stack = traceback.extract_stack(frame)[-6:] if frame else []
                self.samples.append((time.time(), " < ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}"
                                                            for f in reversed(stack))))

    def _gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.collections.append((time.time(), info["generation"], time.perf_counter() - self._gc_started))

    def __enter__(self):
        gc.callbacks.append(self._gc)
        threading.Thread(target=self._sample, args=(threading.get_ident(),), daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        gc.callbacks.remove(self._gc)

    def while_serving(self, stats: dict) -> dict:
        """What stalled the loop while the server had work (not the outputs, after it)."""
        start, end = stats["first_request_at"], stats["last_answer_at"]
        places = Counter(where for at, where in self.samples if start <= at <= end)
        spent = [0.0, 0.0, 0.0]
        for at, generation, seconds in self.collections:
            if start <= at <= end:
                spent[generation] += seconds
        worst = max((s for at, _, s in self.collections if start <= at <= end), default=0.0)
        return {"gc_seconds_by_generation": [round(s, 2) for s in spent], "gc_worst_ms": round(1000 * worst, 1),
                "stalled_in (10 ms samples)": dict(places.most_common(8))}


async def watched(work, lag: LoopLag):
    watcher = asyncio.ensure_future(lag.watch())
    try:
        return await work
    finally:
        watcher.cancel()


def measure(latency: str, n_seeds: int, capacity: int, mean: float, max_in_flight: int | str,
            find_stalls: bool = False) -> dict:
    with tempfile.TemporaryDirectory() as tmp, simulator.start(simulator.SimulatorConfig(
            latency=latency, latency_mean=mean, capacity=capacity)) as server:
        seeds = Path(tmp) / "seeds.jsonl"
        synthetic_seeds(seeds, n_seeds)
        cfg = load_config(None, {"seeds": str(seeds), "out": str(Path(tmp) / "run"),
                                 "llm.base_urls": [server.base_url], "llm.max_in_flight": max_in_flight,
                                 "llm.max_num_seqs": capacity})
        lag = LoopLag()
        finder = StallFinder(lag)
        started, cpu = time.perf_counter(), time.process_time()
        with finder if find_stalls else contextlib.nullcontext():
            aio.run(watched(build_trace(cfg), lag))
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        stats = simulator.stats(server.base_url)
    return report(latency, stats, capacity, wall, seeds=n_seeds, max_in_flight=cfg.llm.in_flight_per_endpoint,
                  client_cpu_ms_per_request=round(1000 * cpu / max(1, stats["requests"]), 2), **lag.while_serving(stats),
                  **(finder.while_serving(stats) if find_stalls else {}))


def profile(stats: dict) -> list[float]:
    """Mean requests in service per BUCKET_S seconds of the busy window."""
    per_second = stats.get("service_profile") or []
    return [round(sum(per_second[i:i + BUCKET_S]) / len(per_second[i:i + BUCKET_S]), 1)
            for i in range(0, len(per_second), BUCKET_S)]


def sparkline(values: list[float], top: float) -> str:
    return "".join(BARS[min(len(BARS) - 1, int(v / top * len(BARS)))] for v in values)


def report(latency: str, stats: dict, capacity: int, wall: float, **extra) -> dict:
    busy = stats["last_answer_at"] - stats["first_request_at"]
    buckets = profile(stats)
    inner = buckets[1:-1] or buckets
    return {"latency": latency, **extra, "requests": stats["requests"], "wall_seconds": round(wall, 2),
            "busy_seconds": round(busy, 2), "requests_per_s": round(stats["requests"] / busy, 1),
            "occupancy": round(stats["service_seconds"] / (capacity * busy), 3),
            "profile_min_inner": min(inner) if inner else None,
            f"profile_per_{BUCKET_S}s": sparkline(buckets, capacity), "profile": buckets}


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
    p.add_argument("--capacity", type=int, default=64, help="the server's slots (vLLM: --max-num-seqs)")
    p.add_argument("--latency", type=float, default=0.5, help="mean seconds per request")
    p.add_argument("--latency-kinds", default="constant,longtail", help="constant, longtail (lognormal, sigma 1)")
    p.add_argument("--max-in-flight", type=in_flight, default=None,
                   help="requests the client keeps in flight: a number, or auto (default: the capacity)")
    p.add_argument("--no-bare", action="store_true", help="skip the bare-client reference (halves the time)")
    p.add_argument("--full", action="store_true", help="print the profile's numbers too")
    p.add_argument("--find-stalls", action="store_true",
                   help="sample where the event loop is when it stalls, and time the garbage collector")
    args = p.parse_args()
    for kind in args.latency_kinds.split(","):
        result = measure(kind, args.seeds, args.capacity, args.latency, args.max_in_flight or args.capacity,
                         args.find_stalls)
        if not args.full:
            result.pop("profile")
        print(json.dumps(result, ensure_ascii=False), flush=True)
        if not args.no_bare:
            bare = measure_bare_client(kind, result["requests"], args.capacity, args.latency)
            if not args.full:
                bare.pop("profile")
            print(json.dumps(bare, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
