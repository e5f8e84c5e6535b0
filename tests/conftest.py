import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import pyarrow.parquet as pq
import pytest

from flows.llm import simulator

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
