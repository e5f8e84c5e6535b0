"""Wording shared by what users read: a count with its noun, '1 example', '2 examples'.
(The rule checks word their verdicts with their own, flows/checks/verdict.py: no thousands
separators in reasons already stored.)"""
from __future__ import annotations


def plural(n: int, noun: str) -> str:
    """'1 row', '1,500 rows'."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"
