"""A build outlives its Prefect server's restart. A deployment run of 2,000 simulated seeds on a
worker started as the README says (`trace-build worker`); the server SIGKILLed mid-run, then
started again on the same database and port, as a service manager would:
- down for 120 s (within the 254 s the flow runs wait, prefect.yaml's api_patience): the run ends
  Completed, its splits identical to a command-line build of the same seeds, no request paid twice;
- down for longer than the flow run waits (made 6 s here, through the run's job variables): the
  flow run fails in one line naming the API, and running it again finishes at no LLM cost."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import prefect_api_call as api, REPO, read_rows, run_cli, sim_requests, start_sim
from flows.llm.running import free_port
from flows.stack import prefect_env

pytestmark = pytest.mark.slow  # not in make test-fast: real servers and a 2-minute outage

BIN = Path(sys.executable).parent
SEEDS = 2000
FAST_LLM = {"latency_mean": 0.01, "capacity": 256}
SPLITS = ("sft", "dpo", "iopo", "eval")
ENDED = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")


class Hub:
    """The Prefect server of the stack, which the test kills and starts again on the same database."""

    def __init__(self, folder: Path):
        (folder / "state").mkdir(parents=True)
        self.folder, self.port = folder, free_port()
        self.env = {**prefect_env(folder / "state", self.port), "PREFECT_WORKER_QUERY_SECONDS": "1",
                    "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        self.env.pop("PREFECT_CLIENT_MAX_RETRIES", None)  # the patience under test is the product's
        self.api = self.env["PREFECT_API_URL"]
        self.server = None

    def start(self) -> None:
        self.server = subprocess.Popen(
            [BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port), "--no-ui"],
            env=self.env, cwd=REPO, stdout=open(self.folder / "server.log", "a"), stderr=subprocess.STDOUT,
            start_new_session=True)
        wait_for(self.healthy, 120, "the Prefect server")

    def healthy(self) -> bool:
        try:
            return api(self.api, "/health") is True
        except OSError:
            return False

    def kill(self) -> None:
        os.killpg(self.server.pid, signal.SIGKILL)
        self.server.wait(timeout=30)

    def run(self, out: Path, base_url: str, seeds: Path, job_env: dict | None = None) -> str:
        """A run of trace-build/manual, as `prefect deployment run` makes it; its id."""
        flows = {f["id"]: f["name"] for f in api(self.api, "/flows/filter", {})}
        [deployment] = [d for d in api(self.api, "/deployments/filter", {})
                        if flows[d["flow_id"]] == "trace-build" and d["name"] == "manual"]
        body = {"parameters": {"seeds": str(seeds), "out": str(out), "base_urls": [base_url], "limit": None}}
        if job_env:
            body["job_variables"] = {"env": job_env}
        return api(self.api, f"/deployments/{deployment['id']}/create_flow_run", body)["id"]

    def ended(self, run_id: str) -> dict | None:
        run = api(self.api, f"/flow_runs/{run_id}")
        return run if run["state_type"] in ENDED else None


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A server with the product's pools and deployments, a worker joined with `trace-build worker`,
    the seeds, and the command-line build of them that every flow run is compared with."""
    folder = tmp_path_factory.mktemp("outage")
    seeds = folder / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"text": f"Write a short note on topic {i % 37} for reader {i}."}) + "\n"
                             for i in range(SEEDS)))
    with start_sim(**FAST_LLM) as llm:
        one = run_cli("run", "--seeds", seeds, "--base-url", llm.base_url, "--out", folder / "cli", "--quiet")
        assert one.returncode == 0, one.stderr
        paid_once = sim_requests(llm)
    hub = Hub(folder)
    hub.start()
    worker = None
    try:
        for pool in ("local", "gpu"):  # prefect deploy --all needs every pool it names
            subprocess.run([BIN / "prefect", "work-pool", "create", pool, "--type", "process", "--overwrite"],
                           env=hub.env, check=True, capture_output=True, cwd=REPO)
        deployed = subprocess.run([BIN / "prefect", "deploy", "--all", "--no-prompt"], env=hub.env, cwd=REPO,
                                  capture_output=True, text=True)
        assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
        worker = subprocess.Popen([sys.executable, "-m", "flows.cli", "worker", "--pool", "local"], env=hub.env,
                                  cwd=REPO, stdout=open(folder / "worker.log", "a"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
        yield {"hub": hub, "seeds": seeds, "cli": folder / "cli", "paid_once": paid_once, "log": folder / "worker.log"}
    finally:
        for proc in (worker, hub.server):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)


def kill_after_a_third(hub: Hub, llm, paid_once: int) -> None:
    wait_for(lambda: sim_requests(llm) >= paid_once // 3, 300, "a third of the build's requests")
    hub.kill()


@pytest.mark.timeout(900)  # the module's setup (a CLI build, a server, the deployments) counts here
def test_a_build_outlives_its_prefect_server_down_for_two_minutes(stack, tmp_path):
    hub, out = stack["hub"], tmp_path / "flow"
    with start_sim(**FAST_LLM) as llm:
        run_id = hub.run(out, llm.base_url, stack["seeds"])
        kill_after_a_third(hub, llm, stack["paid_once"])
        time.sleep(120)
        hub.start()
        run = wait_for(lambda: hub.ended(run_id), 420, "the flow run's end")
        paid = sim_requests(llm)
    assert run["state_type"] == "COMPLETED", run["state"]
    assert paid == stack["paid_once"]  # every answer paid once, the outage notwithstanding
    for split in SPLITS:
        assert read_rows(stack["cli"] / "splits" / f"{split}.parquet") == read_rows(out / "splits" / f"{split}.parquet")


def test_a_server_down_longer_than_a_flow_run_waits_is_one_line_and_a_rerun_is_free(stack, tmp_path):
    hub, out, log = stack["hub"], tmp_path / "flow", stack["log"]
    seen = len(log.read_text())
    with start_sim(**FAST_LLM) as llm:
        # this run waits 6 s for the API (2 retries) instead of the 254 s of prefect.yaml
        run_id = hub.run(out, llm.base_url, stack["seeds"], job_env={"PREFECT_CLIENT_MAX_RETRIES": "2"})
        kill_after_a_third(hub, llm, stack["paid_once"])
        # the server stays away until the flow run has given up
        wait_for(lambda: f"the Prefect API at {hub.api} did not answer" in log.read_text()[seen:], 300,
                 "the flow run to give up")
        hub.start()
        run = wait_for(lambda: hub.ended(run_id), 120, "the worker to report the run")
        said = log.read_text()[seen:]
        paid = sim_requests(llm)
        assert paid == stack["paid_once"]  # all the work was done, only its end went unreported

        again = hub.run(out, llm.base_url, stack["seeds"])
        rerun = wait_for(lambda: hub.ended(again), 300, "the rerun's end")
        assert rerun["state_type"] == "COMPLETED", rerun["state"]
        assert sim_requests(llm) == paid  # the rerun paid nothing
    assert run["state_type"] == "CRASHED"
    lines = [line for line in said.splitlines() if f"the Prefect API at {hub.api} did not answer for 6 s" in line]
    assert len(lines) == 1 and "PREFECT_CLIENT_MAX_RETRIES=2" in lines[0] and "run it again" in lines[0], said[-3000:]
    assert "exited with unexpected exception" not in said  # the engine's traceback became that line
    for split in SPLITS:
        assert read_rows(stack["cli"] / "splits" / f"{split}.parquet") == read_rows(out / "splits" / f"{split}.parquet")
