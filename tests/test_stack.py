"""`trace-build up` brings up a real local stack and `down` takes all of it down by PID."""
import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import DEMO_SEEDS, REPO, assert_accounted, run_cli, start_sim
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
        listed = next(line for line in started.stdout.splitlines() if line.startswith("deployments:"))
        assert listed.startswith("deployments: iopo-train/gpu, trace-build-range/local, trace-build/manual, "
                                 "trace-build/nightly, trace-eval/manual; workers on local and gpu"), listed
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


def api_call(url: str, secret: str | None = None, body: dict | None = None) -> tuple[int, object]:
    """POST to a Prefect API, with the secret as Prefect's clients send it: (status, JSON body)."""
    headers = {"Content-Type": "application/json"}
    if secret:
        headers["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
    request = urllib.request.Request(url, data=json.dumps(body or {}).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None


def files_holding(folder: Path, secret: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_up_listen_serves_other_machines_behind_a_secret_and_a_joined_worker_builds(tmp_path):
    """`up --listen` on 127.0.0.2 (a loopback address standing in for the LAN's): the API and the
    UI want the secret, the printed join line starts a worker that runs a 2-range build, and the
    secret is written nowhere."""
    secret = f"team:{secrets.token_hex(12)}"
    state, port, out = tmp_path / "state", free_port(), tmp_path / "run"
    env = {"TRACE_BUILD_STATE": str(state), "PREFECT_API_AUTH_STRING": secret, "PREFECT_WORKER_QUERY_SECONDS": "1"}

    refused = run_cli("up", "--listen", "127.0.0.2", "--port", port, env={**env, "PREFECT_API_AUTH_STRING": ""})
    assert refused.returncode == 2 and refused.stdout == "", refused.stdout + refused.stderr
    assert refused.stderr.count("\n") == 1 and "--listen needs the server's secret" in refused.stderr
    assert not state.exists() and not port_in_use("127.0.0.2", port)

    worker = None
    try:
        started = run_cli("up", "--listen", "127.0.0.2", "--port", port, "--no-worker", env=env, timeout=240)
        assert started.returncode == 0, started.stderr
        assert not port_in_use("127.0.0.1", port)  # on the address asked for, not beside it
        api = f"http://127.0.0.2:{port}/api"
        assert api_call(f"{api}/deployments/filter")[0] == 401
        assert api_call(f"{api}/deployments/filter", "team:wrong")[0] == 401
        status, deployments = api_call(f"{api}/deployments/filter", secret)
        assert status == 200 and {d["name"] for d in deployments} >= {"manual", "nightly", "local"}

        # the UI asks for the secret before it shows anything
        page = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               f"--user-data-dir={tmp_path / 'chrome'}", "--virtual-time-budget=20000", "--dump-dom",
                               f"http://127.0.0.2:{port}/dashboard"], capture_output=True, text=True, timeout=120)
        assert 'type="password"' in page.stdout, page.stdout[-2000:]

        # the join line, as printed, on "another machine": a wrong secret is one line, exit 2
        join = next(line for line in started.stdout.splitlines() if line.startswith("join:")).split()[1:6]
        assert join[:2] == [f"PREFECT_API_URL={api}", "trace-build"] and secret not in started.stdout
        joined = {**os.environ, join[0].split("=", 1)[0]: join[0].split("=", 1)[1], "PREFECT_WORKER_QUERY_SECONDS": "1"}
        command = [sys.executable, "-m", "flows.cli", *join[2:]]
        wrong = subprocess.run(command, env={**joined, "PREFECT_API_AUTH_STRING": "team:wrong"}, capture_output=True,
                               text=True, timeout=60, cwd=REPO)
        assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1, wrong.stderr
        assert f"the Prefect API at {api} refused the secret (HTTP 401)" in wrong.stderr

        worker = subprocess.Popen(command, env={**joined, "PREFECT_API_AUTH_STRING": secret}, cwd=REPO,
                                  stdout=open(tmp_path / "worker.log", "w"), stderr=subprocess.STDOUT,
                                  start_new_session=True)
        with start_sim(latency_mean=0.01) as llm:
            ran = subprocess.run([str(Path(sys.executable).parent / "prefect"), "deployment", "run",
                                  "trace-build/manual", "--param", f"seeds={DEMO_SEEDS}", "--param", f"out={out}",
                                  "--param", f"base_urls={json.dumps([llm.base_url])}", "--param", "ranges=2",
                                  "--param", "limit=null", "--watch", "--watch-interval", "1", "--watch-timeout", "240"],
                                 env={**joined, "PREFECT_API_AUTH_STRING": secret}, capture_output=True, text=True,
                                 timeout=300, cwd=REPO)
        assert ran.returncode == 0 and "Completed" in ran.stdout, ran.stdout[-2000:] + ran.stderr[-2000:]
        _, ranges = api_call(f"{api}/flow_runs/filter", secret, {"flow_runs": {"tags": {"all_": ["trace-build-range"]}}})
        assert sorted(r["state_type"] for r in ranges) == ["COMPLETED", "COMPLETED"]
        assert_accounted(out, 30)
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
        stopped = run_cli("down", env=env, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert files_holding(state, secret) == [] and files_holding(out, secret) == []
