"""Training runs as users start them, on the tiny model: two processes (gloo) against one, a run
killed with SIGKILL and run again, TensorBoard read back by its own reader, and the mistakes that
must stop a run in one line before anything is written."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, run_cli

pytestmark = pytest.mark.slow  # not in make test-fast: real servers, subprocesses or training runs

STEPS = 20


def train_args(model, data, out, *extra):
    return ["train", "--data", data, "--model", model, "--out", out, "--max-length", 128, "--device", "cpu",
            "--full", "--lr", "1e-2", "--quiet", *extra]


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_take_the_same_steps_as_one_with_the_same_global_batch(tiny_model_dir, toy_iopo_file,
                                                                            tmp_path):
    one = run_cli(*train_args(tiny_model_dir, toy_iopo_file, tmp_path / "one", "--max-steps", STEPS,
                              "--micro-batch", 4, "--nproc", 1))
    assert one.returncode == 0, one.stderr
    two = run_cli(*train_args(tiny_model_dir, toy_iopo_file, tmp_path / "two", "--max-steps", STEPS,
                              "--micro-batch", 2, "--nproc", 2), timeout=600)
    assert two.returncode == 0, two.stderr
    report = json.loads((tmp_path / "two" / "train_report.json").read_text())
    assert report["processes"] == 2 and report["steps"] == STEPS
    a, b = metrics(tmp_path / "one"), metrics(tmp_path / "two")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, STEPS + 1))
    # The same 4 examples per step, split 2 + 2: the gradients are averaged by an all-reduce instead
    # of inside one batch, so they agree to float32 rounding (1e-7); Adam divides by the root of
    # the squared gradients, which lifts that rounding in weights whose gradient is near zero, and
    # each step carries it on: measured, the losses drift apart by up to 0.6% over 20 steps at this
    # learning rate (1e-2), so 2% relative, while the loss itself falls from 0.69 to below 0.45 (and
    # another split of the examples, a data-order bug, moves a step's loss by far more).
    assert a[0]["loss"] == pytest.approx(b[0]["loss"], rel=1e-6)
    assert a[0]["grad_norm"] == pytest.approx(b[0]["grad_norm"], rel=1e-5)
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=2e-2), ra["step"]
    assert a[-1]["loss"] < 0.45
    assert "# iopo training" in two.stdout and two.stdout.count("# iopo training") == 1


def test_a_killed_run_resumes_from_its_checkpoint_and_ends_where_an_unbroken_run_ends(tiny_model_dir,
                                                                                     toy_iopo_file, tmp_path):
    args = lambda out: [sys.executable, "-m", "flows.cli", *map(str, train_args(  # noqa: E731
        tiny_model_dir, toy_iopo_file, out, "--max-steps", STEPS, "--micro-batch", 4, "--save-steps", 5))]
    unbroken = subprocess.run(args(tmp_path / "unbroken"), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert unbroken.returncode == 0, unbroken.stderr

    out = tmp_path / "killed"
    process = subprocess.Popen(args(out), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not ((out / "metrics.jsonl").exists() and any(r["step"] >= 7 for r in metrics(out))):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before step 7"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = metrics(out)[-1]["step"]
    assert 7 <= killed_at < 10 and not (out / "final").exists()
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-5"]
    saved = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "checkpoint-5").iterdir()}

    again = subprocess.run(args(out), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    report = json.loads((out / "train_report.json").read_text())
    assert report["resumed_from"] == 5 and report["steps"] == STEPS
    # the killed run's checkpoint is still there, neither deleted nor rewritten
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "checkpoint-5").iterdir()} == saved
    assert [r["step"] for r in metrics(out)] == list(range(1, STEPS + 1))  # steps 6..killed_at redone once
    # optimizer, scheduler, RNG and data position restored: fp32 on the CPU takes the same path, the
    # same operations in the same order, so the weights are bit-identical (tolerance 0)
    final, reference = load_file(out / "final" / "model.safetensors"), load_file(
        tmp_path / "unbroken" / "final" / "model.safetensors")
    assert final.keys() == reference.keys()
    assert all(torch.equal(final[k], reference[k]) for k in final)

    # a rerun of the finished run trains nothing and keeps every checkpoint
    before = sorted(p.name for p in out.glob("checkpoint-*"))
    rerun = subprocess.run(args(out), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads((out / "train_report.json").read_text())["resumed_from"] == STEPS
    assert sorted(p.name for p in out.glob("checkpoint-*")) == before and len(metrics(out)) == STEPS


def test_tensorboard_reads_back_every_logged_metric_per_step(tiny_model_dir, toy_iopo_file, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    done = run_cli(*train_args(tiny_model_dir, toy_iopo_file, tmp_path / "out", "--max-steps", 6,
                               "--micro-batch", 4))
    assert done.returncode == 0, done.stderr
    logged = metrics(tmp_path / "out")
    events = EventAccumulator(str(tmp_path / "out" / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for name in ("loss", "lr", "grad_norm", "accuracy_x1", "accuracy_x2", "margin_x1", "margin_x2",
                 "accuracy_y1", "margin_y2", "tokens_per_s"):
        assert f"train/{name}" in tags, name
        scalars = events.Scalars(f"train/{name}")
        assert [s.step for s in scalars] == [r["step"] for r in logged]
        assert [s.value for s in scalars] == pytest.approx([r[name] for r in logged], rel=1e-6), name


def one_line_error(done, *needles):
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("trace-build: error: "), done.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_mistakes_stop_in_one_line_and_write_nothing(tiny_model_dir, toy_iopo_file, tmp_path):
    out = tmp_path / "out"
    one_line_error(run_cli(*train_args(tmp_path / "no-model", toy_iopo_file, out)), "no-model", "no model there")
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    one_line_error(run_cli(*train_args(tiny_model_dir, empty, out)), "empty.json", "no rows")
    one_line_error(run_cli(*train_args(tiny_model_dir, toy_iopo_file, out, "--nproc", (os.cpu_count() or 1) + 1)),
                   "nproc", "CPU cores")
    # accelerate would quietly run CPU processes data parallel: a sharded run asked for is refused
    one_line_error(run_cli(*train_args(tiny_model_dir, toy_iopo_file, out, "--strategy", "fsdp", "--nproc", 2)),
                   "fsdp", "CUDA")
    assert not out.exists()


def test_a_folder_of_another_run_is_refused_on_resume_and_cleared_only_by_fresh(tiny_model_dir, toy_iopo_file,
                                                                                tmp_path):
    out = tmp_path / "out"
    first = run_cli(*train_args(tiny_model_dir, toy_iopo_file, out, "--max-steps", 2, "--save-steps", 1))
    assert first.returncode == 0, first.stderr
    kept = sorted(p.name for p in out.iterdir())
    other = run_cli(*train_args(tiny_model_dir, toy_iopo_file, out, "--max-steps", 2, "--method", "dpo"))
    one_line_error(other, str(out), "another run", "method='iopo'", "--fresh")
    assert sorted(p.name for p in out.iterdir()) == kept  # nothing mixed in, nothing deleted
    fresh = run_cli(*train_args(tiny_model_dir, toy_iopo_file, out, "--max-steps", 1, "--method", "dpo", "--fresh"))
    assert fresh.returncode == 0, fresh.stderr
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1"]
    assert json.loads((out / "run.json").read_text())["method"] == "dpo" and len(metrics(out)) == 1


def test_a_finished_run_stopped_mid_epoch_trains_no_more_when_run_again(tiny_model_dir, toy_iopo_file, tmp_path):
    """Resumed at its last step in the middle of an epoch, the engine would take one step more
    before it looks at the count; a finished run must stay as it is."""
    out = tmp_path / "out"
    args = train_args(tiny_model_dir, toy_iopo_file, out, "--max-steps", 2)  # 8 steps an epoch
    assert run_cli(*args).returncode == 0
    final = (out / "final" / "model.safetensors").read_bytes()
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert [r["step"] for r in metrics(out)] == [1, 2]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    assert (out / "final" / "model.safetensors").read_bytes() == final
    assert json.loads((out / "train_report.json").read_text())["steps"] == 2
    # killed after its last checkpoint, before the final weights: they come from that checkpoint
    shutil.rmtree(out / "final")
    assert run_cli(*args).returncode == 0
    saved, checkpoint = load_file(out / "final" / "model.safetensors"), load_file(
        out / "checkpoint-2" / "model.safetensors")
    assert saved.keys() == checkpoint.keys() and all(torch.equal(saved[k], checkpoint[k]) for k in saved)
    assert [r["step"] for r in metrics(out)] == [1, 2]


def test_a_refreshed_build_in_the_same_folder_is_another_run_which_replace_starts_over(tiny_model_dir, toy_iopo_file,
                                                                                       tmp_path):
    """The nightly: the same data path with new examples. auto refuses it (its checkpoints would
    mix two datasets), replace (what a build's trigger asks) clears it and trains the new examples,
    and replace on the same examples resumes as auto does."""
    out, replace = tmp_path / "out", tmp_path / "replace.yaml"
    replace.write_text("resume: replace\n")
    args = train_args(tiny_model_dir, toy_iopo_file, out, "--max-steps", 2, "--save-steps", 1)
    assert run_cli(*args).returncode == 0
    rows = json.loads(toy_iopo_file.read_text())
    toy_iopo_file.write_text(json.dumps(rows[1:] + rows[:1]))  # the same path, examples in another order
    one_line_error(run_cli(*args), str(out), "another run", "other examples", "--fresh")
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    examples = json.loads((out / "run.json").read_text())["examples"]

    refreshed = run_cli(*args, "--config", replace)
    assert refreshed.returncode == 0, refreshed.stderr
    assert json.loads((out / "run.json").read_text())["examples"] != examples
    assert json.loads((out / "train_report.json").read_text())["resumed_from"] is None
    assert [r["step"] for r in metrics(out)] == [1, 2]
    (out / "final").rename(tmp_path / "final-before")
    again = run_cli(*args, "--config", replace)  # the same examples: resumed at the end, nothing trained
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "train_report.json").read_text())["resumed_from"] == 2
    assert (out / "final" / "model.safetensors").read_bytes() == (
        tmp_path / "final-before" / "model.safetensors").read_bytes()
