"""What a run can end with, stated once: the user's mistakes, and a bug in a stage.

A user's mistake (UserError: a bad input file, config, server address, template) is one line
naming what is wrong and exit status 2, never a traceback; every such error type derives from
UserError, wherever it is raised.

How a build treats a bug in a stage is the failure policy:

A row whose stage raised something unexpected (not a Reject, not an LLM failure) is a bug, not a
verdict on the row. It is kept as an `internal_error` reject so nothing is lost, its shard is
marked so that the next run computes it again (the rows that worked come from the request
cache), and the build goes on, up to `execution.max_internal_errors` such rows. One more stops
the build at once (StageBug). A build that ends with any such row still writes its outputs, then
exits nonzero saying how many and where (`bug_message`), so it never ends "Completed" on rows a
bug rejected.
"""
from __future__ import annotations

from collections import Counter

from flows.words import plural

INTERNAL_ERROR = "internal_error"


class OneLineError(Exception):
    """An error whose message tells the whole story in one line (a user's mistake, a server that
    failed, a build a bug stopped): a flow run logs that line, not a traceback."""


class UserError(OneLineError):
    """A mistake the user can fix; the message is one line naming the file, row, field or setting."""


class InputError(UserError, ValueError):
    """Unusable input (seeds, data, a model folder); the message names the file (and row, field)."""


class StageBug(OneLineError, RuntimeError):
    """A stage's code raised on more rows than the build tolerates; the message is one line."""


class RangesIncomplete(OneLineError, RuntimeError):
    """Ranges of a build did not complete on the work pool; the message names them."""


class BugBudget:
    """Counts the rows the stages' code failed on in this run; past `limit` it raises StageBug."""

    def __init__(self, limit: int):
        self.limit = limit
        self.rows: Counter = Counter()

    def record(self, stage: str, exc: BaseException) -> None:
        self.rows[stage] += 1
        if sum(self.rows.values()) > self.limit:
            raise StageBug(f"stage {stage} raised {type(exc).__name__}: {str(exc)[:300]} "
                           f"({plural(sum(self.rows.values()), 'row')} failed this way, more than "
                           f"execution.max_internal_errors = {self.limit}); the build stopped: fix the stage and run "
                           "again (nothing is paid twice)")


def internal_errors(funnel: list[dict]) -> dict[str, int]:
    """Rows each stage rejected because its code failed, from a manifest's funnel."""
    return {row["stage"]: row["reasons"][INTERNAL_ERROR] for row in funnel
            if row["reasons"].get(INTERNAL_ERROR) and not row["stage"].startswith("split:")}


def bug_message(counts: dict[str, int]) -> str:
    """One line for a build that finished with rows a bug rejected."""
    where = ", ".join(f"{stage} {n}" for stage, n in counts.items())
    return (f"{plural(sum(counts.values()), 'row')} rejected because a stage's code failed ({where}; reason "
            f"{INTERNAL_ERROR} in the stage's rejects, the error in the log); fix it and run again: those rows are "
            "retried, the rest comes from the request cache")
