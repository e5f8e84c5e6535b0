"""Splitting a response into sentences (``count`` with unit ``sentences``).

Punctuation ends a sentence: Chinese 。！？ (and half-width ｡), ASCII !? and ., the ellipsis …
or ..., with the closing quotes, brackets and emphasis marks after it (``**One.** Two.`` is two
sentences). Not ；/;: a semicolon joins clauses inside one sentence in Chinese as in English. A
'.' inside a number or a domain, or after e.g. / Mr. and similar, does not end one.

A line break ends a sentence only where a line is a unit of its own:

- a Markdown heading, a list item, a table row, or a line that is all bold (``**Ingredients**``);
  list markers and heading marks are not part of the sentence ("1. First." is "First.");
- a paragraph break (a blank line), except after a line ending in , or : -- a salutation or a
  lead-in ("Dear Ann," / "尊敬的客户：") runs on into the paragraph it opens, as in prose;
- a line ending in sentence punctuation (the punctuation ends it).

Other line breaks are wrapping: a poem line without final punctuation continues the sentence,
so a 40-line poem of 20 sentences counts 20. Some lines hold no sentence and are left out:
email header fields (Subject: / To: / 主题：...), lines that are only placeholders
([Your Name], 【姓名】), thematic breaks, and fenced code. A sign-off counts as one sentence
("Best regards,\\nAnn" is one, as a tokenizer reading the text would count it). Pieces without
a letter or digit (a lone quote, '……') are not sentences.

    >>> split_sentences("**One.** Two.")
    ['**One.**', 'Two.']
    >>> len(split_sentences("Roses are red\\nViolets are blue,\\nSugar is sweet\\nAnd so are you."))
    1
"""
from __future__ import annotations

import re

from flows.checks.structure import HEADING, LINE_PREFIX, THEMATIC_BREAK, list_item
from flows.checks.text import SPACELESS_RE, has_word, lines_with_fences

# What may follow a sentence's final mark and still belong to it: closing quotes and brackets,
# and the emphasis marks that close **bold**, *italic*, __bold__, _italic_ and ~~struck~~ text.
_CLOSERS = "\"'”’」』）)]】》〉»›*_~"
_SENTENCE_END = re.compile(r"(?:[。｡！？!?…]+|\.{2,}|\.)[" + re.escape(_CLOSERS) + "]*")
_ABBREVIATIONS = frozenset({"e.g", "i.e", "mr", "mrs", "ms", "dr", "prof", "vs", "cf", "fig", "approx", "jr", "sr"})
# A paragraph ending in one of these runs on into the next one (salutations, lead-ins).
_RUNS_ON = (",", ":", "，", "：")

_HEADER_FIELD = re.compile(r"^(?:subject|re|to|from|date|cc|bcc|主题|主旨|收件人|发件人|抄送|日期)[ \t]*[:：]", re.I)
_PLACEHOLDERS = re.compile(r"^(?:\[[^\[\]]*\]|【[^【】]*】|\{\{[^{}]*\}\}|[ \t,，])+$")
_BOLD_LINE = re.compile(r"^(\*\*|__)(?=\S)([^*_]*?\S)\1[ \t]*[:：]?$")
_INDENTED = re.compile(r"^(?:[ \t]*>)*(?: {2,}|\t)")

# How a line takes part in sentences; see _line.
_BLANK, _NONE, _UNIT, _ITEM, _PROSE = "blank", "none", "unit", "item", "prose"


def split_sentences(text: str) -> list[str]:
    """The text's sentences, each stripped; see the module docstring for the rules."""
    pieces = []
    for block in _blocks(text):
        pieces += _split_on_punctuation("\n".join(block))
    return [piece.strip() for piece in pieces if has_word(piece)]


def _line(line: str) -> tuple[str, str]:
    """(kind, text) of a line: its part in sentences and its text without Markdown marks."""
    rest = LINE_PREFIX.sub("", line).rstrip()
    if not rest:
        return _BLANK, ""
    if THEMATIC_BREAK.match(rest) or _HEADER_FIELD.match(rest) or _PLACEHOLDERS.match(rest):
        return _NONE, ""
    if heading := HEADING.match(rest):
        return _UNIT, heading.group(2)
    if bold := _BOLD_LINE.match(rest):
        return _UNIT, bold.group(2)
    if rest.startswith("|"):
        return _UNIT, rest
    if item := list_item(rest):
        return _ITEM, item[2]
    return _PROSE, rest


def _blocks(text: str) -> list[list[str]]:
    """Runs of line texts that no sentence crosses: only punctuation splits within a run."""
    blocks: list[list[str]] = []
    runs_on = None  # which next prose line continues the last block: "any", "indented" or None
    for raw, fenced in lines_with_fences(text):
        kind, line = (_NONE, "") if fenced else _line(raw)
        if kind == _BLANK:
            if runs_on and not (runs_on == "any" and blocks[-1][-1].rstrip("*_ ").endswith(_RUNS_ON)):
                runs_on = None
        elif kind == _NONE:
            runs_on = None
        elif kind == _PROSE and (runs_on == "any" or (runs_on == "indented" and _INDENTED.match(raw))):
            blocks[-1].append(line)
        else:
            blocks.append([line])
            # a list item's own indented lines continue it; a heading or table row stands alone
            runs_on = {_PROSE: "any", _ITEM: "indented"}.get(kind)
    return blocks


def _split_on_punctuation(text: str) -> list[str]:
    pieces, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m.group().startswith(".") and not m.group().startswith("..") and not _is_full_stop(text, m.start()):
            continue
        pieces.append(text[start:m.end()])
        start = m.end()
    pieces.append(text[start:])
    return pieces


def _is_full_stop(text: str, i: int) -> bool:
    """Whether the single '.' at i ends a sentence: not in 3.14, example.com or e.g."""
    after = i + 1
    while after < len(text) and text[after] in _CLOSERS:
        after += 1
    nxt = text[after] if after < len(text) else ""
    if nxt and not (nxt.isspace() or SPACELESS_RE.match(nxt)):
        return False
    word = re.search(r"[A-Za-z]+(?:\.[A-Za-z]+)*$", text[max(0, i - 20):i])
    return not (word and word.group().lower() in _ABBREVIATIONS)
