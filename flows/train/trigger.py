"""What a finished trace build hands to the training deployment, and when it hands nothing.

    request = training_request(cfg.training, manifest, manifest_path, method=None)
    if request.parameters: run_deployment(request.deployment, parameters=request.parameters, timeout=0)

Plain Python so the decision is testable without Prefect; flows/trace_build.py makes the call.
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
