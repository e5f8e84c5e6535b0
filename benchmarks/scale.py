"""How a trace build scales with the number of seeds: one process (the CLI), the `trace-build`
flow on a real Prefect server, and the flow fanned out over 2 ranges on 2 workers.

The LLM is the simulator (flows/llm/simulator.py) made fast: mean latency 0.01 s, 256 requests in
service at once (25,600 requests/s at best), and the client keeps llm.max_in_flight = 128 in flight.
No build gets near that: the client's CPU (HTTP stack, JSON, the stages' own work) and, on a small
machine, the simulator's CPU decide the throughput, not the server's latency or capacity. The CPU
columns say which: a process using close to 1 core is the bottleneck.

1. CLI builds: `python -m flows.cli run --seeds FILE --base-url URL --out DIR --quiet --config C`
   (C sets only llm.max_in_flight) as a subprocess, a fresh simulator and run folder per size.
   Wall seconds of the subprocess; requests (the simulator's counters); requests/s over the
   server's busy window (first request to last answer, as benchmarks/throughput.py); client CPU
   ms per request (user + sys of the build process from os.wait4, imports included); the build
   process's peak RSS (ru_maxrss from os.wait4); the simulator's peak RSS (VmHWM) and CPU.
2. The flow: a Prefect server (SQLite, its own PREFECT_HOME in a temp dir, `--no-ui`, a free
   port), the pools `local` and `gpu`, `prefect deploy --all`, one worker `--limit 1`; then what a
   user types, `prefect deployment run trace-build/manual --param seeds=.. --param out=..
   --param base_urls='[..]' --param config=C --param limit=null --watch`. Wall is that command's
   (worker pickup, the flow-run subprocess's start and imports included); "run s" is the flow
   run's own time from the API. The flow run executes in a subprocess of the worker, so peak
   RSS and CPU are sampled from /proc every 0.2 s for the server, the worker and every
   descendant of the worker (VmHWM is the kernel's own high-water mark, reset through
   /proc/PID/clear_refs before each size: a sample only has to come before the process exits).
   Task runs: POST /api/task_runs/count for the flow run and its child flow runs.
3. The fan-out: the same stack with 2 workers `--limit 1`; the parent flow called from a Python
   subprocess with ranges=2 (as tests/test_ranges_prefect.py does), its ranges taken by the
   workers. Parent peak RSS and CPU from os.wait4; each range's flow-run process, the workers
   and the server sampled as in 2.

Ratios compare the flow with the CLI at the same size. The numbers are only as quiet as the
machine: the simulator, the Prefect server and the build share its cores.

    python benchmarks/scale.py                                         # 1k, 10k, 100k CLI; 1k, 10k flows
    python benchmarks/scale.py --cli-sizes 200 --flow-sizes 200        # smoke run, about 2 minutes
    python benchmarks/scale.py --cli-sizes 1000 --flow-sizes "" --json scale.json
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.throughput import report as busy_report, synthetic_seeds  # noqa: E402
from flows.llm import simulator  # noqa: E402
from flows.llm.running import descendants, free_port  # noqa: E402
from flows.stack import prefect_env  # noqa: E402

BIN = Path(sys.executable).parent
PREFECT = str(BIN / "prefect")
TICKS = os.sysconf("SC_CLK_TCK")
FANOUT_CODE = ("import asyncio, sys; from flows.trace_build import trace_build; "
               "asyncio.run(trace_build(seeds=sys.argv[1], out=sys.argv[2], base_urls=[sys.argv[3]], ranges=2, "
               "config=sys.argv[4]))")


@dataclass
class Settings:
    latency: float = 0.01
    capacity: int = 256
    max_in_flight: int = 128
    timeout: float = 4 * 3600  # seconds one build may take


# ---------------------------------------------------------------------------------------------
# Processes: /proc readings, starting and stopping
# ---------------------------------------------------------------------------------------------

def peak_kb(pid: int) -> int | None:
    """The process's peak RSS so far (VmHWM, kB); None once it is gone."""
    try:
        return next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def reset_peak(pid: int) -> None:
    """Start VmHWM again from the current RSS (Linux >= 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of the process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def flow_run_of(pid: int) -> str | None:
    """The flow run a worker's subprocess executes (the worker sets PREFECT__FLOW_RUN_ID)."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    return next((v[len(b"PREFECT__FLOW_RUN_ID="):].decode() for v in env if v.startswith(b"PREFECT__FLOW_RUN_ID=")),
                None)


