"""A handle on a running OpenAI-compatible server, shared by every backend launcher.

Launchers (simulated, embedded, vllm) start a server and return a RunningServer; callers
use `base_url` and `model`, and `stop()` (or a `with` block) to take it down by PID.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from flows.errors import UserError


class BackendError(UserError, RuntimeError):
    """A backend could not be started; the message is meant for the user, one line."""


def list_models(base_url: str, timeout: float = 2.0, api_key: str | None = None) -> list[str]:
    """Ids from GET {base_url}/models; raises URLError/OSError when the server is not up."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    request = urllib.request.Request(base_url.rstrip("/") + "/models", headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        payload = json.loads(resp.read().decode("utf-8"))
    return [m["id"] for m in payload.get("data", [])]


def server_root(base_url: str) -> str:
    """http://host:port for a base URL ending in /v1."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


def wait_until_ready(
    base_url: str,
    timeout: float,
    is_alive: Callable[[], bool] = lambda: True,
    what: str = "LLM server",
    api_key: str | None = None,
    health: str | None = None,
) -> list[str]:
    """Poll until the server answers, then return the models it lists; fail fast if the process
    died or the server refuses the key. With `health` (vLLM's /health, which needs no key and
    answers 200 once the engine is up), that path is polled first."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not is_alive():
            raise BackendError(f"{what} exited before it answered at {base_url}")
        try:
            if health:
                with urllib.request.urlopen(server_root(base_url) + health, timeout=2.0) as resp:
                    resp.read()
            return list_models(base_url, api_key=api_key)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403) and not (health and exc.url.endswith(health)):
                raise BackendError(f"{what} at {base_url} refused "
                                   f"{'the API key' if api_key else 'a request without an API key'} "
                                   f"(HTTP {exc.code})") from None
            last_error = exc
            time.sleep(0.25)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            last_error = exc
            time.sleep(0.25)
    raise BackendError(f"{what} did not answer at {base_url} within {timeout:.0f} s ({last_error})")


@dataclass
class RunningServer:
    base_url: str  # ends with /v1
    model: str
    process: subprocess.Popen | None = None
    _stop: Callable[[], None] | None = field(default=None, repr=False)

    def stop(self, grace: float = 10.0) -> None:
        if self._stop is not None:
            self._stop()
            self._stop = None
        if self.process is not None and self.process.poll() is None:
            stop_process(self.process, grace)

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_process(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL: a server must never outlive its launcher."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)
    except ProcessLookupError:
        pass


def die_with_parent() -> None:
    """Popen preexec_fn: the kernel sends SIGTERM to the server when its launcher dies, even by
    SIGKILL, so a model server never outlives the run that started it (Linux; elsewhere no-op)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def port_in_use(host: str, port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def spawn_server(cmd: list[str], *, host: str, port: int, model: str, what: str, log_name: str,
                 ready_timeout: float, env: dict | None = None, grace: float = 10.0,
                 api_key: str | None = None, health: str | None = None) -> RunningServer:
    """Start a model server process, log it under state_dir()/logs, and return once /v1/models
    lists `model`; on any failure the process is stopped and the error names the log."""
    logs = Path(state_dir()) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', log_name)}.log"  # the last start only
    with open(log_path, "wb") as log:
        log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                env=env, preexec_fn=die_with_parent)
    base_url = f"http://{host}:{port}/v1"
    try:
        served = wait_until_ready(base_url, ready_timeout, is_alive=lambda: proc.poll() is None, what=what,
                                  api_key=api_key, health=health)
        if model not in served:
            raise BackendError(f"{base_url} serves {served}, not {model}")
    except BaseException as exc:
        stop_process(proc, grace)
        if isinstance(exc, BackendError):
            raise BackendError(f"{exc}; log: {log_path}") from None
        raise
    return RunningServer(base_url=base_url, model=model, process=proc)


def descendants(pid: int) -> list[int]:
    """Every live process below pid (a worker's flow runs, a launcher's server), from /proc/PID/task/*/children."""
    found, todo = [], [pid]
    while todo:
        for children in Path(f"/proc/{todo.pop()}/task").glob("*/children"):
            try:
                kids = [int(c) for c in children.read_text().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def free_port(host: str = "127.0.0.1") -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def state_dir() -> str:
    """Where launchers keep reassembled weights and other per-user state."""
    return os.environ.get("TRACE_BUILD_HOME", os.path.expanduser("~/.cache/trace-build"))
