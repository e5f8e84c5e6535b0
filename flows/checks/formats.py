"""Output formats (``format``): JSON, Markdown tables, HTML, LaTeX."""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser

from flows.checks.text import lines_outside_fences
from flows.checks.verdict import Verdict, plural

FORMATS = ("json", "markdown_table", "html", "latex")


def check_format(spec: dict, response: str) -> Verdict:
    return _FORMAT_CHECKERS[spec["format"]](response)


_WRAPPING_FENCE = re.compile(r"^(`{3,}|~{3,})[ \t]*[\w+.-]*[ \t]*\n(.*?)\n?\1[ \t]*$", re.S)


def _unfence(text: str) -> str:
    """The body of a response that is one fenced code block (```json ... ```), else the text."""
    text = text.strip()
    m = _WRAPPING_FENCE.match(text)
    return m.group(2) if m else text


def _check_json(response: str) -> Verdict:
    try:
        value = json.loads(_unfence(response))
    except json.JSONDecodeError as exc:
        return Verdict(False, f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    # A bare string or number is valid JSON, but nobody asking for JSON output means that.
    if isinstance(value, dict):
        return Verdict(True, f"valid JSON object with {plural(len(value), 'key')}")
    if isinstance(value, list):
        return Verdict(True, f"valid JSON array with {plural(len(value), 'item')}")
    return Verdict(False, f"JSON is a bare {type(value).__name__}, not an object or array")


_SEPARATOR_CELL = re.compile(r"^:?-+:?$")


def _table_cells(line: str) -> list[str]:
    row = line.strip()
    if row.startswith("|"):
        row = row[1:]
    if row.endswith("|") and not row.endswith("\\|"):
        row = row[:-1]
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", row)]


def _is_separator(line: str) -> bool:
    return "|" in line and "-" in line and all(_SEPARATOR_CELL.match(c) for c in _table_cells(line))


def _check_markdown_table(response: str) -> Verdict:
    lines = lines_outside_fences(response)
    problem = None
    for i in range(len(lines) - 1):
        if "|" not in lines[i] or _is_separator(lines[i]) or not _is_separator(lines[i + 1]):
            continue
        columns = len(_table_cells(lines[i]))
        body = []
        for line in lines[i + 2:]:
            if "|" not in line or not line.strip():
                break
            body.append(line)
        widths = [len(_table_cells(line)) for line in [lines[i + 1], *body]]
        if not body:
            problem = problem or "a table header and separator but no body rows"
        elif any(w != columns for w in widths):
            bad = next(w for w in widths if w != columns)
            problem = problem or f"a table row has {plural(bad, 'cell')}, the header has {columns}"
        else:
            return Verdict(True, f"Markdown table: {plural(columns, 'column')}, {plural(len(body), 'body row')}")
    if problem:
        return Verdict(False, problem)
    if any("|" in line for line in lines):
        return Verdict(False, "rows with | but no separator row (|---|) under a header row")
    return Verdict(False, "no Markdown table")


_VOID_TAGS = frozenset("area base br col embed hr img input link meta param source track wbr".split())


class _TagBalance(HTMLParser):
    """Counts elements and checks that non-void tags close in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.elements = 0
        self.problem: str | None = None

    def handle_starttag(self, tag, attrs):
        self.elements += 1
        if tag not in _VOID_TAGS:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):  # <br/>, <div/>: complete in itself
        self.elements += 1

    def handle_endtag(self, tag):
        if self.problem or tag in _VOID_TAGS:
            return
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
        elif tag in self.stack:
            self.problem = f"<{self.stack[-1]}> is not closed before </{tag}>"
        else:
            self.problem = f"</{tag}> has no opening tag"


def _check_html(response: str) -> Verdict:
    parser = _TagBalance()
    parser.feed(_unfence(response))
    parser.close()
    if parser.problem:
        return Verdict(False, f"HTML not well-formed: {parser.problem}")
    if parser.stack:
        return Verdict(False, f"HTML not well-formed: unclosed {' '.join(f'<{t}>' for t in parser.stack)}")
    if not parser.elements:
        return Verdict(False, "no HTML elements")
    return Verdict(True, f"well-formed HTML, {plural(parser.elements, 'element')}")


def _check_latex(response: str) -> Verdict:
    body = re.sub(r"(?<!\\)%.*", "", _unfence(response))  # drop comments: braces in them do not count
    depth, i = 0, 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            i += 2  # \{ \} \\ are escapes, not groups
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth < 0:
                return Verdict(False, "LaTeX not well-formed: } without {")
        i += 1
    if depth:
        return Verdict(False, f"LaTeX not well-formed: {plural(depth, 'unclosed {')}")
    envs: list[str] = []
    matched = 0
    for m in re.finditer(r"\\(begin|end)\s*\{([^{}]*)\}", body):
        which, name = m.groups()
        if which == "begin":
            envs.append(name)
        elif not envs or envs[-1] != name:
            opened = f"\\begin{{{envs[-1]}}}" if envs else "no \\begin"
            return Verdict(False, f"LaTeX not well-formed: \\end{{{name}}} closes {opened}")
        else:
            envs.pop()
            matched += 1
    if envs:
        return Verdict(False, f"LaTeX not well-formed: \\begin{{{envs[-1]}}} has no \\end")
    commands = len(re.findall(r"\\[A-Za-z]+", body))
    if not commands:
        return Verdict(False, "no LaTeX commands")
    return Verdict(True, f"LaTeX: braces balanced, {plural(matched, 'environment')}, {plural(commands, 'command')}")


_FORMAT_CHECKERS = {"json": _check_json, "markdown_table": _check_markdown_table, "html": _check_html,
                    "latex": _check_latex}
