"""CFBench's scores: per row CSR, ISR and PSR from the judge's 0/1 verdicts, and their means.

For one row, with a verdict per criterion (1 met, 0 not):

- CSR (constraint satisfaction rate): the mean of the verdicts.
- ISR (instruction satisfaction rate): 1 only if every criterion is met.
- PSR (priority satisfaction rate): 0 if any primary criterion (主需) is not met; otherwise
  1 when the row has only primaries; with only secondaries (次需), 1 if CSR > 0.8; with both,
  1 if 0.5 + 0.5 * mean(secondary verdicts) > 0.8, that is if more than 60% of the secondaries
  are met.

These are the rules of the official evaluation code (PKU-Baichuan-MLSystemLab/CFBench,
code/evalaute.py, `_score_compute` and `_scores`), checked against it branch by branch. The
means are reported for the easy and hard halves and the full set, as the paper does; and, per
criterion, the share met by constraint type (a criterion's third field) and subtype (fourth).

Where this knowingly differs from the official code:

- A row without usable verdicts is not scored: it is listed under `unscored` and left out of
  every mean, never counted as 0. The official code, after ten tries of its judge, parses an
  unusable reply leniently (any "text<TAB>score" line, PSR then CSR > 0.8 whatever the
  priorities) or, failing that, scores the row CSR = ISR = PSR = 0.
- Each row's CSR is kept exact; the official code rounds it to two decimals before averaging
  (and before comparing with 0.8 and 1), which moves no row's ISR or PSR for any realistic
  criteria count (checked for every count up to 30) but can move the mean CSR by up to 0.005.
  Means here are rounded to four decimals, the official ones to two.
- The breakdowns by type and subtype are not in the official code; a criterion without a type
  (empty field) is counted under "(none)".

    scores = parse_judge_reply(reply, row)          # [1, 0, 1] or None: the judge's strict format
    metrics = aggregate(rows, {row.id: scores, ...})
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from fractions import Fraction

from flows.cfbench.data import PRIMARY, SECONDARY, SPLITS, Row
from flows.errors import InputError
from flows.judged_suite import checked_verdicts

NO_TYPE = "(none)"
_CSR_BAR = Fraction(4, 5)  # PSR, secondaries only: CSR > 0.8
_SECONDARY_BAR = Fraction(3, 5)  # PSR, both kinds: 0.5 + 0.5 * mean > 0.8  <=>  mean > 0.6


def parse_judge_reply(reply: str | None, row: Row) -> list[int] | None:
    """The verdicts in a judge reply of the official format, or None where it does not follow it.

    The official judge prompt asks for one "criterion<TAB>0|1" block per criterion, in order,
    blocks separated by a blank line; a reply counts only when the block count matches, every
    block has exactly one tab, its text is the criterion's text exactly, and its score is 0 or 1.
    """
    if not reply:
        return None
    blocks = reply.split("\n\n")
    if len(blocks) != len(row.criteria):
        return None
    scores = []
    for block, criterion in zip(blocks, row.criteria):
        parts = block.split("\t")
        if len(parts) != 2 or parts[0] != criterion.text:
            return None
        try:
            value = float(parts[1])
        except ValueError:
            return None
        if value not in (0.0, 1.0):
            return None
        scores.append(int(value))
    return scores


def _verdicts(row: Row, verdicts: Sequence | None) -> list[int] | None:
    """The row's 0/1 verdicts, or None when any is missing (the row is not scored)."""
    return checked_verdicts(verdicts, len(row.criteria), f"row idx {row.id}", "criteria", "criterion", "0 or 1")


def row_metrics(row: Row, verdicts: Sequence[int]) -> dict:
    """CSR (exact), ISR and PSR of one row from its verdicts (one 0/1 per criterion)."""
    scores = _verdicts(row, verdicts)
    if scores is None:
        raise InputError(f"verdicts for row idx {row.id}: a verdict is missing")
    csr = Fraction(sum(scores), len(scores))
    primary = [s for s, c in zip(scores, row.criteria) if c.priority == PRIMARY]
    secondary = [s for s, c in zip(scores, row.criteria) if c.priority == SECONDARY]
    if 0 in primary:
        psr = 0
    elif not secondary:  # primaries only, all met
        psr = 1
    elif not primary:  # secondaries only
        psr = int(csr > _CSR_BAR)
    else:  # both kinds, every primary met
        psr = int(Fraction(sum(secondary), len(secondary)) > _SECONDARY_BAR)
    return {"CSR": float(csr), "ISR": int(csr == 1), "PSR": psr}


def _means(lines: list[dict]) -> dict:
    n = len(lines)
    return {"n": n, **{k: round(sum(line[k] for line in lines) / n, 4) if n else None for k in ("CSR", "ISR", "PSR")}}


def _share(met: int, n: int) -> dict:
    return {"n": n, "met": met, "rate": round(met / n, 4) if n else None}


def aggregate(rows: Sequence[Row], verdicts: Mapping[int, Sequence | None]) -> dict:
    """CSR / ISR / PSR means for easy, hard and the full set over the rows with verdicts (by
    row id), and the share of criteria met per type and subtype. Rows whose verdicts are
    missing (no entry, None, or a None among them) are listed under `unscored`."""
    lines: dict[str, list[dict]] = {split: [] for split in SPLITS}
    unscored: list[int] = []
    by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    by_subtype: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        scores = _verdicts(row, verdicts.get(row.id))
        if scores is None:
            unscored.append(row.id)
            continue
        lines[row.split].append(row_metrics(row, scores))
        for score, criterion in zip(scores, row.criteria):
            for counts in (by_type[criterion.type or NO_TYPE], by_subtype[criterion.subtype or NO_TYPE]):
                counts[0] += 1
                counts[1] += score
    return {
        "rows": len(rows), "scored": len(rows) - len(unscored), "unscored": unscored,
        **{split: _means(lines[split]) for split in SPLITS},
        "full": _means([line for split in SPLITS for line in lines[split]]),
        "by_type": {t: _share(k, n) for t, (n, k) in sorted(by_type.items())},
        "by_subtype": {t: _share(k, n) for t, (n, k) in sorted(by_subtype.items())},
    }
