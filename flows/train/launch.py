"""Several processes for one training run, started by the engine's own launcher (torchrun).

    report = run_training(cfg, on_log)   # cfg.nproc processes (default: every GPU of the host)

With one process, or already under a launcher (torchrun, accelerate launch, a multi-node
rendezvous), the run happens here. Otherwise the data, model and output folder are checked
first, so that a mistake is one line and no process starts, then `torch.distributed.run
--standalone` starts the processes on `python -m flows.train.launch <config.json>`; this process
follows their metrics.jsonl for progress and returns their report.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from flows.errors import InputError, OneLineError, UserError
from flows.train.config import FSDP_NEEDS_GPUS, TrainConfig


class TrainingFailed(OneLineError, RuntimeError):
    """A worker process of a launched run exited nonzero (its own error is printed above)."""


def under_launcher() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def process_count(cfg: TrainConfig) -> int:
    """cfg.nproc, or every GPU of the host (1 on a CPU); more than the host has is refused."""
    import torch

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda: no GPU is visible to this process (CUDA_VISIBLE_DEVICES, drivers)")
    gpu = cfg.device != "cpu" and torch.cuda.is_available()
    if cfg.strategy == "fsdp" and not gpu:
        raise InputError(FSDP_NEEDS_GPUS)
    have = torch.cuda.device_count() if gpu else os.cpu_count() or 1
    wanted = cfg.nproc or (have if gpu else 1)
    if wanted > have:
        raise InputError(f"nproc {wanted}: this host has {have} {'GPUs' if gpu else 'CPU cores'}; "
                         f"give at most {have}, or several nodes with torchrun (README: several GPUs and nodes)")
    return wanted


def run_training(cfg: TrainConfig, on_log: Callable[[dict], None] | None = None) -> dict:
    from flows.train import checkpoints as C
    from flows.train.run import load_training_data, train

    if under_launcher() or process_count(cfg) == 1:
        report = train(cfg, on_log)
        _release_gpu_memory()
        return report
    nproc = process_count(cfg)
    data = load_training_data(cfg)  # a mistake in the data or the model folder: one line, no process started
    checkpoint, _ = C.resume_point(cfg.output_dir, C.run_identity(cfg, data.digest()), cfg.resume)
    with tempfile.TemporaryDirectory(prefix="trace-train-") as tmp:
        config_file = Path(tmp) / "config.json"
        config_file.write_text(cfg.model_dump_json(), encoding="utf-8")
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                   "-m", "flows.train.launch", str(config_file)]
        start = C.checkpoint_step(checkpoint) if checkpoint else 0
        returncode = _run_following(command, cfg.output_dir / "metrics.jsonl", start, on_log)
    if returncode != 0:
        raise TrainingFailed(f"training failed in a worker process (exit {returncode}); its error is above. "
                             "Rerun the same command to resume from the last checkpoint")
    return json.loads((cfg.output_dir / "train_report.json").read_text(encoding="utf-8"))


def _release_gpu_memory() -> None:
    """Give back what torch's allocator still holds once the model is gone, so that a server
    started next on this GPU (evaluate_after's vLLM) finds it free."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _launcher_env() -> dict[str, str]:
    """torchrun sets OMP_NUM_THREADS=1 for its workers where it is unset, with a banner saying so
    on every run: the same value set here, without the banner; a value of the user's wins."""
    return {"OMP_NUM_THREADS": "1", **os.environ}


def _run_following(command: list[str], metrics: Path, start: int, on_log: Callable[[dict], None] | None) -> int:
    """Run `command`; meanwhile hand each step after `start` that `metrics` logs to on_log (read
    from where the last look ended: a long run's file is not read again each second)."""
    process = subprocess.Popen(command, env=_launcher_env())
    last, inode, offset, partial = start, None, 0, b""
    try:
        while True:
            done = process.poll() is not None
            if on_log and metrics.exists():
                with open(metrics, "rb") as f:
                    if os.fstat(f.fileno()).st_ino != inode:  # a resume replaced it (keep_metrics_until)
                        inode, offset, partial = os.fstat(f.fileno()).st_ino, 0, b""
                    f.seek(offset)
                    chunk = f.read()
                offset += len(chunk)
                *lines, partial = (partial + chunk).split(b"\n")  # the last piece may be half written
                if done and partial.strip():
                    lines, partial = lines + [partial], b""
                for record in (json.loads(line) for line in lines if line.strip()):
                    if record["step"] > last:
                        on_log(record)
                        last = record["step"]
            if done:
                return process.returncode
            time.sleep(1.0)
    finally:
        if process.poll() is None:  # interrupted: take the workers down with us
            process.terminate()
            process.wait()


def _worker(config_file: str) -> int:
    from flows.train.run import train

    cfg = TrainConfig.model_validate_json(Path(config_file).read_text(encoding="utf-8"))
    try:
        train(cfg)
    except UserError as exc:
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"trace-build: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
