"""The `iopo-train` Prefect flow: train SFT, DPO or IOPO on a trace-build run's splits.

The training itself is flows.train (transformers' Trainer); this module starts it with the
deployment's parameters, one process per GPU of the worker's host unless `nproc` says otherwise,
and reports it in the UI: a progress artifact while it runs, then a table of the logged metrics
and a markdown summary. Run again, it resumes from the newest checkpoint (`fresh` starts over).
With `evaluate_after`, it then starts trace-eval on the trained model and on its base (once; kept
for later runs), as subflow runs, and writes the `table-3` artifact with both rows
(flows/train/evaluate_after.py).
"""
from __future__ import annotations

import time

from prefect import flow
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from prefect.utilities.asyncutils import run_coro_as_sync

from flows.reporting import best_effort_sync, report_failures_in_one_line
from flows.train.config import load_train_config
from flows.train.report import metrics_table, summary_markdown


class ArtifactLog:
    """Progress artifact `iopo-train-progress`, updated at most every `every` seconds; best effort
    (flows/reporting.py): a training run outlives the Prefect API's restarts."""

    def __init__(self, every: float = 5.0):
        self.every, self.last, self.history, self.warned = every, 0.0, [], set()
        self.artifact_id = best_effort_sync(lambda: create_progress_artifact(
            0.0, key="iopo-train-progress", description="share of optimizer steps done"), "progress", self.warned)

    def __call__(self, record: dict) -> None:
        self.history.append(record)
        now = time.monotonic()
        if now - self.last >= self.every or record["step"] == record["total_steps"]:
            self.last = now
            # each call waits out the client's retries: after one is dropped, the steps go on unreported
            if self.artifact_id is not None and not self.warned:
                best_effort_sync(lambda: update_progress_artifact(
                    self.artifact_id, 100.0 * record["step"] / record["total_steps"]), "progress", self.warned)
            print(f"step {record['step']}/{record['total_steps']} loss {record['loss']:.4f}")


@flow(name="iopo-train", log_prints=True)
def iopo_train(
    manifest: str,
    method: str | None = None,
    model: str | None = None,
    config: str | None = "configs/train.yaml",
    out: str | None = None,
    overrides: dict | None = None,
    nproc: int | None = None,
    fresh: bool = False,
    evaluate_after: bool | dict | None = None,
) -> dict:
    """Train `model` with `method` (default: the config's, else iopo) on the splits named by a trace-build `manifest` (a run folder,
    its manifest.json, or a LLaMA-Factory JSON file). `overrides`: any training setting
    (beta, learning_rate, epochs, max_length, lora, reference, strategy, ...), as in configs/train.yaml.
    `nproc`: processes (default: every GPU of this host); `fresh`: clear the output folder first.
    `evaluate_after`: true, or its settings (serve, judge_base_urls, cfbench_data, limit, ...: see
    configs/train.yaml): evaluate the trained model and its base as the paper's Table 3."""
    report_failures_in_one_line()
    explicit = {"data": manifest, "method": method, "model": model, "out": out, "nproc": nproc,
                "resume": "fresh" if fresh else None, "evaluate_after": evaluate_after}
    cfg = load_train_config(config, {**(overrides or {}), **{k: v for k, v in explicit.items() if v is not None}})
    from flows.train.launch import run_training  # torch: needed where the flow runs, not where it is deployed

    if cfg.evaluate_after is not None:
        from flows.train.evaluate_after import check

        check(cfg)  # a mistake in the evaluation settings fails the run now, not after the training

    log = ArtifactLog()
    report = run_training(cfg, on_log=log)
    best_effort_sync(lambda: create_table_artifact(key="iopo-train-metrics", table=metrics_table(log.history),
                                                   description="Metrics per logged step"), "the metrics table")
    best_effort_sync(lambda: create_markdown_artifact(key="iopo-train-summary", markdown=summary_markdown(report),
                                                      description="Summary of the training run"), "the summary")
    result = {"out": report["out"], "final": report["final"], "steps": report["steps"],
              "loss_first": report["first"]["loss"], "loss_last": report["last"]["loss"]}
    if cfg.evaluate_after is not None:
        result["table_3"] = _evaluate(cfg, report)
    return result


def _evaluate(cfg, report: dict) -> dict:
    """trace-eval on the trained model, then on the base unless done before; the table-3 artifact."""
    from flows.trace_eval import trace_eval
    from flows.train.evaluate_after import evaluate_after

    def evaluate(evaluation) -> None:
        print(f"evaluating {evaluation.label} into {evaluation.out}")
        run_coro_as_sync(trace_eval.with_options(flow_run_name=f"table-3 {evaluation.out.name}")(
            **evaluation.parameters))

    table = evaluate_after(cfg, report, evaluate)
    print(table["markdown"])
    best_effort_sync(lambda: create_markdown_artifact(
        key="table-3", markdown=table["markdown"],
        description="The IOPO paper's Table 3: the trained model, its base model and the paper's"), "table-3")
    return {row["label"]: row["table"] for row in table["rows"]}
