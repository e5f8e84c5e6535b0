"""Wording shared by what users read: a count with its noun, '1 example', '2 examples'."""
from __future__ import annotations


def plural(n: int, noun: str, grouped: bool = True) -> str:
    """'1 row', '1,500 rows' ('1500 rows' when not `grouped`)."""
    count = f"{n:,}" if grouped else str(n)
    return f"{count} {noun}" if n == 1 else f"{count} {noun}s"
