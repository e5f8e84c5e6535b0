import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import pyarrow.parquet as pq
import pytest

from flows.contracts import PAIR_STAGES, PARENT, STAGES
from flows.llm import simulator
from flows.llm.running import free_port
from flows.stack import LOG_STREAM_ENV
from flows.report import funnel

REPO = Path(__file__).resolve().parent.parent
DEMO_SEEDS = REPO / "data" / "seeds" / "demo.jsonl"
BIN = Path(sys.executable).parent  # this environment's commands (prefect, trace-build)


@pytest.fixture
def sim():
    """A fresh simulated OpenAI-compatible server (real HTTP on 127.0.0.1)."""
    with simulator.start(simulator.SimulatorConfig()) as server:
        yield server


def start_sim(**knobs):
    return simulator.start(simulator.SimulatorConfig(**knobs))


def run_cli(*args, env=None, timeout=300, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def read_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def prefect_api_call(base: str, path: str, body: dict | None = None):
    """One call to a Prefect server's REST API (POST with a body, else GET); its JSON answer."""
    req = urllib.request.Request(base + path, data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def sim_requests(server) -> int:
    return simulator.stats(server.base_url)["requests"]


def assert_accounted(run_dir, n_seeds):
    """Every row that enters a stage leaves it as output or as a reject; nothing else. A stage
    takes in exactly what its parent stage put out (a chain, forking after `respond`)."""
    rows = {r["stage"]: r for r in funnel(run_dir)}
    assert rows["seeds"]["in"] == n_seeds
    ran = [s for s in STAGES + PAIR_STAGES if s in rows]  # preference stages can be switched off
    assert set(STAGES) <= set(ran)
    for stage in ran:
        assert rows[stage]["in"] == rows[PARENT[stage]]["out"], stage
        assert rows[stage]["out"] + rows[stage]["rejected"] == rows[stage]["in"], stage
    assert rows["split:sft"]["in"] == rows["respond"]["out"]
    for stage in set(PAIR_STAGES) & set(ran):
        assert rows[f"split:{stage}"]["in"] == rows[stage]["out"]
        assert rows[f"split:{stage}"]["out"] + rows[f"split:{stage}"]["rejected"] == rows[stage]["out"]
    # one place per stage: the seed ids of outputs and rejects never overlap nor repeat
    for stage in ["seeds"] + ran:
        folder = run_dir / "stages" / stage
        out = [r["seed_id"] for p in folder.rglob("shard-*.parquet") for r in read_rows(p)]
        rej = [r["seed_id"] for p in folder.rglob("rejects-*.parquet") for r in read_rows(p)]
        assert len(set(out)) == len(out) and not set(out) & set(rej), stage
    return rows


@pytest.fixture(scope="session")
def sim_run_dir(tmp_path_factory):
    """A trace build of 90 synthetic seeds on the simulator: enough that every split has rows."""
    import json

    out = tmp_path_factory.mktemp("splits") / "run"
    config = out.parent / "c.yaml"
    config.write_text("splits:\n  eval_size: 6\n  eval_fraction: 0.1\n")
    seeds = out.parent / "seeds.jsonl"
    topics = ["rivers", "tea", "chess", "bridges", "bees", "jazz", "glaciers", "compilers", "maps", "salt"]
    seeds.write_text("".join(json.dumps({"text": f"Write a short note about {topics[i % 10]} for reader number {i}."})
                             + "\n" for i in range(90)))
    # random text rarely passes IOPO's checks (1-4 rows of 90 seeds): this simulator seed draws 4,
    # so every split has rows; any change to a template or schema redraws (pick another seed then)
    with start_sim(seed=4) as server:
        done = run_cli("run", "--seeds", seeds, "--base-url", server.base_url, "--out", out, "--quiet",
                       "--config", config)
    assert done.returncode == 0, done.stderr
    return out


TOY_WORDS = ["apple", "river", "stone", "cloud", "green", "seven", "music", "paper"]


def toy_quadruples() -> list[dict]:
    """IOPO quadruples in the official LLaMA-Factory layout: x1 asks for word a, x2 for word b;
    y1 = a a, y2 = b b. A model can learn both preferences in a few steps."""
    rows = []
    for i, a in enumerate(TOY_WORDS):
        b = TOY_WORDS[(i + 3) % len(TOY_WORDS)]
        rows.append({"conversations": [{"from": "human", "value": f"Write one word. 1. Use the word {a};"},
                                       {"from": "human", "value": f"Write one word. 1. Use the word {b};"}],
                     "chosen": {"from": "gpt", "value": f"{a} {a}"},
                     "rejected": {"from": "gpt", "value": f"{b} {b}"}})
    return rows


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny Qwen2 with a byte-level BPE tokenizer and ChatML template, built in code."""
    import json

    from flows.train.tiny import save_tiny

    texts = [json.dumps(r) for r in toy_quadruples()] + ["You are a helpful assistant. 你好，世界。"]
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model", texts)


@pytest.fixture
def toy_iopo_file(tmp_path):
    import json

    path = tmp_path / "toy_iopo.json"
    path.write_text(json.dumps(toy_quadruples()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real Prefect server (per test module) with the work pools, prefect.yaml's deployments and
    the range heartbeat automation; it streams logs out, as `trace-build up`'s does. Its env."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
           "PREFECT_CLI_PROMPT": "false", "PREFECT_WORKER_QUERY_SECONDS": "1", "PATH": f"{BIN}:{os.environ['PATH']}", **LOG_STREAM_ENV}
    log = open(home / "server.log", "w")
    server = subprocess.Popen([BIN / "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
                               "--no-ui"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for _ in range(240):
            try:
                if prefect_api_call(env["PREFECT_API_URL"], "/health") is True:
                    break
            except OSError:
                time.sleep(0.5)
        for pool in ("local", "gpu"):  # prefect deploy --all needs every pool it names
            subprocess.run([BIN / "prefect", "work-pool", "create", pool, "--type", "process", "--overwrite"],
                           env=env, check=True, capture_output=True, cwd=REPO)
        deployed = subprocess.run([BIN / "prefect", "deploy", "--all", "--no-prompt"], env=env, capture_output=True,
                                  text=True, cwd=REPO)
        assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]
        # a range whose worker dies is Crashed when its heartbeats (every 30 s) stop
        subprocess.run([sys.executable, "-m", "flows.automations", "--within", "45"], env=env, check=True, cwd=REPO)
        yield env
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def stop_worker(worker: subprocess.Popen) -> None:
    """SIGTERM, then its whole session (it runs in its own) killed if it has not left in 15 s:
    a worker can take longer than that to leave on a busy machine."""
    worker.terminate()
    try:
        worker.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=15)


def start_worker(env, name: str, logdir: Path) -> subprocess.Popen:
    log = open(logdir / f"{name}.log", "a")
    return subprocess.Popen([BIN / "prefect", "worker", "start", "--pool", "local", "--name", name, "--limit", "1"],
                            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