@dataclass
class Sampled:
    root: str  # the name of the started process it is, or is below
    flow_run: str | None
    peak_kb: int = 0
    cpu_s: float = 0.0


class PeakSampler:
    """Peak RSS and CPU of named processes and of everything below them, read from /proc every
    `every` seconds in a thread while the block runs; peaks are reset when it starts."""

    def __init__(self, roots: dict[str, int], every: float = 0.2):
        self.roots, self.every = roots, every
        self.seen: dict[int, Sampled] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "PeakSampler":
        for _, pid in self._pids():
            reset_peak(pid)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _pids(self):
        for name, root in self.roots.items():
            for pid in [root, *descendants(root)]:
                yield name, pid

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def sample(self) -> None:
        for name, pid in list(self._pids()):
            kb, cpu = peak_kb(pid), cpu_seconds(pid)
            if kb is None or cpu is None:
                continue
            s = self.seen.setdefault(pid, Sampled(name, None if pid == self.roots[name] else flow_run_of(pid)))
            s.peak_kb, s.cpu_s = max(s.peak_kb, kb), cpu

    def peak_mb(self, name: str) -> float:
        """Of the named process itself, not of what runs below it."""
        return round(self.seen[self.roots[name]].peak_kb / 1024, 1)

    def flow_run(self, flow_run_id: str) -> Sampled | None:
        """The process (the largest, if a wrapper ran it) that executed this flow run."""
        runs = [s for s in self.seen.values() if s.flow_run == flow_run_id]
        return max(runs, key=lambda s: s.peak_kb, default=None)

    def running_flow_runs(self) -> list[int]:
        return [pid for _, pid in self._pids() if flow_run_of(pid)]


def spawn(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    """A process in its own session (so its whole group can be stopped), output to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def started_at(pid: int) -> int | None:
    """The process's start time (clock ticks after boot): with its pid, who it is."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except OSError:
        return None


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to its process group, again (a Prefect worker turns the first into an interrupt),
    then SIGKILL; then SIGKILL to what was below it and outlived it (a worker's flow runs may run
    in sessions of their own)."""
    below = {pid: started_at(pid) for pid in descendants(proc.pid)}
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    for pid, started in below.items():
        try:
            if started_at(pid) == started:
                os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class Finished:
    wall_s: float
    cpu_s: float  # user + sys of the process and the children it waited for
    peak_rss_mb: float


def run_measured(cmd: list[str], env: dict, log: Path, timeout: float) -> Finished:
    """Run a command to the end and read its own resource usage back from os.wait4."""
    started = time.perf_counter()
    proc = spawn(cmd, env, log)
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.perf_counter() - started > timeout:
                raise TimeoutError(f"{' '.join(cmd[:4])} ... ran over {timeout:.0f} s; log: {log}")
            time.sleep(0.1)
    finally:
        if proc.returncode is None:
            stop_group(proc)
    wall = time.perf_counter() - started
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}:\n{log_tail(log)}")
    return Finished(wall, usage.ru_utime + usage.ru_stime, round(usage.ru_maxrss / 1024, 1))


def log_tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:]


def wait_until(check, timeout: float, what: str, every: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(every)


# ---------------------------------------------------------------------------------------------
# One build's inputs and the simulator's side of it
# ---------------------------------------------------------------------------------------------

@dataclass
class Workload:
    seeds: Path
    config: Path
    out: Path
    logs: Path
    server: simulator.RunningServer | None = None
    sim_cpu_start: float = 0.0


@contextmanager
def workload(n_seeds: int, settings: Settings):
    """A temp dir with n synthetic seeds, the config (llm.max_in_flight), a fresh run folder and
    a fresh simulator; all gone afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"trace-scale-{n_seeds}-") as tmp:
        tmp = Path(tmp)
        work = Workload(tmp / "seeds.jsonl", tmp / "config.yaml", tmp / "run", tmp)
        synthetic_seeds(work.seeds, n_seeds)
        work.config.write_text(f"llm:\n  max_in_flight: {settings.max_in_flight}\n")
        with simulator.start(simulator.SimulatorConfig(latency_mean=settings.latency,
                                                       capacity=settings.capacity)) as server:
            work.server, work.sim_cpu_start = server, cpu_seconds(server.process.pid)
            yield work


