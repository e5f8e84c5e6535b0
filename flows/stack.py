"""`trace-build up` / `trace-build down`: the local stack a user watches runs in.

up: a Prefect server on 127.0.0.1 (or, with --listen, on an address other machines reach, behind
Prefect's basic authentication) with its own PREFECT_HOME under the project's state folder
(analytics off), the work pools `local` and `gpu`, `prefect deploy --all`, the automation that
marks flow runs without heartbeats Crashed (flows/automations.py), a worker on `local`, and optionally an LLM backend (`trace-build serve-llm`). Every process is started detached, and
its PID, log and URL are recorded in <state>/stack.json. down: stops them by PID, newest first.

The server's database is SQLite in its PREFECT_HOME, or with database="postgresql" a PostgreSQL of
this machine's install (Debian: apt-get install postgresql) with its data in <state>/postgres:
initialised once, started first and stopped last, listening on 127.0.0.1 only.
"""
from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from flows import prefect_api
from flows.errors import UserError
from flows.llm.running import BackendError, free_port, port_in_use, wait_until_ready

STACK_FILE = "stack.json"


def state_folder(path: str | None = None) -> Path:
    return Path(path or os.environ.get("TRACE_BUILD_STATE", ".state")).resolve()


def prefect_env(state: Path, port: int, host: str = "127.0.0.1") -> dict:
    return {**os.environ, "PREFECT_HOME": str(state / "prefect"), "PREFECT_API_URL": f"http://{host}:{port}/api",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
            "PREFECT_SERVER_EPHEMERAL_ENABLED": "false", "PREFECT_CLI_PROMPT": "false"}


# The server streams flow run logs out, so `prefect deployment run ... --watch` shows a run's log
# lines (a failed run's reason among them), not only its state changes.
LOG_STREAM_ENV = {"PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "true", "PREFECT_SERVER_LOGS_STREAM_PUBLISHING_ENABLED": "true"}


def prefect_command() -> str:
    found = shutil.which("prefect") or str(Path(sys.executable).parent / "prefect")
    if not Path(found).exists():
        raise BackendError("the prefect command is not installed in this environment")
    return found


def _spawn(cmd: list, env: dict, log: Path, **popen) -> int:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, **popen)  # outlives this command; `down` stops it
    return proc.pid


PG_MISSING = ("PostgreSQL is not installed here (no initdb in {where}); install it with "
              "`apt-get install postgresql`, or leave out --database postgresql")


def postgres_bindir() -> Path:
    """The folder of initdb, postgres and pg_isready: $TRACE_BUILD_POSTGRES_BIN if set, else
    Debian's /usr/lib/postgresql/<newest>/bin, else `pg_config --bindir`, else initdb on PATH."""
    if os.environ.get("TRACE_BUILD_POSTGRES_BIN"):
        candidates, where = [Path(os.environ["TRACE_BUILD_POSTGRES_BIN"])], "$TRACE_BUILD_POSTGRES_BIN"
    else:
        where = "/usr/lib/postgresql/*/bin, `pg_config --bindir` or PATH"
        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True,
                            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else -1)
        if shutil.which("pg_config"):
            bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True).stdout.strip()
            candidates.append(Path(bindir))
        if shutil.which("initdb"):
            candidates.append(Path(shutil.which("initdb")).parent)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "postgres", "pg_isready")):
            return bindir
    raise BackendError(PG_MISSING.format(where=where))


