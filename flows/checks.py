"""Rule checkers for the constraint dimensions a rule can decide; they back the LLM judge.

A *spec* is one JSON object: a ``kind`` and that kind's parameters (``CHECK_SCHEMA`` is the
JSON schema; an LLM gets it as the structured-output schema when it extracts specs from a
constraint). ``validate_spec`` says whether a spec is usable, ``check`` applies it to a response
and returns a ``Verdict`` whose reason says what was measured. Everything is pure Python and
deterministic: the same spec and response give the same verdict in every process.

    >>> spec = {"kind": "count", "unit": "chars", "max": 300}   # 字数不超过300字
    >>> validate_spec(spec, "numerical") is None
    True
    >>> check(spec, "你好，世界！")
    Verdict(passed=True, reason='4 characters, needs at most 300')
    >>> check({"kind": "include", "phrases": ["（品尝时尚）"]}, "口号：(品尝时尚)")
    Verdict(passed=True, reason='contains "（品尝时尚）"')

Kinds (parameters) and what they measure:

- ``count`` (unit, min, max): ``unit`` is chars | words | sentences | paragraphs | list_items;
  at least one of ``min``/``max``; exactly N is min == max. See ``count_units``.
- ``format`` (format): json | markdown_table | html | latex.
- ``list`` (style, min_items, max_items): style numbered | bulleted | any; at least one item
  (``min_items``, default 1) and at most ``max_items`` top-level items of that style.
- ``headings`` (min_count, max_count, levels): Markdown ATX headings outside code fences;
  at least one (``min_count``, default 1); every level in ``levels`` must appear.
- ``include`` (phrases, mode all | any) / ``exclude`` (phrases): phrase matching after
  normalisation (NFKC width folding, one kind of double and of single quote, case folding,
  ``*`` emphasis removed, whitespace collapsed); a phrase edge that is a letter or digit of a
  spaced script must sit on a word boundary ("very" is not found in "every"); CJK has no
  word boundaries, so Chinese phrases match as plain substrings.
- ``language`` (language): ``detect_language(response)`` equals it.
- ``starts_with`` / ``ends_with`` (phrase): after normalisation and stripping whitespace,
  Markdown marks (# > * _ ~ `) and quotes at the edge; ``ends_with`` also ignores one
  trailing punctuation mark on either side (祝您愉快！ matches a response ending 祝您愉快。).

``DIMENSION_KINDS`` maps each rule-checkable taxonomy dimension to the kinds that may check it.
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser

import jsonschema

__all__ = [
    "CHECK_SCHEMA",
    "KIND_SCHEMAS",
    "DIMENSION_KINDS",
    "UNITS",
    "FORMATS",
    "LIST_STYLES",
    "LANGUAGES",
    "Verdict",
    "validate_spec",
    "check",
    "detect_language",
    "count_units",
    "split_sentences",
    "split_paragraphs",
    "list_items",
    "headings",
]

UNITS = ("chars", "words", "sentences", "paragraphs", "list_items")
FORMATS = ("json", "markdown_table", "html", "latex")
LIST_STYLES = ("numbered", "bulleted", "any")
LANGUAGES = ("zh", "en", "ja", "ko", "ru", "ar", "fr", "de", "es")
LANGUAGE_NAMES = {"zh": "Chinese", "en": "English", "ja": "Japanese", "ko": "Korean", "ru": "Russian",
                  "ar": "Arabic", "fr": "French", "de": "German", "es": "Spanish", "unknown": "unknown"}

# ------------------------------------------------------------------------------- schema


def _kind(name: str, description: str, properties: dict, required: tuple[str, ...] = (), **extra) -> dict:
    return {
        "type": "object",
        "title": name,
        "description": description,
        "properties": {"kind": {"type": "string", "const": name}, **properties},
        "required": ["kind", *required],
        "additionalProperties": False,
        **extra,
    }


def _bound(what: str) -> dict:
    return {"type": "integer", "minimum": 0, "description": what}


_PHRASES = {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1},
            "description": "Exact words or phrases, copied from the constraint without surrounding quotes."}
_PHRASE = {"type": "string", "minLength": 1,
           "description": "The exact text, copied from the constraint without surrounding quotes."}

KIND_SCHEMAS: dict[str, dict] = {
    "count": _kind(
        "count",
        "A numeric limit on length or quantity. Give min and/or max; exactly N is min = max = N.",
        {
            "unit": {"type": "string", "enum": list(UNITS), "description": (
                "chars: characters without spaces and punctuation (字数; one per Chinese character); "
                "words: one per Chinese character plus one per Latin word; sentences; "
                "paragraphs: blocks separated by blank lines; list_items: top-level list items.")},
            "min": _bound("At least this many (inclusive)."),
            "max": _bound("At most this many (inclusive)."),
        },
        ("unit",),
        minProperties=3,  # kind, unit and at least one of min/max
    ),
    "format": _kind(
        "format",
        "The whole response must be in this output format.",
        {"format": {"type": "string", "enum": list(FORMATS), "description": (
            "json: the response is a JSON object or array (a ```json block is allowed); "
            "markdown_table: contains a Markdown table with a |---| separator row; "
            "html: well-formed HTML; latex: LaTeX with balanced braces and environments.")}},
        ("format",),
    ),
    "list": _kind(
        "list",
        "The response must present items as a numbered or bulleted list.",
        {
            "style": {"type": "string", "enum": list(LIST_STYLES),
                      "description": "numbered (1. 1) 1、 (1) ① 一、 第一), bulleted (- * • ·), or any."},
            "min_items": _bound("At least this many top-level items (default 1)."),
            "max_items": _bound("At most this many top-level items."),
        },
        ("style",),
    ),
    "headings": _kind(
        "headings",
        "The response must use Markdown headings (# Title, ## Subtitle).",
        {
            "min_count": _bound("At least this many headings (default 1)."),
            "max_count": _bound("At most this many headings."),
            "levels": {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 1, "maximum": 6},
                       "description": "Heading levels that must each appear, e.g. [1, 2] for title and subtitles."},
        },
    ),
    "include": _kind(
        "include",
        "The response must contain these exact words or phrases.",
        {"phrases": _PHRASES,
         "mode": {"type": "string", "enum": ["all", "any"], "description": "all (default) or any of the phrases."}},
        ("phrases",),
    ),
    "exclude": _kind(
        "exclude",
        "The response must not contain any of these exact words or phrases.",
        {"phrases": _PHRASES},
        ("phrases",),
    ),
    "language": _kind(
        "language",
        "The response must be written in this language.",
        {"language": {"type": "string", "enum": list(LANGUAGES),
                      "description": "zh Chinese, en English, ja Japanese, ko Korean, ru Russian, ar Arabic, "
                                     "fr French, de German, es Spanish."}},
        ("language",),
    ),
    "starts_with": _kind(
        "starts_with",
        "The response must begin with this exact text (a fixed opening or title).",
        {"phrase": _PHRASE},
        ("phrase",),
    ),
    "ends_with": _kind(
        "ends_with",
        "The response must end with this exact text (a fixed closing line or sign-off).",
        {"phrase": _PHRASE},
        ("phrase",),
    ),
}

# The kinds are told apart by their `kind` const, so at most one branch can match and oneOf
# behaves like anyOf; validate_spec validates against the one branch for a clearer reason.
# Draft 2020-12 without a "$schema" key, because callers nest this schema inside their own.
CHECK_SCHEMA: dict = {
    "title": "RuleCheck",
    "description": "One rule check for a constraint: pick the kind that decides it, then fill in that kind's fields.",
    "oneOf": list(KIND_SCHEMAS.values()),
}

DIMENSION_KINDS: dict[str, tuple[str, ...]] = {
    "numerical": ("count",),
    "output_format": ("format",),
    "numbering_and_list": ("list", "count"),
    "hierarchical_structure": ("headings",),
    "inclusion": ("include",),
    "exclusion": ("exclude",),
    "multilingual": ("language",),
    "template": ("starts_with", "ends_with"),
}

_VALIDATORS = {kind: jsonschema.Draft202012Validator(schema) for kind, schema in KIND_SCHEMAS.items()}


def validate_spec(spec: object, dimension: str | None = None) -> str | None:
    """None when ``spec`` is usable (for ``dimension`` when given), else a one-line reason."""
    if not isinstance(spec, dict):
        return f"a spec must be a JSON object, not {type(spec).__name__}"
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in KIND_SCHEMAS:
        return f"unknown kind {kind!r}; expected one of: {', '.join(KIND_SCHEMAS)}"
    if dimension is not None:
        allowed = DIMENSION_KINDS.get(dimension)
        if allowed is None:
            return f"dimension {dimension!r} has no rule checks (rule-checkable: {', '.join(DIMENSION_KINDS)})"
        if kind not in allowed:
            return f"kind {kind!r} cannot check dimension {dimension!r} (allowed: {', '.join(allowed)})"
    error = jsonschema.exceptions.best_match(_VALIDATORS[kind].iter_errors(spec))
    if error is not None:
        if error.validator == "minProperties":
            return "count needs min and/or max"
        where = "/".join(map(str, error.absolute_path))
        return f"{kind}: {where + ': ' if where else ''}{error.message}"
    return _semantic_problem(spec)


def _semantic_problem(spec: dict) -> str | None:
    """What the schema cannot say: min <= max, phrases that are not blank after normalising."""
    for low, high in (("min", "max"), ("min_items", "max_items"), ("min_count", "max_count")):
        if low in spec and high in spec and spec[low] > spec[high]:
            return f"{spec['kind']}: {low} {spec[low]} is greater than {high} {spec[high]}"
    for phrase in spec.get("phrases", []):
        if not _norm(phrase):
            return f"{spec['kind']}: phrase {phrase!r} is empty after normalising"
    if "phrase" in spec and not _strip_edges(_norm(spec["phrase"]), left=True, right=True):
        return f"{spec['kind']}: phrase {spec['phrase']!r} is empty after stripping marks and whitespace"
    return None


# ------------------------------------------------------------------------------- verdicts


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str  # short, human-readable, says what was measured


def check(spec: dict, response: str) -> Verdict:
    """Apply a valid spec to a response. Raises ValueError for an unknown kind."""
    kind = spec.get("kind")
    checker = _CHECKERS.get(kind) if isinstance(kind, str) else None
    if checker is None:
        raise ValueError(f"unknown check kind {kind!r}")
    return checker(spec, response)


def _bounds_text(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"exactly {low}" if low == high else f"{low} to {high}"
    return f"at least {low}" if low is not None else f"at most {high}"


def _within(n: int, low: int | None, high: int | None) -> bool:
    return (low is None or n >= low) and (high is None or n <= high)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


_UNIT_NOUNS = {"chars": "character", "words": "word", "sentences": "sentence", "paragraphs": "paragraph",
               "list_items": "list item"}


def _check_count(spec: dict, response: str) -> Verdict:
    n = count_units(response, spec["unit"])
    low, high = spec.get("min"), spec.get("max")
    return Verdict(_within(n, low, high), f"{_plural(n, _UNIT_NOUNS[spec['unit']])}, needs {_bounds_text(low, high)}")


def _check_list(spec: dict, response: str) -> Verdict:
    style = spec["style"]
    n = len(list_items(response, style))
    low, high = spec.get("min_items", 1), spec.get("max_items")
    noun = "list item" if style == "any" else f"{style} list item"
    return Verdict(_within(n, low, high), f"{_plural(n, noun)}, needs {_bounds_text(low, high)}")


def _check_headings(spec: dict, response: str) -> Verdict:
    found = headings(response)
    present = sorted({level for level, _ in found})
    low, high = spec.get("min_count", 1), spec.get("max_count")
    measured = _plural(len(found), "heading") + (f" (levels {', '.join(map(str, present))})" if present else "")
    missing = [level for level in spec.get("levels", []) if level not in present]
    if missing:
        return Verdict(False, f"{measured}, needs level {', '.join(map(str, missing))}")
    return Verdict(_within(len(found), low, high), f"{measured}, needs {_bounds_text(low, high)}")


def _quoted(phrases: list[str]) -> str:
    return ", ".join(f'"{p}"' for p in phrases)


def _check_include(spec: dict, response: str) -> Verdict:
    text = _norm(response)
    phrases = spec["phrases"]
    found = [p for p in phrases if _contains(text, _norm(p))]
    missing = [p for p in phrases if p not in found]
    if spec.get("mode", "all") == "any":
        if found:
            return Verdict(True, f"contains {_quoted(found[:1])}")
        return Verdict(False, f"contains none of {_quoted(phrases)}")
    if missing:
        return Verdict(False, f"missing {_quoted(missing)}")
    return Verdict(True, f"contains {_quoted(phrases)}" if len(phrases) == 1 else f"contains all {len(phrases)} phrases")


def _check_exclude(spec: dict, response: str) -> Verdict:
    text = _norm(response)
    found = [p for p in spec["phrases"] if _contains(text, _norm(p))]
    if found:
        return Verdict(False, f"contains excluded {_quoted(found)}")
    return Verdict(True, f"none of {_plural(len(spec['phrases']), 'excluded phrase')} found")


def _check_language(spec: dict, response: str) -> Verdict:
    got, want = detect_language(response), spec["language"]
    return Verdict(got == want, f"detected {got} ({LANGUAGE_NAMES[got]}), needs {want} ({LANGUAGE_NAMES[want]})")


def _check_starts_with(spec: dict, response: str) -> Verdict:
    text = _strip_edges(_norm(response), left=True)
    phrase = _strip_edges(_norm(spec["phrase"]), left=True, right=True)
    ok = text.startswith(phrase) and not (
        _wordy(phrase[-1]) and len(text) > len(phrase) and _wordy(text[len(phrase)]))
    if ok:
        return Verdict(True, f'starts with "{spec["phrase"]}"')
    # Reasons quote the response as written, not its normalised form.
    head = response.strip()
    width = len(spec["phrase"]) + 5
    shown = head if len(head) <= width else head[:width] + "…"
    return Verdict(False, f'starts with "{shown}", needs "{spec["phrase"]}"')


def _check_ends_with(spec: dict, response: str) -> Verdict:
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
    text = _strip_edges(_norm(text), left=True, right=True)
    if text and unicodedata.category(text[-1]).startswith("P"):
        text = _strip_edges(text[:-1], right=True)
    return text


# ------------------------------------------------------------------------------- formats


def _check_format(spec: dict, response: str) -> Verdict:
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
        return Verdict(True, f"valid JSON object with {_plural(len(value), 'key')}")
    if isinstance(value, list):
        return Verdict(True, f"valid JSON array with {_plural(len(value), 'item')}")
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
    lines = _lines_outside_fences(response)
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
            problem = problem or f"a table row has {_plural(bad, 'cell')}, the header has {columns}"
        else:
            return Verdict(True, f"Markdown table: {_plural(columns, 'column')}, {_plural(len(body), 'body row')}")
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
    return Verdict(True, f"well-formed HTML, {_plural(parser.elements, 'element')}")


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
        return Verdict(False, f"LaTeX not well-formed: {_plural(depth, 'unclosed {')}")
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
    return Verdict(True, f"LaTeX: braces balanced, {_plural(matched, 'environment')}, {_plural(commands, 'command')}")


_FORMAT_CHECKERS = {"json": _check_json, "markdown_table": _check_markdown_table, "html": _check_html,
                    "latex": _check_latex}

_CHECKERS = {
    "count": _check_count,
    "format": _check_format,
    "list": _check_list,
    "headings": _check_headings,
    "include": _check_include,
    "exclude": _check_exclude,
    "language": _check_language,
    "starts_with": _check_starts_with,
    "ends_with": _check_ends_with,
}

# ------------------------------------------------------------------------------- text helpers

# Scripts written without spaces between words: Han (with extensions) and Japanese kana. The
# kana ranges leave out ・ (U+30FB), which is punctuation.
_SPACELESS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f\u3041-\u309f\u30a0-\u30fa\u30fc-\u30ff"
_SPACELESS_RE = re.compile(f"[{_SPACELESS}]")
_HAN_RE = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f]")
_KANA_RE = re.compile("[\u3041-\u309f\u30a0-\u30fa\u30fc-\u30ff]")
# A word: a number with decimal or thousands separators, or letters/digits joined by ' or -.
_WORD_RE = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+(?:['’-][^\W_]+)*")


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


_FENCE_LINE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


def _lines_outside_fences(text: str) -> list[str]:
    """Lines of the text with fenced code blocks (``` or ~~~) left out."""
    kept, fence = [], None
    for line in _lines(text):
        m = _FENCE_LINE.match(line)
        if fence is None and m:
            fence = m.group(1)
        elif fence is not None:
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip(" `~"):
                fence = None
        else:
            kept.append(line)
    return kept


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
        spaceless = len(_SPACELESS_RE.findall(text))
        return spaceless + len(_WORD_RE.findall(_SPACELESS_RE.sub(" ", text)))
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
    blocks = re.split(r"\n\s*\n", "\n".join(_lines(text)).strip())
    return [block.strip() for block in blocks if block.strip()]


# Sentence ends: Chinese 。！？ (and half-width ｡), ASCII !? and ., the ellipsis … or ...,
# and a line break (a title, list item or verse line without final punctuation is a unit of
# its own). Not ；/; : a semicolon joins clauses inside one sentence in Chinese as in English.
# Closing quotes and brackets after the end belong to the sentence they close.
_SENTENCE_END = re.compile(r"(?:[。｡！？!?…\n]+|\.{2,}|\.)[\"'”’」』）)\]]*")
_CLOSERS = "\"'”’」』）)]"
_ABBREVIATIONS = frozenset({"e.g", "i.e", "mr", "mrs", "ms", "dr", "prof", "vs", "cf", "fig", "approx", "jr", "sr"})


def _is_full_stop(text: str, i: int) -> bool:
    """Whether the single '.' at i ends a sentence: not in 3.14, example.com or e.g."""
    nxt = text[i + 1] if i + 1 < len(text) else ""
    if nxt and not (nxt.isspace() or nxt in _CLOSERS or _SPACELESS_RE.match(nxt)):
        return False
    word = re.search(r"[A-Za-z]+(?:\.[A-Za-z]+)*$", text[max(0, i - 20):i])
    return not (word and word.group().lower() in _ABBREVIATIONS)


def _has_word(text: str) -> bool:
    return any(unicodedata.category(ch)[0] in "LN" for ch in text)


def split_sentences(text: str) -> list[str]:
    """Sentences, split on 。！？ !? . … and line breaks (not on ；;); a '.' inside a number or
    a domain, or after e.g. / Mr. and similar, does not end one. List markers and heading marks
    at line starts are removed first so '1. First.' is one sentence. Pieces without a letter or
    digit (a lone closing quote, '……') are not sentences."""
    text = "\n".join(_strip_line_marks(line) for line in _lines(text))
    pieces, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        if m.group().startswith(".") and not m.group().startswith("..") and not _is_full_stop(text, m.start()):
            continue
        pieces.append(text[start:m.end()])
        start = m.end()
    pieces.append(text[start:])
    return [piece.strip() for piece in pieces if _has_word(piece)]


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
_THEMATIC_BREAK = re.compile(r"^\s*([-*_])(?:\s*\1){2,}\s*$")
_LINE_PREFIX = re.compile(r"^[ \t]*(?:>[ \t]?)*")  # indentation and blockquote marks


def _list_item(line: str) -> tuple[int, str, str] | None:
    """(indent, 'numbered' | 'bulleted', text) when the line is a list item."""
    if _THEMATIC_BREAK.match(line):
        return None
    prefix = _LINE_PREFIX.match(line).group()
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
    found = [item for item in map(_list_item, _lines_outside_fences(text))
             if item and (style == "any" or item[1] == style)]
    if not found:
        return []
    top = min(indent for indent, _, _ in found)
    return [content for indent, _, content in found if indent == top]


def _strip_line_marks(line: str) -> str:
    """A line without its blockquote marks, heading marks and list marker."""
    rest = _LINE_PREFIX.sub("", line)
    rest = re.sub(r"^#{1,6}[ \t]+", "", rest)
    item = _list_item(rest)
    return item[2] if item else rest


_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(\S.*?)(?:[ \t]+#+)?[ \t]*$")


def headings(text: str) -> list[tuple[int, str]]:
    """(level, title) of the Markdown ATX headings (# .. ###### and a space) outside code fences."""
    return [(len(m.group(1)), m.group(2)) for m in map(_HEADING.match, _lines_outside_fences(text)) if m]


# ------------------------------------------------------------------------------- matching

_QUOTES = str.maketrans({
    "“": '"', "”": '"', "「": '"', "」": '"', "『": '"', "』": '"', "„": '"', "«": '"', "»": '"',
    "‘": "'", "’": "'", "`": "'",
})
_EDGE_MARKS = "#>*_~'\"《》" + " "


def _norm(text: str) -> str:
    """Matching form: NFKC (（）→() ，→, ＡＢ→AB), case folded, all double quotes as ", all
    single quotes as ', * emphasis removed (**品尝时尚** contains 品尝时尚), whitespace collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_QUOTES).replace("*", "")
    return re.sub(r"\s+", " ", text).strip()


def _strip_edges(text: str, left: bool = False, right: bool = False) -> str:
    if left:
        text = text.lstrip(_EDGE_MARKS)
    if right:
        text = text.rstrip(_EDGE_MARKS)
    return text


def _wordy(ch: str) -> bool:
    """A letter or digit of a script with spaces between words (where word boundaries exist)."""
    return ch.isalnum() and not _SPACELESS_RE.match(ch)


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


# ------------------------------------------------------------------------------- language

# Stopwords that tell Latin-script languages apart. The lists are disjoint: a word common to two
# of them (de, la, que, en, es, un, no, se, son, on, in, an, was...) is left out of both.
_STOPWORDS: tuple[tuple[str, frozenset[str]], ...] = (
    ("en", frozenset("the and of to is that it for with are this be you not have as by or from they "
                     "will can we your which has been were would there their what".split())),
    ("fr", frozenset("le les des est et une du pour dans pas sur avec qui ce au sont nous vous il elle "
                     "mais ou aux cette leur être été très".split())),
    ("de", frozenset("der die das und ist nicht ein eine zu mit den von sich auf für dem auch sind wir "
                     "ich werden wird oder aber im zum zur bei nach".split())),
    ("es", frozenset("el los las y por con para del su al lo como más pero sus una está muy también "
                     "porque esta este hay".split())),
)
_HANGUL_WORD = re.compile("[\uac00-\ud7af\u1100-\u11ff\u3130-\u318f]+")
_CYRILLIC_WORD = re.compile("[\u0400-\u04ff]+")
_ARABIC_WORD = re.compile("[\u0600-\u06ff\u0750-\u077f\ufb50-\ufdff\ufe70-\ufeff]+")
_LATIN_WORD = re.compile("[A-Za-z\u00c0-\u024f]+")
_NOT_PROSE = re.compile(r"```.*?```|`[^`\n]*`|https?://\S+|www\.\S+", re.S)


def detect_language(text: str) -> str:
    """'zh', 'en', 'ja', 'ko', 'ru', 'ar', 'fr', 'de', 'es' or 'unknown'.

    Code blocks, inline code and URLs are dropped. Then each script gets a size: one per Han or
    kana character (a Chinese word is one or two characters) and one per word in the spaced
    scripts, so a Chinese answer with English terms stays Chinese and an English answer naming
    宫保鸡丁 stays English. The largest wins (ties in the fixed order CJK, Latin, Hangul, Cyrillic,
    Arabic). Han+kana is Japanese when kana are at least 15% of it. Latin script is told apart by
    counting each language's stopwords (ties in the order en, fr, de, es); no stopword: unknown.
    Only counts and fixed orders decide, so the answer never depends on hashing or dict order.
    """
    prose = _NOT_PROSE.sub(" ", text)
    han, kana = len(_HAN_RE.findall(prose)), len(_KANA_RE.findall(prose))
    latin = _LATIN_WORD.findall(prose.casefold())
    sizes = (("cjk", han + kana), ("latin", len(latin)), ("ko", len(_HANGUL_WORD.findall(prose))),
             ("ru", len(_CYRILLIC_WORD.findall(prose))), ("ar", len(_ARABIC_WORD.findall(prose))))
    script, size = max(sizes, key=lambda pair: pair[1])  # max keeps the first of equal sizes
    if size == 0:
        return "unknown"
    if script == "cjk":
        return "ja" if kana >= 0.15 * (han + kana) else "zh"
    if script == "latin":
        hits = [(lang, sum(word in words for word in latin)) for lang, words in _STOPWORDS]
        lang, best = max(hits, key=lambda pair: pair[1])
        return lang if best else "unknown"
    return script
