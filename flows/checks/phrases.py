"""Phrase matching: ``include``, ``exclude``, ``starts_with`` and ``ends_with``.

Texts and phrases are compared in a normal form (see ``norm``); a phrase edge that is a letter
or digit of a spaced script must sit on a word boundary ("very" is not found in "every"), while
CJK has no word boundaries, so Chinese phrases match as plain substrings.
"""
from __future__ import annotations

import re
import unicodedata

from flows.checks.text import SPACELESS_RE
from flows.checks.verdict import Verdict, plural

_QUOTES = str.maketrans({
    "“": '"', "”": '"', "「": '"', "」": '"', "『": '"', "』": '"', "„": '"', "«": '"', "»": '"',
    "‘": "'", "’": "'", "`": "'",
})
_EDGE_MARKS = "#>*_~'\"《》" + " "


def norm(text: str) -> str:
    """Matching form: NFKC (（）→() ，→, ＡＢ→AB), case folded, all double quotes as ", all
    single quotes as ', * emphasis removed (**品尝时尚** contains 品尝时尚), whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_QUOTES).replace("*", "")
    return re.sub(r"\s+", " ", text).strip()


def strip_edges(text: str, left: bool = False, right: bool = False) -> str:
    """The text without whitespace, Markdown marks (# > * _ ~) and quotes at the chosen edges."""
    if left:
        text = text.lstrip(_EDGE_MARKS)
    if right:
        text = text.rstrip(_EDGE_MARKS)
    return text


def _wordy(ch: str) -> bool:
    """A letter or digit of a script with spaces between words (where word boundaries exist)."""
    return ch.isalnum() and not SPACELESS_RE.match(ch)


def _contains(text: str, phrase: str) -> bool:
    """Whether normalised ``phrase`` occurs in normalised ``text`` on word boundaries where the
    phrase starts or ends with a letter or digit of a spaced script."""
    start = 0
    while (i := text.find(phrase, start)) != -1:
        j = i + len(phrase)
        bad_start = _wordy(phrase[0]) and i > 0 and _wordy(text[i - 1])
        bad_end = _wordy(phrase[-1]) and j < len(text) and _wordy(text[j])
        if not (bad_start or bad_end):
            return True
        start = i + 1
    return False


def _quoted(phrases: list[str]) -> str:
    return ", ".join(f'"{p}"' for p in phrases)


def check_include(spec: dict, response: str) -> Verdict:
    text = norm(response)
    phrases = spec["phrases"]
    found = [p for p in phrases if _contains(text, norm(p))]
    missing = [p for p in phrases if p not in found]
    if spec.get("mode", "all") == "any":
        if found:
            return Verdict(True, f"contains {_quoted(found[:1])}")
        return Verdict(False, f"contains none of {_quoted(phrases)}")
    if missing:
        return Verdict(False, f"missing {_quoted(missing)}")
    return Verdict(True, f"contains {_quoted(phrases)}" if len(phrases) == 1 else f"contains all {len(phrases)} phrases")


def check_exclude(spec: dict, response: str) -> Verdict:
    text = norm(response)
    found = [p for p in spec["phrases"] if _contains(text, norm(p))]
    if found:
        return Verdict(False, f"contains excluded {_quoted(found)}")
    return Verdict(True, f"none of {plural(len(spec['phrases']), 'excluded phrase')} found")


def check_starts_with(spec: dict, response: str) -> Verdict:
    text = strip_edges(norm(response), left=True)
    phrase = strip_edges(norm(spec["phrase"]), left=True, right=True)
    ok = text.startswith(phrase) and not (
        _wordy(phrase[-1]) and len(text) > len(phrase) and _wordy(text[len(phrase)]))
    if ok:
        return Verdict(True, f'starts with "{spec["phrase"]}"')
    # Reasons quote the response as written, not its normalised form.
    head = response.strip()
    width = len(spec["phrase"]) + 5
    shown = head if len(head) <= width else head[:width] + "…"
    return Verdict(False, f'starts with "{shown}", needs "{spec["phrase"]}"')


def check_ends_with(spec: dict, response: str) -> Verdict:
    text, phrase = _ending(response), _ending(spec["phrase"])
    start = len(text) - len(phrase)
    ok = text.endswith(phrase) and not (_wordy(phrase[0]) and start > 0 and _wordy(text[start - 1]))
    if ok:
        return Verdict(True, f'ends with "{spec["phrase"]}"')
    tail = response.strip()
    width = len(spec["phrase"]) + 5
    shown = tail if len(tail) <= width else "…" + tail[-width:]
    return Verdict(False, f'ends with "{shown}", needs "{spec["phrase"]}"')


def _ending(text: str) -> str:
    """Normalised text with edge marks, then one trailing punctuation mark, then marks again
    removed: '“再见”。' and '再见!' both end in '再见'."""
    text = strip_edges(norm(text), left=True, right=True)
    if text and unicodedata.category(text[-1]).startswith("P"):
        text = strip_edges(text[:-1], right=True)
    return text
