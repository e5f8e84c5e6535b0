"""One build over several workers, with the real components: a Prefect server, the work pool, 2
workers (each runs one flow run at a time, as one GPU node would), a build with 2 ranges that
any worker takes; then one range's worker killed with SIGKILL mid-run: its flow run is Crashed when
its heartbeats stop, the build fails naming it, and the build run again finishes it."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import prefect_api_call as api, DEMO_SEEDS, REPO, assert_accounted, read_rows, run_cli, sim_requests, start_sim, start_worker
from flows.llm.running import descendants

pytestmark = pytest.mark.slow  # not in make test-fast: real servers, subprocesses or training runs

IN_FLIGHT = 4  # requests in flight per range: what a killed range may have paid for and lost


def kill_tree(proc: subprocess.Popen) -> None:
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)


def start_build(env, out: Path, base_url: str, logdir: Path) -> subprocess.Popen:
    """The parent flow run, started where a user starts it; its ranges go to the pool."""
    code = ("import asyncio, sys; from flows.trace_build import trace_build; "
            "asyncio.run(trace_build(seeds=sys.argv[1], out=sys.argv[2], base_urls=[sys.argv[3]], ranges=2, "
            "config=sys.argv[4]))")
    config = out.parent / "ranged.yaml"
    config.write_text(f"llm:\n  max_in_flight: {IN_FLIGHT}\nexecution:\n  window_size: 8\n")
    return subprocess.Popen([sys.executable, "-c", code, str(DEMO_SEEDS), str(out), base_url, str(config)],
                            env=env, cwd=REPO, stdout=open(logdir / "build.log", "a"), stderr=subprocess.STDOUT)


def range_runs(env) -> list[dict]:
    runs = api(env["PREFECT_API_URL"], "/flow_runs/filter", {"flow_runs": {"tags": {"all_": ["trace-build-range"]}}})
    return sorted(runs, key=lambda r: r["created"])


def test_two_ranges_on_two_workers_equal_one_process_and_survive_a_killed_worker(prefect_server, tmp_path):
    env = prefect_server
    with start_sim(latency_mean=0.02) as server:  # the one-process build of the same seeds
        one = run_cli("run", "--seeds", DEMO_SEEDS, "--base-url", server.base_url, "--out", tmp_path / "one", "--quiet")
        assert one.returncode == 0, one.stderr
        paid_once = sim_requests(server)

    out = tmp_path / "ranged"
    with start_sim(latency_mean=0.3) as server:  # slow enough to kill a worker mid-run
        workers = {name: start_worker(env, name, tmp_path) for name in ("worker-a", "worker-b")}
        build = start_build(env, out, server.base_url, tmp_path)
        try:
            # both ranges running, one per worker, and some shards written: kill worker-b mid-run
            deadline = time.time() + 120
            while time.time() < deadline:
                runs = range_runs(env)
                if len([r for r in runs if r["state_type"] == "RUNNING"]) == 2 and \
                        len(list((out / "stages" / "taxonomy").rglob("shard-*.parquet"))) >= 2:
                    break
                assert build.poll() is None, (tmp_path / "build.log").read_text()[-3000:]
                time.sleep(0.3)
            else:
                pytest.fail("the ranges never ran side by side: " + (tmp_path / "build.log").read_text()[-3000:])
            kill_tree(workers["worker-b"])
            killed_at = sim_requests(server)
            # the other range finishes; the dead one is Crashed once its heartbeats stop, and the
            # build fails by itself, naming it
            assert build.wait(timeout=240) == 1
            said = (tmp_path / "build.log").read_text()
            assert "ranges did not complete: range-0" in said and "Crashed" in said, said[-3000:]
            assert sorted(r["state_type"] for r in range_runs(env)) == ["COMPLETED", "CRASHED"]
            assert not (out / "manifest.json").exists()
            assert killed_at < paid_once

            # run the build again: the finished range costs nothing, the killed one resumes
            workers["worker-b"] = start_worker(env, "worker-b", tmp_path)
            again = start_build(env, out, server.base_url, tmp_path)
            assert again.wait(timeout=300) == 0, (tmp_path / "build.log").read_text()[-3000:]
            paid = sim_requests(server)
        finally:
            for proc in workers.values():
                kill_tree(proc)
            if build.poll() is None:
                kill_tree(build)

    assert paid_once <= paid <= paid_once + IN_FLIGHT  # only what was in flight at the kill is paid twice
    assert_accounted(out, 30)
    for split in ("sft", "dpo", "iopo", "eval"):
        assert read_rows(tmp_path / "one" / "splits" / f"{split}.parquet") == \
            read_rows(out / "splits" / f"{split}.parquet"), split
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["funnel"] == json.loads((tmp_path / "one" / "manifest.json").read_text())["funnel"]
    second = range_runs(env)[-2:]
    assert [r["state_type"] for r in second] == ["COMPLETED", "COMPLETED"]
    assert {r["parameters"]["index"] for r in second} == {0, 1}
