"""What a check answers (``Verdict``) and the wording its reasons share."""
from __future__ import annotations

from dataclasses import dataclass

from flows import words


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str  # short, human-readable, says what was measured


def bounds_text(low: int | None, high: int | None) -> str:
    """'exactly 3', '2 to 5', 'at least 2' or 'at most 5'."""
    if low is not None and high is not None:
        return f"exactly {low}" if low == high else f"{low} to {high}"
    return f"at least {low}" if low is not None else f"at most {high}"


def within(n: int, low: int | None, high: int | None) -> bool:
    return (low is None or n >= low) and (high is None or n <= high)


def plural(n: int, noun: str) -> str:
    # without thousands separators: the reasons already stored in run folders read so
    return words.plural(n, noun, grouped=False)