def _postgres_user() -> dict:
    """Popen keywords for PostgreSQL's programs. PostgreSQL refuses to run as root, so as root they
    run as Debian's `postgres` system user (the same as `runuser -u postgres --`, without needing
    util-linux), which owns the data folder; root can still signal and remove it. Anyone else runs
    them as themselves."""
    if os.geteuid() != 0:
        return {"cwd": "/"}
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise BackendError("PostgreSQL refuses to run as root and there is no `postgres` user to run it as; "
                           "run trace-build up as another user") from None
    return {"cwd": "/", "user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _init_postgres(bindir: Path, data: Path, as_user: dict, log: Path) -> None:
    """initdb once: a database `prefect` owned by a role `prefect` (no superuser), which only
    127.0.0.1 may reach, without a password (a local development database; `trust` is limited to
    that role and database). No unix socket. Made in a side folder, renamed when complete."""
    if (data / "PG_VERSION").exists():
        return
    fresh = data.with_name(data.name + ".init")
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir(mode=0o700, parents=True)
    if "user" in as_user:
        os.chown(fresh, as_user["user"], as_user["group"])

    def run(cmd: list, stdin: bytes | None = None) -> None:
        done = subprocess.run([str(c) for c in cmd], input=stdin, capture_output=True, **as_user)
        with open(log, "ab") as out:
            out.write(done.stdout + done.stderr)
        if done.returncode != 0 or b"ERROR:" in done.stdout + done.stderr:
            raise BackendError(f"{Path(cmd[0]).name} failed while making {data}; see {log}")

    run([bindir / "initdb", "-D", fresh, "-U", "postgres", "--encoding=UTF8", "--no-locale", "--auth=reject"])
    (fresh / "pg_hba.conf").write_text("# trace-build: the role prefect, to the database prefect, from 127.0.0.1 only\n"
                                       "host prefect prefect 127.0.0.1/32 trust\n")
    with open(fresh / "postgresql.conf", "a") as conf:
        conf.write("\n# trace-build\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")
    run([bindir / "postgres", "--single", "-D", fresh, "postgres"],  # single-user mode: no connection
        b"CREATE ROLE prefect LOGIN;\nCREATE DATABASE prefect OWNER prefect;\n")
    fresh.rename(data)


def _start_postgres(state: Path, port: int, timeout: float, record) -> str:
    """Start PostgreSQL on <state>/postgres; returns the Prefect server's connection URL."""
    bindir = postgres_bindir()
    as_user = _postgres_user()
    if "user" in as_user and subprocess.run(["test", "-x", str(state)], **as_user).returncode != 0:
        raise BackendError(f"the postgres user (PostgreSQL refuses to run as root) cannot reach {state}; "
                           "make its parent folders traversable (chmod o+x) or choose another --state")
    port = port or free_port()
    if port_in_use("127.0.0.1", port):
        raise BackendError(f"port {port} on 127.0.0.1 is in use; choose another with --database-port")
    data, log = state / "postgres", state / "logs" / "postgres.log"
    _init_postgres(bindir, data, as_user, state / "logs" / "postgres-init.log")
    pid = _spawn([str(bindir / "postgres"), "-D", str(data), "-p", str(port)], dict(os.environ), log, **as_user)
    record("postgresql", pid, log)
    ready = [str(bindir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", "prefect", "-d", "prefect"]
    deadline = time.monotonic() + timeout
    while subprocess.run(ready + ["-t", "2"]).returncode != 0:
        if not _alive(pid) or time.monotonic() > deadline:
            fatal = [line for line in log.read_text(errors="replace").splitlines() if "FATAL" in line]
            raise BackendError(f"PostgreSQL did not start ({fatal[-1].strip() if fatal else 'timed out'}); "
                               f"see {log}")
        time.sleep(0.3)
    return f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect"


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


def url_host(address: str) -> str:
    """An address as the host of a URL (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address else address


def reachable_host(listen: str) -> str:
    """The host other machines put in the URL of a server listening on `listen`."""
    return socket.getfqdn() if ipaddress.ip_address(listen).is_unspecified else url_host(listen)


def up(state: Path, port: int = 4200, backend: str | None = None, llm_port: int = 8011,
       backend_model: str | None = None, timeout: float = 120, gpu_worker: bool = False,
       database: str = "sqlite", database_port: int = 0, listen: str | None = None, secret: str | None = None,
       local_worker: bool = True) -> dict:
    """The stack; with `listen`, the Prefect server (API and UI) on that address, behind `secret`
    (flows/prefect_api.py), which only the environments of the processes started here get."""
    if listen is not None:
        try:
            ipaddress.ip_address(listen)
        except ValueError:
            raise UserError(f"--listen {listen}: not an IP address (0.0.0.0 for every interface)") from None
        if not secret:
            raise UserError(f"--listen needs the server's secret: {prefect_api.HOW}")
    host = listen or "127.0.0.1"
    local = "127.0.0.1" if ipaddress.ip_address(host).is_unspecified else host  # where this machine calls it
    stack_file = state / STACK_FILE
    if stack_file.exists() and any(_alive(p["pid"]) for p in json.loads(stack_file.read_text())["processes"]):
        raise BackendError(f"a stack is already up ({stack_file}); run `trace-build down` first")
    if port_in_use(host, port):
        raise BackendError(f"port {port} on {host} is in use; choose another with --port")
    if database == "postgresql":
        postgres_bindir()  # before anything starts
        if importlib.util.find_spec("asyncpg") is None:
            raise BackendError("the Prefect server needs asyncpg for PostgreSQL: pip install asyncpg")
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    env = prefect_env(state, port, url_host(local))
    if secret:
        env[prefect_api.ENV] = secret
    prefect = prefect_command()
    public = f"http://{reachable_host(host)}:{port}"  # the server as other machines (and their browsers) call it
    stack = {"ui": public, "api": env["PREFECT_API_URL"], "processes": []}
    if listen is not None:
        stack["join"] = f"PREFECT_API_URL={public}/api trace-build worker --pool local"

    def record(name: str, pid: int, log: Path) -> None:
        stack["processes"].append({"name": name, "pid": pid, "log": str(log)})
        state.mkdir(parents=True, exist_ok=True)
        stack_file.write_text(json.dumps(stack, indent=2) + "\n")  # written as we go: `down` always finds them

    try:
        server_env = {**env, **LOG_STREAM_ENV, "PREFECT_UI_API_URL": f"{public}/api"}
        if secret:
            server_env[prefect_api.SERVER_ENV] = secret
        if database == "postgresql":  # started first, so stopped last
            stack["database"] = _start_postgres(state, database_port, timeout, record)
            server_env.pop("PREFECT_SERVER_DATABASE_CONNECTION_URL", None)
            server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = stack["database"]
        pid = _spawn([prefect, "server", "start", "--host", host, "--port", str(port), "--analytics-off"],
                     server_env, logs / "server.log")
        record("prefect-server", pid, logs / "server.log")
        _wait_health(f"{stack['api']}/health", timeout, pid)
        for pool in ("local", "gpu"):
            subprocess.run([prefect, "work-pool", "create", pool, "--type", "process", "--overwrite"], env=env,
                           check=True, capture_output=True)
        deployed = subprocess.run([prefect, "deploy", "--all", "--no-prompt"], env=env, capture_output=True, text=True)
        (logs / "deploy.log").write_text(deployed.stdout + deployed.stderr)
        if deployed.returncode != 0:
            raise BackendError(f"prefect deploy failed; see {logs / 'deploy.log'}")
        stack["deployments"] = prefect_api.deployment_names(env["PREFECT_API_URL"], secret)
        subprocess.run([sys.executable, "-m", "flows.automations"], env=env, check=True, capture_output=True)
        workers = worker_env(env, secret)
        if local_worker:
            record("worker-local", _spawn([prefect, "worker", "start", "--pool", "local"], workers,
                                          logs / "worker.log"), logs / "worker.log")
        if gpu_worker:  # this machine also trains: it takes the iopo-train/gpu runs a build starts
            record("worker-gpu", _spawn([prefect, "worker", "start", "--pool", "gpu"], workers,
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


def worker_env(base: dict, secret: str | None) -> dict:
    """A worker's environment: this install's commands first on PATH (the flow runs it starts
    call them), the secret where Prefect's client reads it, and the patience with an API that
    went away (a setting of the caller's own wins)."""
    env = {**base, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"}
    env.setdefault(prefect_api.RETRIES_ENV, str(prefect_api.RETRIES))
    if secret:
        env[prefect_api.ENV] = secret
    return env


# How each process is stopped: (signal, to its whole session?) in turn, until it is gone.
# Prefect's worker turns the first SIGTERM into an interrupt, hence a second one. PostgreSQL's
# postmaster alone: SIGINT is a fast shutdown (what `pg_ctl stop -m fast` sends), SIGQUIT immediate.
STOP_SIGNALS = {"postgresql": ((signal.SIGINT, False), (signal.SIGQUIT, False), (signal.SIGKILL, True))}
DEFAULT_STOP = ((signal.SIGTERM, True), (signal.SIGTERM, True), (signal.SIGKILL, True))


def down(state: Path, grace: float = 15.0) -> list[str]:
    """Stop every process of the stack, newest first (PostgreSQL after the Prefect server): see
    STOP_SIGNALS; the last is a SIGKILL."""
    stack_file = state / STACK_FILE
    if not stack_file.exists():
        return []
    stopped = []
    for proc in reversed(json.loads(stack_file.read_text())["processes"]):
        pid = proc["pid"]
        for (sig, session), wait in zip(STOP_SIGNALS.get(proc["name"], DEFAULT_STOP), (grace / 2, grace / 2, 5.0)):
            if not _alive(pid):
                break
            try:  # its whole session: a worker's flow runs, a server's children
                (os.killpg if session else os.kill)(pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + wait
            while _alive(pid) and time.monotonic() < deadline:
                time.sleep(0.2)
        stopped.append(f"{proc['name']} (pid {pid})")
    stack_file.unlink()
    return stopped
