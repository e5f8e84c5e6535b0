"""`trace-build up` brings up a real local stack and `down` takes all of it down by PID."""
import json
import os
import urllib.request

from conftest import run_cli
from flows.llm.running import free_port, list_models


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
