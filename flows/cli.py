"""The `trace-build` command line: serve-llm, run, status, report, up, down, train, eval.

A user mistake (bad seed file, bad config, no server) ends with one line on stderr and exit
status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from flows import aio, prefect_api
from flows.config import BUILD_OPTIONS, ConfigError, build_overrides, load_config
from flows.errors import InputError, StageBug, UserError
from flows.llm.running import BackendError
from flows.progress import StepProgress, CliProgress
from flows.suites import SUITES, suite_names
from flows.train.methods import METHODS


def cmd_run(args) -> int:
    from flows.build import build_trace
    from flows.errors import bug_message, internal_errors
    from flows.llm.client import LLMFailure
    from flows.report import cost_text, format_funnel, written_exports

    cfg = load_config(args.config, build_overrides(**{name: getattr(args, name) for name in BUILD_OPTIONS}))
    progress = CliProgress(enabled=not args.quiet)
    try:
        result = aio.run(build_trace(cfg, progress))
    except LLMFailure as exc:
        raise BackendError(f"LLM server: {exc}") from None
    finally:
        progress.close()
    print(f"\nrun folder: {result.run_dir}")
    sizes = ", ".join(f"{name} {info['rows']}" for name, info in result.manifest["splits"].items())
    print(f"splits:     {result.run_dir / 'splits'} ({sizes})")
    print(f"exports:    {result.run_dir / 'exports'} ({', '.join(written_exports(result.manifest)) or 'none'})")
    print(f"report:     {result.run_dir / 'reports' / 'report.html'}")
    print(f"cost:       {cost_text(result.manifest)}\n")
    print(format_funnel(result.manifest["funnel"]))
    if args.show:
        show_sft(result.run_dir, args.show)
    bugs = internal_errors(result.manifest["funnel"])
    if bugs:  # nothing trains on an incomplete build
        print(f"trace-build: error: {bug_message(bugs)}", file=sys.stderr)
        return 1
    if cfg.training.trigger:
        from flows.train.trigger import start_training, training_line

        try:
            print(training_line(aio.run(start_training(result.manifest, result.run_dir, cfg.training))))
        except Exception as exc:  # recorded in the manifest; the build is done, the training did not start
            print(f"trace-build: error: training not started ({type(exc).__name__}: {str(exc)[:300]}); "
                  "is a Prefect server up (trace-build up) with the deployment?", file=sys.stderr)
            return 1
    return 0


def show_sft(run_dir: Path, n: int) -> None:
    import pyarrow.parquet as pq

    with pq.ParquetFile(run_dir / "splits" / "sft.parquet") as split:  # the first rows, not the whole split
        rows = next(split.iter_batches(batch_size=n), None)
    rows = rows.to_pylist() if rows is not None else []
    for row in rows:
        print("\n" + "=" * 72)
        print(row["prompt"].rstrip())
        print("-" * 72)
        print(row["response"][:1500].rstrip())
        print("scores:", ", ".join(f"{s['constraint_id']}={s['score']}" for s in row["scores"]))


def run_folder(path: str) -> Path:
    """A run folder to read, or one line saying what is there instead."""
    run_dir = Path(path)
    if not run_dir.exists():
        raise InputError(f"{run_dir}: no such folder (give a run folder: `trace-build run --out` makes one)")
    if not (run_dir / "stages").is_dir():
        raise InputError(f"{run_dir}: not a trace-build run folder (no stages/ in it)")
    return run_dir


def cmd_report(args) -> int:
    from flows.report_html import write_report_html

    run_dir = run_folder(args.run)
    print(write_report_html(run_dir))
    return 0


def cmd_status(args) -> int:
    from flows.report import format_funnel, funnel

    print(format_funnel(funnel(run_folder(args.run))))
    return 0


def cmd_serve_llm(args) -> int:
    from flows.llm.backends import start_backend

    options = {}
    if args.backend == "simulated":
        options = {"latency_mean": args.latency, "capacity": args.capacity}
    elif args.backend == "vllm":
        options = {"api_key": os.environ.get(args.api_key_env) or None, "max_num_seqs": args.max_num_seqs}
        if args.tensor_parallel_size:
            options["tensor_parallel_size"] = args.tensor_parallel_size
    server = start_backend(args.backend, args.model, host=args.host, port=args.port, **options)
    print(f"{args.backend} LLM ready: {server.base_url} (model {server.model}); Ctrl+C to stop", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            if server.process is not None and server.process.poll() is not None:
                raise BackendError(f"{args.backend} server exited with status {server.process.returncode}")
    finally:
        server.stop()
    return 0


def cmd_up(args) -> int:
    from flows.stack import state_folder, up

    secret = prefect_api.read_secret(args.auth_file) if args.listen else None
    stack = up(state_folder(args.state), port=args.port, backend=None if args.backend == "none" else args.backend,
               llm_port=args.llm_port, backend_model=args.model, gpu_worker=args.gpu_worker,
               database=args.database, database_port=args.database_port, listen=args.listen, secret=secret,
               local_worker=not args.no_worker)
    print(f"Prefect UI:  {stack['ui']}" + ("   (asks for the secret)" if secret else ""))
    if stack.get("database"):
        print(f"database:    {stack['database']}   (PostgreSQL, data in {state_folder(args.state) / 'postgres'})")
    print(f"Prefect API: {stack['api']}   (export PREFECT_API_URL={stack['api']})")
    if stack.get("llm"):
        print(f"LLM:         {stack['llm']}   (trace-build run --base-url {stack['llm']})")
    pools = [p["name"].removeprefix("worker-") for p in stack["processes"] if p["name"].startswith("worker-")]
    workers = f"workers on {' and '.join(pools)}" if pools else "no worker here: start them where the builds run"
    if "gpu" not in pools:
        workers += " (start one on 'gpu' where you train)"
    print(f"deployments: {', '.join(stack['deployments'])}; {workers}")
    print(f"processes:   {', '.join(p['name'] + ' ' + str(p['pid']) for p in stack['processes'])}")
    if stack.get("join"):
        print(f"join:        {stack['join']}   (on another machine, with {prefect_api.ENV} set to the same secret)")
    print("stop with:   trace-build down")
    return 0


def cmd_worker(args) -> int:
    from flows.stack import prefect_command, worker_env

    api = os.environ.get("PREFECT_API_URL")
    if not api:
        raise UserError("set PREFECT_API_URL to the Prefect server's API (`trace-build up` prints it)")
    secret = prefect_api.read_secret(args.auth_file)
    prefect_api.check_api(api, secret)
    print(f"worker on pool {args.pool!r} of {api}; Ctrl+C to stop", flush=True)
    prefect = prefect_command()
    limit = ["--limit", str(args.limit)] if args.limit else []
    os.execve(prefect, [prefect, "worker", "start", "--pool", args.pool, *limit], worker_env(dict(os.environ), secret))


def cmd_train(args) -> int:
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"training needs the train extra ({exc.name} is missing): pip install -e '.[train]'") \
            from None
    from flows.train.config import load_train_config
    from flows.train.launch import TrainingFailed, run_training
    from flows.train.report import summary_markdown

    cfg = load_train_config(args.config, {
        "method": args.method, "model": args.model, "data": args.data, "out": args.out, "beta": args.beta,
        "learning_rate": args.lr, "epochs": args.epochs, "max_steps": args.max_steps,
        "max_length": args.max_length, "micro_batch": args.micro_batch, "grad_accum": args.grad_accum,
        "lora": False if args.full else None, "reference": args.reference,
        "gradient_checkpointing": args.gradient_checkpointing or None, "dtype": args.dtype,
        "device": args.device, "limit": args.limit, "seed": args.seed, "save_steps": args.save_steps,
        "save_merged": args.save_merged or None, "nproc": args.nproc, "strategy": args.strategy,
        "resume": "fresh" if args.fresh else None, "evaluate_after.serve": args.evaluate_after,
    })
    if cfg.evaluate_after is not None:
        from flows.train.evaluate_after import check

        check(cfg)  # a mistake in the evaluation settings: one line now, not after the training
    steps = StepProgress(cfg.method, enabled=not args.quiet)

    def on_log(record: dict) -> None:
        steps.update(record["step"], record["total_steps"], record["loss"])

    try:
        report = run_training(cfg, on_log=on_log)
    except TrainingFailed as exc:
        print(f"trace-build: error: {exc}", file=sys.stderr)
        return 1
    finally:
        steps.close()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun every process gets here
        return 0
    print(summary_markdown(report))
    if cfg.evaluate_after is not None:
        from flows.train.evaluate_after import EvaluationIncomplete, evaluate_after, evaluate_plainly

        try:
            table = evaluate_after(cfg, report, evaluate_plainly(CliProgress(enabled=not args.quiet)))
        except EvaluationIncomplete as exc:
            print(f"trace-build: error: {exc}", file=sys.stderr)
            return 1
        print(table["markdown"])
        print(f"table: {Path(table['rows'][0]['out']) / 'table-3.md'}")
    return 0


def cmd_eval(args) -> int:
    from flows.config import EvalConfig, eval_overrides
    from flows.suites import ALL, SUITES

    cfg = load_config(args.config, eval_overrides(
        suite=args.suite, responses=args.responses, lang=args.lang, cfbench_data=args.cfbench_data,
        complexbench_data=args.complexbench_data, data=args.data, limit=args.limit, sample=args.sample, out=args.out,
        rule_checks=False if args.no_rule_checks else None, base_urls=args.base_url, model=args.model,
        backend=args.backend, backend_model=args.backend_model, judge_base_urls=args.judge_base_url,
        judge_model=args.judge_model, judge_backend=args.judge_backend, judge_backend_model=args.judge_backend_model,
        judge_api_key_env=args.judge_api_key_env), model=EvalConfig)
    progress = CliProgress(enabled=not args.quiet and not cfg.responses)
    if cfg.suite == ALL:
        from flows.table3 import evaluate_all, table_markdown

        result = _run_evaluation(evaluate_all(cfg, progress), progress)
        print(table_markdown(result.metrics))
        print(f"table: {result.out_dir / 'results.md'}  results: {result.out_dir / 'results.json'}")
        return _evaluation_status({name: suite_result.metrics for name, suite_result in result.suites.items()},
                                  result.out_dir)
    suite = SUITES[cfg.suite]
    result = _run_evaluation(suite.runner()(cfg, progress), progress)
    print(suite.markdown()(result.metrics))
    print(suite.files.format(out=result.out_dir))
    return _evaluation_status({cfg.suite: result.metrics}, result.out_dir)


def _run_evaluation(evaluation, progress):
    from flows.llm.client import LLMFailure

    try:
        return aio.run(evaluation)
    except LLMFailure as exc:  # the server is not there: one line, not a traceback
        raise BackendError(f"LLM server: {exc}") from None
    finally:
        progress.close()


def _evaluation_status(done: dict[str, dict], out_dir) -> int:
    """Say what came from the cache; exit 1, in one line, when any suite left rows unscored."""
    from flows.suites import unscored_lines
    from flows.words import plural

    cached = sum(metrics["answers_from_cache"] for metrics in done.values())
    if cached:
        print(f"{plural(cached, 'answer')} came from the request cache in {out_dir}; evaluate changed weights "
              "served under the same name into a new --out")
    lines = unscored_lines(done)
    if lines:
        print("trace-build: error: " + "; ".join(lines), file=sys.stderr)
        return 1
    return 0


def cmd_down(args) -> int:
    from flows.stack import down, state_folder

    stopped = down(state_folder(args.state))
    print("stopped: " + ", ".join(stopped) if stopped else "nothing was up")
    return 0


def train_help(field: str) -> str:
    """A training option's help: its TrainConfig description and default, said once there."""
    from flows.train.config import TrainConfig

    info = TrainConfig.model_fields[field]
    default = "" if info.default in (None, False, True) or info.is_required() else f" (default {info.default})"
    return f"{info.description}{default}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="trace-build", description="Build Trace-style complex instruction data.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve-llm", help="start an OpenAI-compatible LLM server on this machine")
    s.add_argument("--backend", choices=["embedded", "simulated", "vllm"], default="embedded",
                   help="embedded (default): llama.cpp on this machine; simulated: the test double; vllm: a GPU host")
    s.add_argument("--model", help="embedded: qwen2.5-coder-1.5b (default), qwen2.5-coder-0.5b, smollm2-135m; vllm: a model path or name")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8011, help="port (default 8011)")
    s.add_argument("--latency", type=float, default=0.0, help="simulated: mean latency in seconds")
    s.add_argument("--capacity", type=int, default=64, help="simulated: requests in service at once")
    s.add_argument("--tensor-parallel-size", type=int, help="vllm: GPUs per replica")
    s.add_argument("--max-num-seqs", type=int, help="vllm: sequences in a batch")
    s.add_argument("--api-key-env", default="VLLM_API_KEY",
                   help="vllm: require the key in this environment variable (default VLLM_API_KEY; unset: no key)")
    s.set_defaults(func=cmd_serve_llm)

    r = sub.add_parser("run", help="run a trace build over seed instructions")
    for name, (_, how) in BUILD_OPTIONS.items():  # the trace-build flow takes the same, as parameters
        how = dict(how)
        r.add_argument(how.pop("flag", "--" + name.replace("_", "-")), dest=name, **how)
    r.add_argument("--config", help="YAML config file (see configs/)")
    r.add_argument("--show", type=int, default=0, metavar="N", help="print N rows of the SFT split at the end")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.set_defaults(func=cmd_run)

    u = sub.add_parser("up", help="start the local stack: Prefect server, pools, deployments, worker, LLM")
    u.add_argument("--port", type=int, default=4200, help="Prefect server port (127.0.0.1)")
    u.add_argument("--backend", choices=["simulated", "embedded", "vllm", "none"], default="none",
                   help="also serve an LLM on --llm-port")
    u.add_argument("--model", help="model of the LLM backend")
    u.add_argument("--llm-port", type=int, default=8011, help="port of that LLM server (default 8011)")
    u.add_argument("--gpu-worker", action="store_true", help="also run a worker on the gpu pool (this machine trains)")
    u.add_argument("--no-worker", action="store_true", help="no worker on the local pool: the builds run on workers "
                   "that join from other machines (see --listen)")
    u.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite",
                   help="the server's database: SQLite in the state folder, or a local PostgreSQL (data in "
                        "<state>/postgres; needs `apt-get install postgresql`)")
    u.add_argument("--database-port", type=int, default=0, help="PostgreSQL's port on 127.0.0.1 (default: a free one)")
    u.add_argument("--state", help="state folder (default .state, or TRACE_BUILD_STATE)")
    u.add_argument("--listen", metavar="ADDR", help="the Prefect server (API and UI) on this address, for workers "
                   "and browsers on other machines (0.0.0.0: every interface), behind a secret: "
                   f"{prefect_api.ENV}=user:password in the environment, or --auth-file")
    u.add_argument("--auth-file", metavar="FILE", help=f"with --listen: a file only you can read, holding the "
                   f"secret (user:password), instead of {prefect_api.ENV}")
    u.set_defaults(func=cmd_up)
    d = sub.add_parser("down", help="stop everything `trace-build up` started")
    d.add_argument("--state", help="state folder (default .state, or TRACE_BUILD_STATE)")
    d.set_defaults(func=cmd_down)

    w = sub.add_parser("worker", help="a Prefect worker for the server in PREFECT_API_URL (another machine's "
                                      "`trace-build up --listen`)")
    w.add_argument("--pool", default="local", help="work pool: local (builds and their ranges) or gpu (training)")
    w.add_argument("--limit", type=int, help="flow runs at once (default: no limit; 1 on a GPU node that trains)")
    w.add_argument("--auth-file", metavar="FILE", help=f"a file only you can read, holding the server's secret "
                   f"(user:password), instead of {prefect_api.ENV}")
    w.set_defaults(func=cmd_worker)

    t = sub.add_parser("train", help="train SFT, DPO or IOPO on a run's splits or a LLaMA-Factory file")
    t.add_argument("--data", help="trace-build run folder, its manifest.json, or a LLaMA-Factory JSON file")
    t.add_argument("--model", help="base model: local folder or a hub name in the local cache")
    t.add_argument("--method", choices=METHODS, help="default iopo")
    t.add_argument("--config", help="YAML training config (see configs/train.yaml)")
    t.add_argument("--out", help="output folder (default <run>/train-<method>)")
    t.add_argument("--beta", type=float, help=train_help("beta"))
    t.add_argument("--lr", type=float, help="learning rate (default 1e-4 sft, 5e-6 otherwise)")
    t.add_argument("--epochs", type=float, help=train_help("epochs"))
    t.add_argument("--max-steps", type=int, help=train_help("max_steps"))
    t.add_argument("--max-length", type=int, help="tokens per sequence (default 6000)")
    t.add_argument("--micro-batch", type=int, help=train_help("micro_batch"))
    t.add_argument("--grad-accum", type=int, help=train_help("grad_accum"))
    t.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    t.add_argument("--reference", choices=["auto", "copy", "adapter", "precomputed"], help=train_help("reference"))
    t.add_argument("--gradient-checkpointing", action="store_true", help=train_help("gradient_checkpointing"))
    t.add_argument("--dtype", choices=["auto", "bf16", "fp32"], help=train_help("dtype"))
    t.add_argument("--save-merged", action="store_true", help="under LoRA, also save merged weights (merged/)")
    t.add_argument("--device", choices=["auto", "cpu", "cuda"],
                   help="auto (default): cuda when a GPU is visible; pick GPUs with CUDA_VISIBLE_DEVICES")
    t.add_argument("--nproc", type=int, help="processes, data parallel, one per GPU (default: every GPU, 1 on a CPU)")
    t.add_argument("--strategy", choices=["ddp", "fsdp"],
                   help="ddp (default): a model per process; fsdp: sharded full fine-tuning")
    t.add_argument("--fresh", action="store_true",
                   help="start over: clear the output folder's checkpoints (default: resume from the newest)")
    t.add_argument("--limit", type=int, help="train on the first N examples")
    t.add_argument("--seed", type=int, help=train_help("seed"))
    t.add_argument("--save-steps", type=int, help="checkpoint every N steps")
    t.add_argument("--evaluate-after", choices=["vllm", "simulated"], metavar="SERVE",
                   help="then evaluate the trained model and its base as the paper's Table 3, served by vllm, or "
                        "by the simulator (a dry run of the wiring); the rest from the config's evaluate_after")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a model: Trace (IF-S, IF-M, with a judge), IFEval (rules), CFBench, "
                                    "ComplexBench, or all of them as the IOPO paper's Table 3")
    e.add_argument("--suite", choices=suite_names(),
                   help="; ".join(f"{name}{' (default)' if name == 'trace' else ''}: {suite.help}"
                                  for name, suite in SUITES.items())
                   + "; all: every suite whose data is present, and the paper's Table 3")
    e.add_argument("--responses", help="ifeval: score this file of responses (JSON lines with prompt and "
                                       "response) instead of asking a model")
    e.add_argument("--data", help="trace: official-layout eval JSONL or a run folder (default: the official "
                                  "1,042 rows); ifeval: an IFEval input_data JSONL (default: the 541 prompts); "
                                  "cfbench: data/cfbench_data.json; complexbench: data/data_final.json")
    e.add_argument("--lang", choices=["zh", "en"], help="complexbench: Chinese (default) or the English translation")
    e.add_argument("--cfbench-data", metavar="FILE", help="all: run CFBench on this file (data/cfbench_data.json of "
                                                          "PKU-Baichuan-MLSystemLab/CFBench; not shipped)")
    e.add_argument("--complexbench-data", metavar="FILE", help="all: run ComplexBench on this file "
                                                               "(data/data_final.json of thu-coai/ComplexBench)")
    e.add_argument("--limit", type=int, help="the first N rows only (the official file lists its 200 "
                                             "single-constraint rows first)")
    e.add_argument("--sample", type=int, help="N rows spread evenly over the file (IF-S and IF-M alike)")
    e.add_argument("--out", help="results folder (default runs/eval, runs/eval-<suite>; all: a folder per suite "
                                 "inside it); rerunning reuses every cached answer")
    e.add_argument("--judge-api-key-env", help="environment variable holding the judge's API key "
                                               "(default OPENAI_API_KEY)")
    e.add_argument("--base-url", action="append", help="the model under test: OpenAI-compatible /v1 URL")
    e.add_argument("--model", help="model name to request from it")
    e.add_argument("--backend", choices=["embedded", "simulated", "vllm"], help="start this backend as the model")
    e.add_argument("--backend-model", help="model the started backend serves")
    e.add_argument("--judge-base-url", action="append", help="the judge (default: the model under test's server)")
    e.add_argument("--judge-model", help="judge model name")
    e.add_argument("--judge-backend", choices=["embedded", "simulated", "vllm"], help="start this backend as the judge")
    e.add_argument("--judge-backend-model", help="model the judge backend serves")
    e.add_argument("--no-rule-checks", action="store_true", help="the judge alone; no rule checks")
    e.add_argument("--config", help="YAML evaluation config (keys of flows.config.EvalConfig)")
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.set_defaults(func=cmd_eval)

    rp = sub.add_parser("report", help="write a run folder's reports/report.html (charts; opens from disk)")
    rp.add_argument("run", nargs="?", default="runs/latest", help="run folder (default runs/latest)")
    rp.set_defaults(func=cmd_report)

    st = sub.add_parser("status", help="print the funnel of a run folder")
    st.add_argument("run", nargs="?", default="runs/latest", help="run folder (default runs/latest)")
    st.set_defaults(func=cmd_status)
    return p


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = parser().parse_args(argv)
    # SIGTERM (a scheduler, `kill`) unwinds like Ctrl+C, so launched servers are stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return args.func(args)
    except UserError as exc:  # the user's mistake: one line, exit 2 (flows/errors.py)
        print(f"trace-build: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("trace-build: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except StageBug as exc:  # not the user's mistake (exit 2): a bug in a stage stopped the build
        print(f"trace-build: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        from flows.llm.client import ServerRefused  # (imported here: most commands never load the client)

        if not isinstance(exc, ServerRefused):
            raise
        # Not a user mistake in the command (exit 2), an incomplete run: nothing was rejected for
        # it, so the same command against a server that accepts the requests resumes.
        print(f"trace-build: error: {exc}; no row was rejected for it: fix the server (or report the request), "
              "then rerun the same command", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
