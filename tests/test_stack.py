"""`trace-build up` brings up a real local stack and `down` takes all of it down by PID."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

from conftest import run_cli
from flows.llm.running import free_port, list_models, port_in_use
from flows.stack import postgres_bindir, prefect_env

pytestmark = pytest.mark.slow  # not in make test-fast: real servers, subprocesses or training runs


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_up_then_down(tmp_path):
    state, port, llm_port = tmp_path / "state", free_port(), free_port()
    env = {"TRACE_BUILD_STATE": str(state)}
    started = run_cli("up", "--port", port, "--backend", "simulated", "--llm-port", llm_port, "--gpu-worker",
                      env=env, timeout=240)
    try:
        assert started.returncode == 0, started.stderr
        assert f"http://127.0.0.1:{port}" in started.stdout and "trace-build down" in started.stdout
        stack = json.loads((state / "stack.json").read_text())
        assert [p["name"] for p in stack["processes"]] == ["prefect-server", "worker-local", "worker-gpu",
                                                           "llm-simulated"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as resp:
            assert resp.read().strip() == b"true"
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/deployments/filter", data=b"{}",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert {d["name"] for d in json.loads(resp.read())} >= {"manual", "nightly", "gpu"}
        assert list_models(stack["llm"]) == ["simulated-trace"]
        again = run_cli("up", "--port", port, env=env)
        assert again.returncode == 2 and "already up" in again.stderr
    finally:
        stopped = run_cli("down", env=env, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(alive(p["pid"]) for p in stack["processes"])
    assert not (state / "stack.json").exists()
    assert "nothing was up" in run_cli("down", env=env).stdout


def test_up_with_postgresql_then_down():
    """The server on a local PostgreSQL (CI installs Debian's: .ci/run); its runs outlive the stack."""
    bindir = postgres_bindir()  # PostgreSQL missing: this test fails, it does not skip
    base = Path(tempfile.mkdtemp(prefix="trace-build-pg-"))
    base.chmod(0o711)  # as root PostgreSQL runs as the postgres user, which must reach the state folder
    state, port, db_port = base / "state", free_port(), free_port()
    env = {"TRACE_BUILD_STATE": str(state), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    pids = []
    try:
        started = run_cli("up", "--database", "postgresql", "--database-port", db_port, "--port", port,
                          "--backend", "simulated", "--llm-port", free_port(), env=env, timeout=240)
        assert started.returncode == 0, started.stderr
        assert f"postgresql+asyncpg://prefect@127.0.0.1:{db_port}/prefect" in started.stdout
        stack = json.loads((state / "stack.json").read_text())
        pids += [p["pid"] for p in stack["processes"]]
        assert [p["name"] for p in stack["processes"]] == ["postgresql", "prefect-server", "worker-local",
                                                           "llm-simulated"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=5) as resp:
            assert resp.read().strip() == b"true"
        ran = subprocess.run([str(Path(sys.executable).parent / "prefect"), "deployment", "run", "trace-build/manual",
                              "--param", "limit=2", "--param", f"out={base / 'run'}", "--watch", "--watch-interval",
                              "1", "--watch-timeout", "120"], env=prefect_env(state, port), capture_output=True,
                             text=True, timeout=180)
        assert ran.returncode == 0 and "Completed" in ran.stdout, ran.stdout[-2000:] + ran.stderr[-2000:]
        # the run is in PostgreSQL (the role prefect may connect from 127.0.0.1 without a password)
        rows = subprocess.run([str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(db_port), "-U", "prefect", "-d",
                               "prefect", "-Atc", "SELECT state_type FROM flow_run"], capture_output=True, text=True)
        assert rows.stdout.split() == ["COMPLETED"], rows.stderr
        assert not (state / "prefect" / "prefect.db").exists()
        stopped = run_cli("down", env=env, timeout=120)
        assert stopped.returncode == 0 and stopped.stdout.rstrip().endswith(f"postgresql (pid {pids[0]})")
        assert not any(alive(pid) for pid in pids)

        port = free_port()  # a second up reuses the data folder: the run is still there
        again = run_cli("up", "--database", "postgresql", "--port", port, env=env, timeout=240)
        assert again.returncode == 0, again.stderr
        pids += [p["pid"] for p in json.loads((state / "stack.json").read_text())["processes"]]
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/flow_runs/filter", data=b"{}",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert [r["state_type"] for r in json.loads(resp.read())] == ["COMPLETED"]
    finally:
        stopped = run_cli("down", env=env, timeout=120)
        shutil.rmtree(base, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stderr
    assert not any(alive(pid) for pid in pids)


def test_up_postgresql_not_installed(tmp_path):
    state, port = tmp_path / "state", free_port()
    env = {"TRACE_BUILD_STATE": str(state), "TRACE_BUILD_POSTGRES_BIN": str(tmp_path / "nowhere")}
    done = run_cli("up", "--database", "postgresql", "--port", port, env=env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "apt-get install postgresql" in done.stderr, done.stderr
    assert done.stdout == "" and not (state / "stack.json").exists() and not port_in_use("127.0.0.1", port)
