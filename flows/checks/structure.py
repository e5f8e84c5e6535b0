"""Document structure: list items (numbered or bulleted) and Markdown headings."""
from __future__ import annotations

import re

from flows.checks.text import lines_outside_fences
from flows.checks.verdict import Verdict, bounds_text, plural, within

LIST_STYLES = ("numbered", "bulleted", "any")

# List markers at the start of a line. Numbered: 1. 1) 1、 1.2 (1) （1） ①-⑳ 一、 （一） 第一、/第一步：
# (full-width digits too). "1." needs no space after it (Chinese writes 1.苹果) but must not be
# followed by a digit, so a line starting 3.14 is not an item. Bulleted: - * + need a space
# after them (so *emphasis* and -5 are not items); • · ● do not.
_NUMBERED_MARKER = re.compile(
    r"(?:[0-9０-９]{1,3}(?:[.．][0-9０-９]{1,3})*[.．)）、](?![0-9０-９])"
    r"|[0-9０-９]{1,3}(?:[.．][0-9０-９]{1,3})+(?=\s)"
    r"|[(（][0-9０-９]{1,3}[)）]"
    r"|[\u2460-\u2473]"
    r"|[(（]?[一二三四五六七八九十]{1,3}[、)）]"
    r"|第[一二三四五六七八九十百0-9]{1,3}(?:[步点條条项章节部分天站]{1,2})?[、，,:：.．\s])"
)
_BULLET_MARKER = re.compile(r"(?:[-*+](?=\s)|[•·●])")
THEMATIC_BREAK = re.compile(r"^\s*([-*_])(?:\s*\1){2,}\s*$")
LINE_PREFIX = re.compile(r"^[ \t]*(?:>[ \t]?)*")  # indentation and blockquote marks
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(\S.*?)(?:[ \t]+#+)?[ \t]*$")


def list_item(line: str) -> tuple[int, str, str] | None:
    """(indent, 'numbered' | 'bulleted', text) when the line is a list item."""
    if THEMATIC_BREAK.match(line):
        return None
    prefix = LINE_PREFIX.match(line).group()
    indent = len(prefix.replace("\t", "    ").replace(">", ""))
    rest = line[len(prefix):]
    # "**1. 标题**" is how chat models often write a numbered item: look past leading bold marks.
    rest = re.sub(r"^(?:\*\*|__)", "", rest)
    for style, marker in (("numbered", _NUMBERED_MARKER), ("bulleted", _BULLET_MARKER)):
        m = marker.match(rest)
        if m and rest[m.end():].strip(" \t*_"):
            # 1.1 / 1.2.3 are sub-points: one step deeper per level so they are not top-level
            # next to the 1. 2. items they belong to.
            depth = len(re.findall(r"[0-9０-９][.．](?=[0-9０-９])", m.group()))
            return indent + depth, style, rest[m.end():].strip(" \t*_")
    return None


def list_items(text: str, style: str = "any") -> list[str]:
    """Texts of the top-level list items of ``style`` (numbered, bulleted or any), outside code
    fences. Top level = the least indented items of that style, so sub-points under numbered
    items do not inflate the count; headings (## 1. Intro) are not list items."""
    found = [item for item in map(list_item, lines_outside_fences(text))
             if item and (style == "any" or item[1] == style)]
    if not found:
        return []
    top = min(indent for indent, _, _ in found)
    return [content for indent, _, content in found if indent == top]


def headings(text: str) -> list[tuple[int, str]]:
    """(level, title) of the Markdown ATX headings (# .. ###### and a space) outside code fences."""
    return [(len(m.group(1)), m.group(2)) for m in map(HEADING.match, lines_outside_fences(text)) if m]


def check_list(spec: dict, response: str) -> Verdict:
    style = spec["style"]
    n = len(list_items(response, style))
    low, high = spec.get("min_items", 1), spec.get("max_items")
    noun = "list item" if style == "any" else f"{style} list item"
    return Verdict(within(n, low, high), f"{plural(n, noun)}, needs {bounds_text(low, high)}")


def check_headings(spec: dict, response: str) -> Verdict:
    found = headings(response)
    present = sorted({level for level, _ in found})
    low, high = spec.get("min_count", 1), spec.get("max_count")
    measured = plural(len(found), "heading") + (f" (levels {', '.join(map(str, present))})" if present else "")
    missing = [level for level in spec.get("levels", []) if level not in present]
    if missing:
        return Verdict(False, f"{measured}, needs level {', '.join(map(str, missing))}")
    return Verdict(within(len(found), low, high), f"{measured}, needs {bounds_text(low, high)}")
