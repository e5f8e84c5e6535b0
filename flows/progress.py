"""How a long job reports how far it is: rows through each stage of a build, rows through each
phase of an evaluation. The CLI draws bars (TqdmProgress), the flows update Prefect progress
artifacts (reporting.ArtifactProgress); the work itself only calls these three methods."""
from __future__ import annotations

from typing import Protocol


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


class TqdmProgress:
    """One progress bar per stage, made when the build knows how many seeds it has."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._bars: dict = {}

    def start(self, totals: dict[str, int]) -> None:
        from tqdm import tqdm

        self.close()  # ranges built one after another each start their own bars
        self._bars = {s: tqdm(total=total, desc=f"{s:<10}", position=i, leave=True, disable=not self.enabled,
                              unit="row", dynamic_ncols=True) for i, (s, total) in enumerate(totals.items())}

    def expect(self, stage: str, n: int = 1) -> None:
        bar = self._bars[stage]
        bar.total += n
        bar.refresh()

    def advance(self, stage: str, n: int = 1) -> None:
        self._bars[stage].update(n)

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
