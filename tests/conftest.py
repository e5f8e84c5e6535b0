import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import pyarrow.parquet as pq
import pytest

from flows.contracts import PAIR_STAGES, PARENT, STAGES
from flows.llm import simulator
from flows.report import funnel

REPO = Path(__file__).resolve().parent.parent
DEMO_SEEDS = REPO / "data" / "seeds" / "demo.jsonl"


@pytest.fixture
def sim():
    """A fresh simulated OpenAI-compatible server (real HTTP on 127.0.0.1)."""
    with simulator.start(simulator.SimulatorConfig()) as server:
        yield server


def start_sim(**knobs):
    return simulator.start(simulator.SimulatorConfig(**knobs))


def run_cli(*args, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "flows.cli", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def read_rows(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


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
        out = [r["seed_id"] for p in folder.glob("shard-*.parquet") for r in read_rows(p)]
        rej = [r["seed_id"] for p in folder.glob("rejects-*.parquet") for r in read_rows(p)]
        assert len(set(out)) == len(out) and not set(out) & set(rej), stage
    return rows
