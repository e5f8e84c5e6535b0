"""`trace-build up` / `trace-build down`: the local stack a user watches runs in.

up: a Prefect server on 127.0.0.1 with its own PREFECT_HOME under the project's state folder
(analytics off), the work pools `local` and `gpu`, `prefect deploy --all`, a worker on `local`,
and optionally an LLM backend (`trace-build serve-llm`). Every process is started detached, and
its PID, log and URL are recorded in <state>/stack.json. down: stops them by PID, newest first.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from flows.llm.running import BackendError, port_in_use, wait_until_ready

STACK_FILE = "stack.json"


def state_folder(path: str | None = None) -> Path:
    return Path(path or os.environ.get("TRACE_BUILD_STATE", ".state")).resolve()


def prefect_env(state: Path, port: int) -> dict:
    return {**os.environ, "PREFECT_HOME": str(state / "prefect"), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_EPHEMERAL_ENABLED": "false", "PREFECT_CLI_PROMPT": "false"}


def _prefect() -> str:
    found = shutil.which("prefect") or str(Path(sys.executable).parent / "prefect")
    if not Path(found).exists():
        raise BackendError("the prefect command is not installed in this environment")
    return found


def _spawn(cmd: list[str], env: dict, log: Path) -> int:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # outlives this command; `down` stops it
    return proc.pid


def _wait_health(url: str, timeout: float, pid: int) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            raise BackendError("the Prefect server exited while starting")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.read().strip() == b"true":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise BackendError(f"the Prefect server did not answer at {url} within {timeout:.0f} s")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def up(state: Path, port: int = 4200, backend: str | None = None, llm_port: int = 8011,
       backend_model: str | None = None, timeout: float = 120, gpu_worker: bool = False) -> dict:
    stack_file = state / STACK_FILE
    if stack_file.exists() and any(_alive(p["pid"]) for p in json.loads(stack_file.read_text())["processes"]):
        raise BackendError(f"a stack is already up ({stack_file}); run `trace-build down` first")
    if port_in_use("127.0.0.1", port):
        raise BackendError(f"port {port} on 127.0.0.1 is in use; choose another with --port")
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = prefect_env(state, port)
    prefect = _prefect()
    stack = {"ui": f"http://127.0.0.1:{port}", "api": env["PREFECT_API_URL"], "processes": []}

    def record(name: str, pid: int, log: Path) -> None:
        stack["processes"].append({"name": name, "pid": pid, "log": str(log)})
        state.mkdir(parents=True, exist_ok=True)
        stack_file.write_text(json.dumps(stack, indent=2) + "\n")  # written as we go: `down` always finds them

    try:
        pid = _spawn([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off"],
                     env, logs / "server.log")
        record("prefect-server", pid, logs / "server.log")
        _wait_health(f"{stack['api']}/health", timeout, pid)
        for pool in ("local", "gpu"):
            subprocess.run([prefect, "work-pool", "create", pool, "--type", "process", "--overwrite"], env=env,
                           check=True, capture_output=True)
        deployed = subprocess.run([prefect, "deploy", "--all", "--no-prompt"], env=env, capture_output=True, text=True)
        (logs / "deploy.log").write_text(deployed.stdout + deployed.stderr)
        if deployed.returncode != 0:
            raise BackendError(f"prefect deploy failed; see {logs / 'deploy.log'}")
        worker_env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}
        record("worker-local", _spawn([prefect, "worker", "start", "--pool", "local"], worker_env, logs / "worker.log"),
               logs / "worker.log")
        if gpu_worker:  # this machine also trains: it takes the iopo-train/gpu runs a build starts
            record("worker-gpu", _spawn([prefect, "worker", "start", "--pool", "gpu"], worker_env,
                                        logs / "worker-gpu.log"), logs / "worker-gpu.log")
        if backend:
            cmd = [sys.executable, "-m", "flows.cli", "serve-llm", "--backend", backend, "--port", str(llm_port)]
            if backend_model:
                cmd += ["--model", backend_model]
            pid = _spawn(cmd, env, logs / f"llm-{backend}.log")
            record(f"llm-{backend}", pid, logs / f"llm-{backend}.log")
            base_url = f"http://127.0.0.1:{llm_port}/v1"
            wait_until_ready(base_url, 600 if backend == "embedded" else 60, lambda: _alive(pid), f"{backend} LLM")
            stack["llm"] = base_url
            stack_file.write_text(json.dumps(stack, indent=2) + "\n")
    except BaseException:
        down(state)
        raise
    return stack


def down(state: Path, grace: float = 15.0) -> list[str]:
    """Stop every process of the stack, newest first: SIGTERM, a second SIGTERM (Prefect's
    worker turns the first into an interrupt), then SIGKILL."""
    stack_file = state / STACK_FILE
    if not stack_file.exists():
        return []
    stopped = []
    for proc in reversed(json.loads(stack_file.read_text())["processes"]):
        pid = proc["pid"]
        for sig, wait in ((signal.SIGTERM, grace / 2), (signal.SIGTERM, grace / 2), (signal.SIGKILL, 5.0)):
            if not _alive(pid):
                break
            try:
                os.killpg(pid, sig)  # its whole session: a worker's flow runs, a server's children
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
        stopped.append(f"{proc['name']} (pid {pid})")
    stack_file.unlink()
    return stopped
