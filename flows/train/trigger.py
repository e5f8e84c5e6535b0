"""What a finished trace build hands to the training deployment, and when it hands nothing.

    record = await start_training(manifest, run_dir, cfg.training)   # the flow and `trace-build run`

The decision (training_request) is plain Python, testable without Prefect; start_training makes
the call through Prefect's API and records it in the run's manifest.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from flows.config import TrainingConfig
from flows.train.examples import SPLIT_FOR


@dataclass(frozen=True)
class TrainingRequest:
    deployment: str
    method: str
    parameters: dict | None  # None: nothing to start, see skipped
    skipped: str | None = None


def training_request(training: TrainingConfig, manifest: dict, manifest_path: Path,
                     method: str | None = None) -> TrainingRequest:
    """The flow parameters of the training run: the manifest of the splits (an absolute path: the
    GPU worker may run elsewhere on a shared file system), the method, the configured settings
    (`resume: replace` unless they say otherwise)."""
    method = method or training.method
    split = SPLIT_FOR[method]
    rows = manifest.get("splits", {}).get(split, {}).get("rows", 0)
    if not rows:
        return TrainingRequest(training.deployment, method, None, f"the {split} split is empty")
    # A build refreshed in the same folder (the nightly) trains its new examples from the start; a
    # rerun of the same build resumes. Settings of the build's config come last and win.
    overrides = {"resume": "replace", **training.parameters}
    return TrainingRequest(training.deployment, method, {
        "manifest": str(Path(manifest_path).resolve()), "method": method, "overrides": overrides,
    })


async def start_training(manifest: dict, run_dir: Path, training: TrainingConfig) -> dict:
    """Start the training deployment on this run's splits without waiting for it (it runs on the
    GPU pool); record what was started, or why nothing was, in the run's manifest. A failure to
    start is recorded, then raised: the user asked for a training run."""
    from prefect.deployments.flow_runs import arun_deployment

    from flows.store import write_json_atomic

    request = training_request(training, manifest, Path(run_dir) / "manifest.json")
    record = {"deployment": request.deployment, "method": request.method}
    try:
        if request.parameters is None:
            record["skipped"] = request.skipped
        else:
            run = await arun_deployment(request.deployment, parameters=request.parameters, timeout=0)
            record |= {"flow_run_id": str(run.id), "flow_run_name": run.name, "parameters": request.parameters}
    except Exception as exc:
        record["error"] = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        manifest["training"] = record
        write_json_atomic(Path(run_dir) / "manifest.json", manifest)
    return record


def training_line(record: dict) -> str:
    if record.get("flow_run_id"):
        return f"training: started {record['deployment']} ({record['method']}): flow run {record['flow_run_name']}"
    return f"training: not started: {record['skipped']}"
