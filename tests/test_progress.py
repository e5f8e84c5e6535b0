"""What the CLI shows while it works: bars on a terminal, plain lines in a log or a pipe (no
carriage returns nor escape codes there), a training run's steps likewise."""
import os
import subprocess
import sys

import pytest

from conftest import REPO
from flows import progress as P


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.mark.slow
def test_a_piped_run_prints_plain_progress_lines_and_no_bar_codes(tmp_path):
    # bytes, not text: text mode would turn a bar's carriage returns into newlines
    done = subprocess.run([sys.executable, "-m", "flows.cli", "run", "--backend", "simulated", "--limit", "3",
                           "--out", str(tmp_path / "run")], cwd=REPO, capture_output=True, timeout=300,
                          env={**os.environ})
    assert done.returncode == 0, done.stderr.decode()
    for stream in (done.stdout, done.stderr):
        assert b"\r" not in stream and b"\x1b[" not in stream
    lines = [line for line in done.stderr.decode().splitlines() if line.startswith("progress: ")]
    assert len(lines) >= 2 and "taxonomy 0/3" in lines[0]
    counts = [part.rsplit(" ", 1)[1] for part in lines[-1].removeprefix("progress: ").split(", ")]
    assert all(c.split("/")[0] == c.split("/")[1] for c in counts), lines[-1]  # every total reached
    assert "run folder:" in done.stdout.decode()


def test_plain_lines_come_at_most_once_an_interval_and_at_the_end(capsys):
    clock = Clock()
    plain = P.PlainProgress(interval=30, clock=clock)
    plain.start({"expand": 2, "respond": 0})
    plain.expect("respond", 2)
    plain.advance("expand", 2)  # within the interval: no line
    clock.now = 31
    plain.advance("respond")
    clock.now = 40
    plain.advance("respond")
    plain.close()
    plain.close()  # closed once: nothing more
    assert capsys.readouterr().err.splitlines() == ["progress: expand 0/2, respond 0/0",
                                                    "progress: expand 2/2, respond 1/2",
                                                    "progress: expand 2/2, respond 2/2"]


def test_the_cli_progress_draws_bars_only_on_a_terminal(monkeypatch):
    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    monkeypatch.setattr(sys, "stderr", Stream(True))
    assert isinstance(P.CliProgress(enabled=True)._to, P.BarProgress)
    monkeypatch.setattr(sys, "stderr", Stream(False))
    assert isinstance(P.CliProgress(enabled=True)._to, P.PlainProgress)
    assert isinstance(P.CliProgress(enabled=False)._to, P.NoProgress)


def test_training_steps_are_plain_lines_off_a_terminal(capsys):
    clock = Clock()
    steps = P.StepProgress("iopo", enabled=True, interval=30, clock=clock)
    for step in range(1, 4):
        clock.now = 20.0 * step
        steps.update(step, 3, 1.0 / step)
    steps.close()
    assert capsys.readouterr().err.splitlines() == ["iopo: step 1/3, loss 1.0000", "iopo: step 3/3, loss 0.3333"]
    quiet = P.StepProgress("iopo", enabled=False)
    quiet.update(1, 3, 0.5)
    quiet.close()
    assert capsys.readouterr().err == ""