def server_side(work: Workload, n_seeds: int, settings: Settings, wall: float) -> dict:
    """What the simulator saw: requests, requests/s over its busy window, its peak RSS and CPU."""
    pid = work.server.process.pid
    stats = simulator.stats(work.server.base_url)
    busy = busy_report("constant", stats, settings.capacity, wall, seeds=n_seeds)
    sim_cpu = cpu_seconds(pid) - work.sim_cpu_start
    return {"seeds": n_seeds, "requests": busy["requests"], "requests_per_seed": round(busy["requests"] / n_seeds, 2),
            "wall_s": busy["wall_seconds"], "busy_s": busy["busy_seconds"], "requests_per_s": busy["requests_per_s"],
            "slots_busy": busy["occupancy"], "sim_peak_rss_mb": round(peak_kb(pid) / 1024, 1),
            "sim_cpu_ms_per_request": per_request_ms(sim_cpu, busy["requests"]),
            "sim_cpu_cores": round(sim_cpu / busy["busy_seconds"], 2)}


def per_request_ms(cpu_s: float, requests: int) -> float:
    return round(1000 * cpu_s / max(requests, 1), 2)


# ---------------------------------------------------------------------------------------------
# 1. CLI builds
# ---------------------------------------------------------------------------------------------

def measure_cli(n_seeds: int, settings: Settings) -> dict:
    with workload(n_seeds, settings) as work:
        cmd = [sys.executable, "-m", "flows.cli", "run", "--seeds", str(work.seeds), "--base-url",
               work.server.base_url, "--out", str(work.out), "--quiet", "--config", str(work.config)]
        done = run_measured(cmd, dict(os.environ), work.logs / "cli.log", settings.timeout)
        result = server_side(work, n_seeds, settings, done.wall_s)
    return result | {"client_cpu_ms_per_request": per_request_ms(done.cpu_s, result["requests"]),
                     "client_cpu_cores": round(done.cpu_s / done.wall_s, 2), "build_peak_rss_mb": done.peak_rss_mb}


# ---------------------------------------------------------------------------------------------
# A Prefect stack: server, pools, deployments, workers
# ---------------------------------------------------------------------------------------------

@dataclass
class Stack:
    env: dict
    api: str
    server: subprocess.Popen
    workers: list[subprocess.Popen] = field(default_factory=list)

    def post(self, path: str, body: dict):
        resp = httpx.post(self.api + path, json=body, timeout=30)
        resp.raise_for_status()
        return resp.json()

    def get(self, path: str):
        resp = httpx.get(self.api + path, timeout=30)
        resp.raise_for_status()
        return resp.json()

    def sampler(self) -> PeakSampler:
        return PeakSampler({"server": self.server.pid} | {f"worker-{i}": w.pid for i, w in enumerate(self.workers)})


def healthy(api: str) -> bool:
    try:
        return httpx.get(api + "/health", timeout=2).json() is True
    except (httpx.HTTPError, ValueError):
        return False


def run_checked(cmd: list[str], env: dict, log: Path) -> None:
    done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    log.write_text(done.stdout + done.stderr)
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd[1:4])} failed:\n{log_tail(log)}")


