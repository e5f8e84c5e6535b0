"""The README's commands, run as a user runs them, at the simulator's speed, each exit status checked,
so that the README cannot drift from the product.

Every command of the README (each line of its bash blocks, and each command in backticks in its
text) must match one entry of PLAN, in order, or this fails naming it: a new command in the README
is either run here or skipped with the reason. A command runs in a scratch folder (the checkout's
data, configs, prompts, taxonomy, flows and prefect.yaml linked in) with its servers swapped for
what this machine has: hosts (gpu-host, judge-host, 127.0.0.1:8000/8011) become one simulated LLM,
a config of the embedded model or of vLLM gets `--backend simulated` (options beat the config
file), /models/Qwen2-7B-Instruct becomes a tiny model built in code, and the Prefect commands talk
to the stack `trace-build up` started on free ports. A skipped `trace-build` command still has its
options checked against the command line's parser.

    .venv/bin/python scripts/readme_commands.py           # run them (minutes)
    .venv/bin/python scripts/readme_commands.py --plan    # what each becomes, or why it is skipped
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
LINKED = ("configs", "prompts", "taxonomy", "flows", "prefect.yaml")
# data/seeds holds the demo seeds and this many more, made up: the simulator grades at random, and
# from the 30 demo seeds alone it makes no IOPO quadruple for the README's `train --method iopo`.
MORE_SEEDS = 200
COMMAND_START = re.compile(r"^(\.venv/bin/)?(trace-build|prefect|make|python|pip|torchrun|accelerate|tensorboard"
                           r"|scripts/\S+|export|VLLM_API_KEY=\S+|PREFECT_API_URL=\S+|\(umask)( |$)")
SIMULATED_HOSTS = re.compile(r"https?://(gpu-host:8000|judge-host:8000|127\.0\.0\.1:8000|127\.0\.0\.1:8011)/v1")


@dataclass(frozen=True)
class Step:
    """What becomes of the README commands that match `pattern` (a regex, searched): run (with
    `extra` options added and the substitutions above) expecting exit status `expect`, or `skip`
    with its reason. `stage`: "up" runs before the others, "down" after them."""
    pattern: str
    skip: str = ""
    extra: str = ""
    expect: int = 0
    says: str = ""  # what its output must contain (besides never a traceback)
    stage: str = ""


SIM = "--backend simulated"
PLAN = [
    # Two commands
    Step(r"^make demo$", extra=""),  # stand-in below: make demo's trace-build run, on the simulator
    Step(r"^make demo (SEEDS|MODEL)=", skip="make demo with another size or model: the embedded model "
                                            "(tests/test_embedded_pipeline.py runs it)"),
    Step(r"^make (test|test-fast|install|benchmark|benchmark-train)$", skip="CI runs make test; benchmarks print "
                                                                            "numbers, they check nothing"),
    Step(r"^\.venv/bin/trace-build status runs/demo$"),
    Step(r"^\.venv/bin/trace-build run --config configs/embedded\.yaml --seeds my_seeds\.jsonl", extra=SIM),
    # The command line
    Step(r"^trace-build serve-llm --backend (embedded|vllm)", skip="a server of the embedded model or vLLM "
                                                                   "(tests/test_embedded.py; a GPU host)"),
    Step(r"^VLLM_API_KEY=\S+ trace-build serve-llm --backend vllm", skip="vLLM on a GPU host"),
    Step(r"^trace-build serve-llm --backend simulated"),
    Step(r"^trace-build run --config configs/nightly\.yaml$", extra=f"{SIM} --limit 5"),
    Step(r"^trace-build run --config configs/nightly\.yaml --", extra=SIM),
    Step(r"^trace-build run --backend vllm$", skip="vLLM on a GPU host"),
    Step(r"^trace-build run --"),
    Step(r"^trace-build (status|report) runs/x$"),
    Step(r"^trace-build train .*--strategy fsdp", expect=2, says="strategy fsdp: needs CUDA GPUs"),
    Step(r"^trace-build train --evaluate-after vllm$", skip="serves the trained model with vLLM: a GPU host"),
    Step(r"^trace-build train --config configs/train\.yaml ", extra="--model {tiny}"),  # its model: Qwen2-7B
    Step(r"^trace-build train --"),
    Step(r"^trace-build eval --suite (all|cfbench|complexbench) ", skip="needs CFBench's and ComplexBench's data, "
                                                                      "not shipped (tests/test_table3.py, "
                                                                      "tests/test_*bench_suite.py run them on "
                                                                      "files in their layout)"),
    Step(r"^trace-build eval .*--judge-base-url https://api\.openai\.com", skip="OpenAI's API and a key"),
    Step(r"^trace-build eval --config configs/eval(-ifeval)?-embedded\.yaml", extra=SIM),
    Step(r"^trace-build eval --suite ifeval --config configs/eval-ifeval-embedded\.yaml", extra=SIM),
    Step(r"^trace-build eval --suite ifeval --responses my_responses\.jsonl"),
    Step(r"^trace-build eval --"),
    Step(r"^trace-build up --backend simulated$", stage="up"),
    Step(r"^trace-build down$", stage="down"),
    Step(r"^trace-build up --(listen|database)", skip="a server other machines join, with PostgreSQL "
                                                      "(tests/test_stack.py)"),
    Step(r"^trace-build worker --pool local --limit 1$", skip="a worker that runs until stopped (tests/test_stack.py "
                                                              "joins one)"),
    Step(r"^PREFECT_API_URL=http://hub\.example", skip="another machine joining hub.example"),
    Step(r"^\(umask 077", skip="writes a secret to your home folder (tests/test_stack.py makes one)"),
    Step(r"^export PREFECT_API_AUTH_STRING=", skip="the secret of a stack behind --listen"),
    Step(r"^export PREFECT_API_DATABASE_CONNECTION_URL=", skip="a PostgreSQL server of your own"),
    Step(r"^python benchmarks/", skip="a benchmark: it prints numbers, it checks nothing"),
    Step(r"^export PREFECT_API_URL=http://127\.0\.0\.1:4200/api$"),
    # With Prefect
    Step(r"^prefect deployment run trace-build/manual --watch$"),
    Step(r"^prefect deployment run trace-build/nightly --param backend=simulated"),
    Step(r"^prefect deployment run trace-build/manual --param trigger_training=true$",
         skip="the training trigger needs a worker on the gpu pool with a model (scripts/e2e-prefect.sh runs it)"),
    Step(r"^prefect deployment run trace-build/nightly( --watch| --job-variable|$)",
         skip="the nightly deployment against your vLLM servers (configs/nightly.yaml)"),
    Step(r"^prefect deployment run trace-eval/manual -p suite=ifeval", extra="--watch"),
    Step(r"^prefect deployment run trace-eval/manual -p suite=all", skip="needs CFBench's and ComplexBench's data"),
    Step(r"^prefect (server start|work-pool create|deploy( |$)|worker start)",
         skip="the steps by hand that trace-build up runs (tests/test_ranges_prefect.py runs them)"),
    Step(r"^prefect flow-run logs ID$", skip="ID stands for a flow run's id"),
    Step(r"^python -m flows\.automations$"),
    # Training
    Step(r"^pip install", skip="CI installs the extras itself (make install-test)"),
    Step(r"^python -m flows\.train\.tiny "),
    Step(r"^tensorboard ", skip="a web server that runs until stopped"),
    Step(r"^(torchrun|accelerate launch) ", skip="several GPUs"),
    Step(r"^scripts/(gpu-check|gpu-wheels)\.sh", skip="the GPU check (tests/test_gpu_check.py runs its dry run)"),
    Step(r"^scripts/(install-embedded|install-vllm-contract|e2e-prefect)\.sh$|^scripts/(vllm_contract|readme_commands)\.py$",
         skip="run by make demo / make test"),
    # Names in the text, not command lines
    Step(r"^(\.venv/bin/)?(trace-build|prefect)( (up|down|worker|eval|train|run|deployment run|deploy --all))?$",
         skip="a name in the text"),
    Step(r"^trace-build: error: ", skip="an error message the text quotes"),
]


def readme_commands(text: str) -> list[str]:
    """The README's commands in order, once each: bash block lines (continuations joined, comments
    dropped), then commands in backticks in the text."""
    found: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                found.append(command)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`([^`]+)`", prose):
        command = " ".join(span.split())
        if COMMAND_START.match(command):
            found.append(command)
    return list(dict.fromkeys(found))


def plan_for(command: str) -> Step | None:
    return next((step for step in PLAN if re.search(step.pattern, command)), None)


def unplanned(commands: list[str]) -> list[str]:
    return [command for command in commands if plan_for(command) is None]


def options_unknown(command: str) -> list[str]:
    """The --options of a `trace-build SUB ...` command that SUB does not take."""
    from flows.cli import parser

    words = shlex.split(command.replace("[", " ").replace("]", " "))
    while words and re.match(r"^[A-Z_]+=", words[0]):  # VAR=value before the command
        words = words[1:]
    if not words or not words[0].endswith("trace-build") or len(words) < 2:
        return []
    subcommands = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    sub = subcommands.get(words[1])
    if sub is None:
        return [words[1]]
    known = {flag for action in sub._actions for flag in action.option_strings}
    return [w.split("=")[0] for w in words[2:] if w.startswith("--") and w.split("=")[0] not in known]


class Scratch:
    """The folder the commands run in, the simulated LLM, the tiny model, the stack's ports."""

    def __init__(self, root: Path, llm_url: str):
        self.root, self.llm_url = root, llm_url
        from flows.llm.running import free_port

        self.prefect_port, self.llm_port, self.serve_port = free_port(), free_port(), free_port()
        for name in LINKED:
            (root / name).symlink_to(REPO / name)
        for item in (REPO / "data").iterdir():
            (root / "data").mkdir(exist_ok=True)
            if item.name != "seeds":
                (root / "data" / item.name).symlink_to(item)
        seeds = root / "data" / "seeds"
        shutil.copytree(REPO / "data" / "seeds", seeds)
        topics = ["rivers", "databases", "tea", "volcanoes", "chess", "bridges", "bees", "jazz", "glaciers", "maps"]
        (seeds / "more.jsonl").write_text("".join(
            json.dumps({"text": f"Write a short explanation of {topics[i % len(topics)]} for reader {i}."}) + "\n"
            for i in range(MORE_SEEDS)), encoding="utf-8")
        (root / ".venv").symlink_to(Path(sys.executable).parent.parent)  # .venv/bin/trace-build, as typed
        bin_dir = Path(sys.executable).parent
        self.env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "TRACE_BUILD_STATE":
                    str(root / ".state"), "PREFECT_API_URL": f"http://127.0.0.1:{self.prefect_port}/api",
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "COLUMNS": "200"}
        self.env.pop("PREFECT_HOME", None)
        from flows.train.model import quiet_libraries
        from flows.train.tiny import save_tiny

        quiet_libraries()

        texts = (REPO / "data" / "trace-eval" / "official_iopo_example.json").read_text(encoding="utf-8")
        self.tiny_model = save_tiny(root / "models" / "tiny", texts.splitlines())
        seeds = (REPO / "data" / "seeds" / "demo.jsonl").read_text(encoding="utf-8").splitlines()[:5]
        (root / "my_seeds.jsonl").write_text("\n".join(seeds) + "\n", encoding="utf-8")

    def rewrite(self, command: str, step: Step) -> str:
        if command == "make demo":  # the Makefile's command, on the simulator instead of the embedded model
            command = "trace-build run --config configs/embedded.yaml --limit 6 --out runs/demo --show 2"
            step = Step("", extra=SIM)
        command = SIMULATED_HOSTS.sub(self.llm_url, command)
        command = command.replace("--base-url ...", f"--base-url {self.llm_url}")
        command = command.replace("--judge-base-url ...", f"--judge-base-url {self.llm_url}")
        command = command.replace("/models/Qwen2-7B-Instruct", str(self.tiny_model))
        command = command.replace("127.0.0.1:4200", f"127.0.0.1:{self.prefect_port}")
        if command.startswith("trace-build up"):
            command += f" --port {self.prefect_port} --llm-port {self.llm_port}"
        if command.startswith("trace-build eval --suite ifeval --responses"):
            shutil.copy(self.root / "runs" / "eval-ifeval" / "responses.jsonl", self.root / "my_responses.jsonl")
        extra = [option for option in re.findall(r"--\S+(?: [^-]\S*)?", step.extra.format(tiny=self.tiny_model))
                 if option.split()[0] not in command.split()]  # an option the command gives itself wins
        return " ".join([command, *extra])

    def run(self, command: str, step: Step, log) -> tuple[bool, float]:
        """Whether `command` ended with the step's exit status, said what it must and no traceback."""
        started = time.monotonic()
        if command.startswith("export "):
            name, value = command.removeprefix("export ").split("=", 1)
            self.env[name] = value
            return True, 0.0
        if command.startswith("trace-build serve-llm"):
            return self._serve(command, log), time.monotonic() - started
        done = subprocess.run(["bash", "-c", command], cwd=self.root, env=self.env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=900)
        output = done.stdout + done.stderr
        log.write(output + f"(exit {done.returncode})\n")
        ok = done.returncode == step.expect and step.says in output and "Traceback" not in output
        return ok, time.monotonic() - started

    def _serve(self, command: str, log) -> bool:
        """A server command: it must come up and answer /v1/models, then it is stopped."""
        import urllib.request

        port = self.serve_port
        server = subprocess.Popen(["bash", "-c", f"exec {command} --port {port}"], cwd=self.root, env=self.env,
                                  stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(120):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as resp:
                        return json.loads(resp.read())["data"] != []
                except OSError:
                    if server.poll() is not None:
                        return False
                    time.sleep(0.5)
            return False
        finally:
            server.terminate()
            server.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    args.add_argument("--plan", action="store_true", help="print what becomes of each command; run nothing")
    args.add_argument("--keep", help="run in this folder (kept) instead of a temporary one")
    opts = args.parse_args(argv)
    commands = readme_commands(README.read_text(encoding="utf-8"))
    missing = unplanned(commands)
    for command in missing:
        print(f"README command without a plan: {command!r}: add a Step to PLAN in {Path(__file__).name}")
    bad_options = {c: options_unknown(c) for c in commands if options_unknown(c)}
    for command, unknown in bad_options.items():
        print(f"README command with options the command line does not take ({', '.join(unknown)}): {command!r}")
    if missing or bad_options:
        return 1
    ordered = sorted(commands, key=lambda c: {"up": 0, "": 1, "down": 2}[plan_for(c).stage])
    if opts.plan:
        for command in ordered:
            step = plan_for(command)
            print(f"skip  {command}\n      ({step.skip})" if step.skip else
                  f"run   {command}{'  + ' + step.extra if step.extra else ''}  (exit {step.expect})")
        return 0

    from flows.llm import simulator

    root = Path(opts.keep) if opts.keep else Path(tempfile.mkdtemp(prefix="readme-commands-"))
    root.mkdir(parents=True, exist_ok=True)
    failed, ran, skipped = [], 0, 0
    with simulator.start(simulator.SimulatorConfig()) as llm, open(root / "commands.log", "w") as log:
        scratch = Scratch(root, llm.base_url)
        try:
            for command in ordered:
                step = plan_for(command)
                if step.skip:
                    skipped += 1
                    continue
                actual = scratch.rewrite(command, step)
                log.write(f"\n$ {actual}\n")
                log.flush()
                ok, seconds = scratch.run(actual, step, log)
                ran += 1
                print(f"{'ok  ' if ok else 'FAIL'} {seconds:6.1f} s  {actual}", flush=True)
                if not ok:
                    failed.append(actual)
        finally:
            subprocess.run(["bash", "-c", "trace-build down"], cwd=root, env=scratch.env, capture_output=True)
    print(f"\n{ran} README commands run, {len(failed)} failed, {skipped} skipped with their reason "
          f"(--plan lists them); log: {root / 'commands.log'}")
    for command in failed:
        print(f"failed: {command}")
    if not opts.keep and not failed:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
