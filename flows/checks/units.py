"""Counting units of length: characters, words, sentences, paragraphs, list items (``count``)."""
from __future__ import annotations

import re
import unicodedata

from flows.checks.sentences import split_sentences
from flows.checks.structure import list_items
from flows.checks.text import SPACELESS_RE, lines
from flows.checks.verdict import Verdict, bounds_text, plural, within

UNITS = ("chars", "words", "sentences", "paragraphs", "list_items")
_UNIT_NOUNS = {"chars": "character", "words": "word", "sentences": "sentence", "paragraphs": "paragraph",
               "list_items": "list item"}

# A word: a number with decimal or thousands separators, or letters/digits joined by ' or -.
_WORD_RE = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+(?:['’-][^\W_]+)*")


def count_units(text: str, unit: str) -> int:
    """How many ``unit`` (one of UNITS) the text has.

    chars: letters and digits (Unicode categories L and N), so whitespace, punctuation and
    symbols (Markdown marks too) are not counted; each Chinese character counts one (字数).
    words: each Han or kana character is one word, plus each run of other letters/digits
    (don't, well-known, 3.14 and 1,000 are one word each).
    sentences: see split_sentences. paragraphs: see split_paragraphs.
    list_items: top-level items of any style, see list_items.
    """
    if unit == "chars":
        return sum(1 for ch in unicodedata.normalize("NFC", text) if unicodedata.category(ch)[0] in "LN")
    if unit == "words":
        spaceless = len(SPACELESS_RE.findall(text))
        return spaceless + len(_WORD_RE.findall(SPACELESS_RE.sub(" ", text)))
    if unit == "sentences":
        return len(split_sentences(text))
    if unit == "paragraphs":
        return len(split_paragraphs(text))
    if unit == "list_items":
        return len(list_items(text, "any"))
    raise ValueError(f"unknown unit {unit!r}; expected one of: {', '.join(UNITS)}")


def split_paragraphs(text: str) -> list[str]:
    """Blocks separated by blank (or whitespace-only) lines; leading and trailing blank lines
    are ignored, so paragraph 0 is the first block with text whatever precedes it."""
    blocks = re.split(r"\n\s*\n", "\n".join(lines(text)).strip())
    return [block.strip() for block in blocks if block.strip()]


def check_count(spec: dict, response: str) -> Verdict:
    n = count_units(response, spec["unit"])
    low, high = spec.get("min"), spec.get("max")
    return Verdict(within(n, low, high), f"{plural(n, _UNIT_NOUNS[spec['unit']])}, needs {bounds_text(low, high)}")