@contextmanager
def prefect_stack(n_workers: int):
    """A Prefect server on a free port with its own PREFECT_HOME, the work pools, every deployment
    of prefect.yaml, and n workers on `local` taking one flow run at a time; all stopped after."""
    with tempfile.TemporaryDirectory(prefix="trace-scale-prefect-") as home:
        home, port = Path(home), free_port()
        env = prefect_env(home, port) | {"PREFECT_WORKER_QUERY_SECONDS": "1", "COLUMNS": "200",
                                         "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
        stack = Stack(env, env["PREFECT_API_URL"], spawn(
            [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"], env,
            home / "server.log"))
        try:
            wait_until(lambda: healthy(stack.api) or stack.server.poll() is not None, 120, "Prefect server healthy")
            if stack.server.poll() is not None:
                raise RuntimeError(f"the Prefect server exited:\n{log_tail(home / 'server.log')}")
            for pool in ("local", "gpu"):  # prefect deploy --all needs every pool prefect.yaml names
                run_checked([PREFECT, "work-pool", "create", pool, "--type", "process", "--overwrite"], env,
                            home / f"pool-{pool}.log")
            run_checked([PREFECT, "deploy", "--all", "--no-prompt"], env, home / "deploy.log")
            stack.workers = [spawn([PREFECT, "worker", "start", "--pool", "local", "--name", f"worker-{i}",
                                    "--limit", "1"], env, home / f"worker-{i}.log") for i in range(n_workers)]
            wait_until(lambda: online_workers(stack) >= n_workers, 120, f"{n_workers} workers online")
            yield stack
        except Exception:  # a flow run that failed says why in its worker's log
            for log in sorted(home.glob("worker-*.log")):
                print(f"--- {log.name}\n{log_tail(log)}", file=sys.stderr)
            raise
        finally:
            for proc in [*stack.workers, stack.server]:
                stop_group(proc)


def online_workers(stack: Stack) -> int:
    return sum(w["status"] == "ONLINE" for w in stack.post("/work_pools/local/workers/filter", {}))


def task_runs(stack: Stack, flow_run_ids: list[str]) -> int:
    return stack.post("/task_runs/count", {"flow_runs": {"id": {"any_": flow_run_ids}}})


def child_runs(stack: Stack, parent_id: str) -> list[dict]:
    return stack.post("/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [parent_id]}}})


def wait_flow_runs_exited(sampler: PeakSampler) -> None:
    """The run is final in the API a moment before its process is gone: let the sampler see the end."""
    wait_until(lambda: not sampler.running_flow_runs(), 60, "flow-run processes exited", every=0.2)


def prefect_side(stack: Stack, sampler: PeakSampler, parent: dict, result: dict) -> dict:
    """Task runs of the flow run and its child flow runs, and the peaks of the stack's processes."""
    children = child_runs(stack, parent["id"])
    count = task_runs(stack, [parent["id"], *(c["id"] for c in children)])
    return {"run_s": round(parent["total_run_time"], 1), "child_flow_runs": len(children), "task_runs": count,
            "task_runs_per_1k_seeds": round(1000 * count / result["seeds"], 1),
            "server_peak_rss_mb": sampler.peak_mb("server"),
            "worker_peak_rss_mb": [sampler.peak_mb(f"worker-{i}") for i in range(len(stack.workers))]}


# ---------------------------------------------------------------------------------------------
# 2. The flow, as a deployment run on one worker
# ---------------------------------------------------------------------------------------------

def measure_flow(stack: Stack, n_seeds: int, settings: Settings) -> dict:
    with workload(n_seeds, settings) as work, stack.sampler() as sampler:
        cmd = [PREFECT, "deployment", "run", "trace-build/manual", "--param", f"seeds={work.seeds}",
               "--param", f"out={work.out}", "--param", f"base_urls={json.dumps([work.server.base_url])}",
               "--param", f"config={work.config}", "--param", "limit=null",
               "--watch", "--watch-interval", "1", "--watch-timeout", str(int(settings.timeout))]
        log = work.logs / "deployment-run.log"
        done = run_measured(cmd, stack.env, log, settings.timeout + 60)
        wait_flow_runs_exited(sampler)
        result = server_side(work, n_seeds, settings, done.wall_s)
        flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", log.read_text()).group(1)
    process = sampler.flow_run(flow_run_id)
    return result | prefect_side(stack, sampler, stack.get(f"/flow_runs/{flow_run_id}"), result) | {
        "flow_run_peak_rss_mb": round(process.peak_kb / 1024, 1),
        "flow_run_cpu_ms_per_request": per_request_ms(process.cpu_s, result["requests"])}


# ---------------------------------------------------------------------------------------------
# 3. The fan-out: the parent flow from Python, 2 ranges on 2 workers
# ---------------------------------------------------------------------------------------------

def latest_flow_run(stack: Stack, flow_name: str) -> dict:
    return stack.post("/flow_runs/filter", {"flows": {"name": {"any_": [flow_name]}}, "sort": "START_TIME_DESC",
                                            "limit": 1})[0]


def measure_fanout(stack: Stack, n_seeds: int, settings: Settings) -> dict:
    with workload(n_seeds, settings) as work, stack.sampler() as sampler:
        cmd = [sys.executable, "-c", FANOUT_CODE, str(work.seeds), str(work.out), work.server.base_url,
               str(work.config)]
        done = run_measured(cmd, stack.env, work.logs / "parent.log", settings.timeout)
        wait_flow_runs_exited(sampler)
        result = server_side(work, n_seeds, settings, done.wall_s)
    parent = latest_flow_run(stack, "trace-build")
    ranges = sorted(child_runs(stack, parent["id"]), key=lambda r: r["parameters"]["index"])
    processes = [sampler.flow_run(r["id"]) for r in ranges]
    return result | prefect_side(stack, sampler, parent, result) | {
        "parent_peak_rss_mb": done.peak_rss_mb,
        "parent_cpu_ms_per_request": per_request_ms(done.cpu_s, result["requests"]),
        "range_peak_rss_mb": [round(p.peak_kb / 1024, 1) for p in processes],
        "ranges_cpu_ms_per_request": per_request_ms(sum(p.cpu_s for p in processes), result["requests"]),
        "range_run_s": [round(r["total_run_time"], 1) for r in ranges]}


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def machine() -> dict:
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {"cores": os.cpu_count(), "ram_gib": round(mem_kb / 2**20, 1), "python": platform.python_version(),
            "prefect": importlib.metadata.version("prefect"), "load_avg_1m_at_start": os.getloadavg()[0]}


def add_ratios(rows: list[dict], cli: list[dict], rss_key: str) -> None:
    """Wall and peak RSS of a flow row over the CLI build's at the same size."""
    by_size = {r["seeds"]: r for r in cli}
    for row in rows:
        base = by_size.get(row["seeds"])
        rss = row[rss_key]
        rss = max(rss) if isinstance(rss, list) else rss
        row["wall_vs_cli"] = round(row["wall_s"] / base["wall_s"], 2) if base else None
        row["rss_vs_cli"] = round(rss / base["build_peak_rss_mb"], 2) if base else None


def cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return " / ".join(cell(v) for v in value)
    return f"{value:,}" if isinstance(value, int) else str(value)


def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    lines = ["| " + " | ".join(header for header, _ in columns) + " |", "|" + "---:|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(key)) for _, key in columns) + " |" for row in rows]
    return "\n".join(lines)


COMMON = [("seeds", "seeds"), ("requests", "requests"), ("req/seed", "requests_per_seed"), ("wall s", "wall_s"),
          ("busy s", "busy_s"), ("req/s", "requests_per_s")]
SIM = [("sim peak MB", "sim_peak_rss_mb"), ("sim CPU ms/req", "sim_cpu_ms_per_request"),
       ("sim cores", "sim_cpu_cores")]
CLI_COLUMNS = COMMON + [("client CPU ms/req", "client_cpu_ms_per_request"), ("client cores", "client_cpu_cores"),
                        ("build peak MB", "build_peak_rss_mb")] + SIM
FLOW_COLUMNS = COMMON + [("run s", "run_s"), ("flow-run CPU ms/req", "flow_run_cpu_ms_per_request"),
                         ("flow-run peak MB", "flow_run_peak_rss_mb"), ("worker peak MB", "worker_peak_rss_mb"),
                         ("server peak MB", "server_peak_rss_mb"), ("task runs", "task_runs"),
                         ("task runs/1k seeds", "task_runs_per_1k_seeds"), ("wall / CLI", "wall_vs_cli"),
                         ("RSS / CLI", "rss_vs_cli")] + SIM
FANOUT_COLUMNS = COMMON + [("run s", "run_s"), ("range run s", "range_run_s"),
                           ("ranges CPU ms/req", "ranges_cpu_ms_per_request"), ("parent peak MB", "parent_peak_rss_mb"),
                           ("range peak MB", "range_peak_rss_mb"), ("worker peak MB", "worker_peak_rss_mb"),
                           ("server peak MB", "server_peak_rss_mb"), ("flow runs", "child_flow_runs"),
                           ("task runs", "task_runs"), ("task runs/1k seeds", "task_runs_per_1k_seeds"),
                           ("wall / CLI", "wall_vs_cli"), ("max range RSS / CLI", "rss_vs_cli")] + SIM


def sizes(text: str) -> list[int]:
    return [int(s.replace("_", "")) for s in text.split(",") if s.strip()]


def measure_part(title: str, measure, n_sizes: list[int]) -> list[dict]:
    """measure(n) for each size, saying on stderr what runs."""
    rows = []
    for n in n_sizes:
        print(f"[{time.strftime('%H:%M:%S')}] {title}: {n:,} seeds", file=sys.stderr, flush=True)
        rows.append(measure(n))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cli-sizes", type=sizes, default=sizes("1000,10000,100000"), help="seeds per CLI build ('' skips)")
    p.add_argument("--flow-sizes", type=sizes, default=sizes("1000,10000"),
                   help="seeds per flow and per fan-out build ('' skips both)")
    p.add_argument("--latency", type=float, default=Settings.latency, help="simulator mean latency, seconds")
    p.add_argument("--capacity", type=int, default=Settings.capacity, help="simulator requests in service")
    p.add_argument("--max-in-flight", type=int, default=Settings.max_in_flight, help="llm.max_in_flight")
    p.add_argument("--timeout", type=float, default=Settings.timeout, help="seconds one build may take")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop what we started on the way out
    settings = Settings(args.latency, args.capacity, args.max_in_flight, args.timeout)
    results = {"machine": machine(), "settings": vars(settings)}

    results["cli"] = measure_part("CLI", lambda n: measure_cli(n, settings), args.cli_sizes)
    if args.flow_sizes:
        with prefect_stack(1) as stack:
            results["flow"] = measure_part("flow", lambda n: measure_flow(stack, n, settings), args.flow_sizes)
        with prefect_stack(2) as stack:
            results["fanout"] = measure_part("fan-out", lambda n: measure_fanout(stack, n, settings), args.flow_sizes)
        add_ratios(results["flow"], results["cli"], "flow_run_peak_rss_mb")
        add_ratios(results["fanout"], results["cli"], "range_peak_rss_mb")

    print(f"machine: {json.dumps(results['machine'])}\nsimulator: latency {settings.latency} s, capacity "
          f"{settings.capacity}; llm.max_in_flight {settings.max_in_flight}\n")
    for key, title, columns in (("cli", "1. CLI builds", CLI_COLUMNS), ("flow", "2. trace-build flow, 1 worker",
                                FLOW_COLUMNS), ("fanout", "3. trace-build, 2 ranges on 2 workers", FANOUT_COLUMNS)):
        if results.get(key):
            print(f"## {title}\n\n{markdown_table(results[key], columns)}\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
