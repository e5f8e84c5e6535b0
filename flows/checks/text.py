"""Text helpers the check families share: lines, code fences, scripts written without spaces."""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Scripts written without spaces between words: Han (with extensions) and Japanese kana. The
# kana ranges leave out ・ (U+30FB), which is punctuation.
SPACELESS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f\u3041-\u309f\u30a0-\u30fa\u30fc-\u30ff"
SPACELESS_RE = re.compile(f"[{SPACELESS}]")


def lines(text: str) -> list[str]:
    """The text's lines, whatever the line endings (\\r\\n, \\r or \\n)."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


FENCE_LINE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def lines_with_fences(text: str) -> list[tuple[str, bool]]:
    """(line, whether it belongs to a fenced code block: ``` or ~~~, fence lines included)."""
    marked, fence = [], None
    for line in lines(text):
        m = FENCE_LINE.match(line)
        if fence is None and m:
            fence = m.group(1)
            marked.append((line, True))
        elif fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip(" `~"):
                fence = None
            marked.append((line, True))
        else:
            marked.append((line, False))
    return marked


def lines_outside_fences(text: str) -> list[str]:
    """Lines of the text with fenced code blocks (``` or ~~~) left out."""
    return [line for line, fenced in lines_with_fences(text) if not fenced]


def has_word(text: str) -> bool:
    """Whether the text has a letter or digit (Unicode categories L and N)."""
    return any(unicodedata.category(ch)[0] in "LN" for ch in text)


@lru_cache(maxsize=None)
def words_pattern(words: tuple[str, ...], whole: bool = False) -> re.Pattern:
    """Any of the words, in case-folded text: a Latin word from where a Latin word starts (to
    where it ends too when ``whole``: "word" is in "words" only without it, "this" never in
    "thistle"), anything else as a plain substring. Not \\b: Chinese characters are word
    characters to re, so \\bjson would miss the JSON in 以JSON格式."""
    end = r"(?![a-z0-9])" if whole else ""
    return re.compile("|".join(rf"(?<![a-z0-9]){re.escape(w)}{end}" if w[0].isascii() and w[0].isalpha()
                               else re.escape(w) for w in words))
