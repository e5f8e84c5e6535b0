"""What a training output folder holds, and where a run in it continues.

    out/run.json            what was trained (method, model, data, ...): a resume must match it
    out/checkpoint-N/       the engine's checkpoints: weights or adapter, optimizer, scheduler, RNG
                            states, trainer_state.json (written last: its presence means complete)
    out/metrics.jsonl, out/tensorboard/, out/ref_logps.jsonl, out/final/, out/merged/,
    out/train_report.json

`resume: auto` continues from the newest complete checkpoint of the same run and deletes
nothing; `replace` does the same but clears the folder of another run (other data: a refreshed
build); `fresh` always clears it. Clearing waits until the data and model have loaded.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from flows.errors import InputError
from flows.store import write_json_atomic, write_text_atomic
from flows.train.config import TrainConfig

RUN_FILE = "run.json"
STATE_FILE = "trainer_state.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Everything a run writes in its folder (a fresh start removes these, nothing else there).
RUN_OUTPUTS = (RUN_FILE, "metrics.jsonl", "ref_logps.jsonl", "train_report.json", "tensorboard", "final", "merged")


def run_identity(cfg: TrainConfig, examples_digest: str) -> dict:
    """The settings a checkpoint is only valid for: a resume under others would mix two runs. The
    examples' digest tells a refreshed build in the same folder (a nightly) from the same data."""
    data = Path(cfg.data)
    return {"method": cfg.method, "model": cfg.model, "data": str(data.resolve() if data.exists() else data),
            "examples": examples_digest, "lora": cfg.lora, "lora_r": cfg.lora_r if cfg.lora else None,
            "reference": cfg.reference_mode, "max_length": cfg.max_length, "seed": cfg.seed, "strategy": cfg.strategy}


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT.match(path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def complete(path: Path) -> bool:
    try:
        json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        return True
    except (OSError, ValueError):
        return False


def newest_checkpoint(out: Path) -> Path | None:
    """The complete checkpoint with the highest step (one killed mid-save is passed over)."""
    found = [(step, p) for p in out.glob("checkpoint-*") if (step := checkpoint_step(p)) is not None and complete(p)]
    return max(found)[1] if found else None


def resume_point(out: Path, identity: dict, resume: str) -> tuple[Path | None, bool]:
    """(the checkpoint to continue from or None, whether the folder's run outputs must be cleared
    first). auto: the same run continues and another run is refused in one line (its checkpoints
    must be neither mixed in nor deleted by a rerun); replace: another run is cleared instead;
    fresh: always cleared."""
    if resume == "fresh":
        return None, True
    other = other_run(out, identity)
    if other and resume == "replace":
        return None, True
    if other:
        raise InputError(f"{out}: {other}; resume it with those settings, train into another --out, or start "
                         "over with --fresh")
    return (newest_checkpoint(out) if out.exists() else None), False


def other_run(out: Path, identity: dict) -> str | None:
    """What makes the run in `out` another one than `identity`'s, or None."""
    run_file = out / RUN_FILE
    if run_file.exists():
        previous = json.loads(run_file.read_text(encoding="utf-8"))
        differ = sorted(k for k in identity if previous.get(k) != identity[k])
        if differ:
            return "holds checkpoints of another run (" + ", ".join(
                "other examples" if k == "examples" else f"{k}={previous.get(k)!r}" for k in differ) + ")"
    elif out.exists() and (any(checkpoint_step(p) is not None for p in out.glob("checkpoint-*"))
                           or (out / "final").exists()):
        return f"holds checkpoints that no {RUN_FILE} describes"
    return None


def start_fresh(out: Path) -> None:
    for name in RUN_OUTPUTS:
        path = out / name
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    for path in out.glob("checkpoint-*"):
        if checkpoint_step(path) is not None:
            shutil.rmtree(path)


def record_run(out: Path, identity: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / RUN_FILE, identity)


def keep_metrics_until(out: Path, step: int) -> None:
    """metrics.jsonl without the steps after `step` (a resume redoes them), as a new file in its
    place: whoever follows it (launch.py) sees another file, not one cut under its feet."""
    path = out / "metrics.jsonl"
    if path.exists():
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if json.loads(line)["step"] <= step]
        write_text_atomic(path, "".join(line + "\n" for line in lines))
