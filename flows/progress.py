"""How a long job reports how far it is: rows through each stage of a build, rows through each
phase of an evaluation. The CLI shows them (CliProgress: bars on a terminal, plain lines in a log
or a pipe), the flows update Prefect progress artifacts (reporting.ArtifactProgress); the work
itself only calls these three methods."""
from __future__ import annotations

import sys
import time
from typing import Protocol

# A plain progress line at most this often: a log of an hours-long build stays readable.
PLAIN_INTERVAL_S = 30.0


class Progress(Protocol):
    """Rows through each stage. A stage's total is the rows that enter it: known at the start for
    the first stages (the seeds), grown by `expect` as earlier stages pass rows on, so every
    total is reached when the run ends."""

    def start(self, totals: dict[str, int]) -> None: ...  # the stages that run, and their known totals

    def expect(self, stage: str, n: int = 1) -> None: ...  # n more rows will enter the stage

    def advance(self, stage: str, n: int = 1) -> None: ...  # n rows left the stage


class NoProgress:
    def start(self, totals: dict[str, int]) -> None:
        pass

    def expect(self, stage: str, n: int = 1) -> None:
        pass

    def advance(self, stage: str, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def on_terminal(stream) -> bool:
    """Whether `stream` is a terminal: a bar redraws itself with carriage returns and cursor moves,
    which a log file or a pipe keeps as noise."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Lines:
    """Plain lines on stderr, at most one per `interval` seconds (the first at once), never the
    same line twice in a row."""

    def __init__(self, interval: float = PLAIN_INTERVAL_S, clock=time.monotonic):
        self.interval, self.clock = interval, clock
        self._said, self._at = "", float("-inf")  # the last line written, and when

    def due(self) -> bool:
        return self.clock() - self._at >= self.interval

    def say(self, line: str) -> None:
        if line != self._said:  # nothing moved: nothing to say
            print(line, file=sys.stderr, flush=True)
            self._said = line
        self._at = self.clock()


class PlainProgress:
    """Rows through each stage as plain lines, 'progress: expand 12/40, respond 3/12': one when
    the stages start, then at most one per interval while rows move, and the last counts at the end."""

    def __init__(self, interval: float = PLAIN_INTERVAL_S, clock=time.monotonic):
        self._lines = Lines(interval, clock)
        self._totals: dict[str, int] = {}
        self._done: dict[str, int] = {}

    def start(self, totals: dict[str, int]) -> None:
        self.close()  # ranges built one after another each start their own stages
        self._totals, self._done = dict(totals), dict.fromkeys(totals, 0)
        self._say()

    def expect(self, stage: str, n: int = 1) -> None:
        self._totals[stage] += n
        if self._lines.due():
            self._say()

    def advance(self, stage: str, n: int = 1) -> None:
        self._done[stage] += n
        if self._lines.due():
            self._say()

    def close(self) -> None:
        if self._totals:
            self._say()
        self._totals, self._done = {}, {}

    def _say(self) -> None:
        self._lines.say("progress: " + ", ".join(f"{s} {self._done[s]}/{t}" for s, t in self._totals.items()))


class BarProgress:
    """One progress bar per stage, made when the build knows how many seeds it has."""

    def __init__(self):
        self._bars: dict = {}

    def start(self, totals: dict[str, int]) -> None:
        from tqdm import tqdm

        self.close()  # ranges built one after another each start their own bars
        self._bars = {s: tqdm(total=total, desc=f"{s:<10}", position=i, leave=True, unit="row", dynamic_ncols=True)
                      for i, (s, total) in enumerate(totals.items())}

    def expect(self, stage: str, n: int = 1) -> None:
        bar = self._bars[stage]
        bar.total += n
        bar.refresh()

    def advance(self, stage: str, n: int = 1) -> None:
        self._bars[stage].update(n)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()


class CliProgress:
    """The CLI's progress: bars on a terminal, plain lines in a log or a pipe, nothing when not
    enabled (--quiet)."""

    def __init__(self, enabled: bool):
        self._to = NoProgress() if not enabled else BarProgress() if on_terminal(sys.stderr) else PlainProgress()

    def start(self, totals: dict[str, int]) -> None:
        self._to.start(totals)

    def expect(self, stage: str, n: int = 1) -> None:
        self._to.expect(stage, n)

    def advance(self, stage: str, n: int = 1) -> None:
        self._to.advance(stage, n)

    def close(self) -> None:
        self._to.close()


class StepProgress:
    """A training run's steps for the CLI: a bar on a terminal, else plain lines, 'iopo: step
    3/20, loss 0.6931' (the first step, then at most one per interval, and the last step at the
    end), nothing when not enabled (--quiet)."""

    def __init__(self, name: str, enabled: bool, interval: float = PLAIN_INTERVAL_S, clock=time.monotonic):
        self.name, self.enabled = name, enabled
        self._lines = Lines(interval, clock)
        self._bar = None
        self._line = ""  # the latest step's

    def update(self, step: int, total: int, loss: float) -> None:
        if not self.enabled:
            return
        if on_terminal(sys.stderr):
            self._update_bar(step, total, loss)
            return
        self._line = f"{self.name}: step {step}/{total}, loss {loss:.4f}"
        if self._lines.due():
            self._lines.say(self._line)

    def _update_bar(self, step: int, total: int, loss: float) -> None:
        from tqdm import tqdm

        if self._bar is None:
            self._bar = tqdm(total=total, desc=self.name, unit="step")
        self._bar.update(step - self._bar.n)
        self._bar.set_postfix(loss=f"{loss:.4f}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self._line:
            self._lines.say(self._line)
