"""Rule checkers for the constraint dimensions a rule can decide; they back the LLM judge.

A *spec* is one JSON object: a ``kind`` and that kind's parameters (``CHECK_SCHEMA`` is the
JSON schema; an LLM gets it as the structured-output schema when it extracts specs from a
constraint). ``validate_spec`` says whether a spec is usable, ``check`` applies it to a response
and returns a ``Verdict`` whose reason says what was measured. Everything is deterministic: the
same spec and response give the same verdict in every process. An empty (or whitespace-only)
response fails every check.

    >>> spec = {"kind": "count", "unit": "chars", "max": 300}   # 字数不超过300字
    >>> validate_spec(spec, "numerical") is None
    True
    >>> check(spec, "你好，世界！")
    Verdict(passed=True, reason='4 characters, needs at most 300')
    >>> check({"kind": "include", "phrases": ["（品尝时尚）"]}, "口号：(品尝时尚)")
    Verdict(passed=True, reason='contains "（品尝时尚）"')
    >>> check({"kind": "exclude", "phrases": ["very"]}, "  ")
    Verdict(passed=False, reason='the response is empty')

Kinds (parameters) and what they measure:

- ``count`` (unit, min, max): ``unit`` is chars | words | sentences | paragraphs | list_items;
  at least one of ``min``/``max``; exactly N is min == max. See ``count_units`` and, for what
  a sentence is, ``split_sentences``.
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
- ``language`` (language, an ISO 639-1 code of ``LANGUAGES``): ``detect_language(response)``
  (flows.language) equals it, a regional variety counting as its language (yue as zh).
- ``starts_with`` / ``ends_with`` (phrase): after normalisation and stripping whitespace,
  Markdown marks (# > * _ ~ `) and quotes at the edge; ``ends_with`` also ignores one
  trailing punctuation mark on either side (祝您愉快！ matches a response ending 祝您愉快。).

``DIMENSION_KINDS`` maps each rule-checkable taxonomy dimension to the kinds that may check it.

Modules: ``specs`` (schema, validation, dispatch), ``verdict``, ``units`` (count),
``sentences``, ``structure`` (lists, headings), ``phrases`` (include, exclude, starts_with,
ends_with), ``formats``, ``language``, and ``text`` (helpers they share).
"""
from __future__ import annotations

from flows.checks.formats import FORMATS
from flows.checks.language import LANGUAGE_NAMES, LANGUAGES, detect_language
from flows.checks.sentences import split_sentences
from flows.checks.specs import CHECK_SCHEMA, DIMENSION_KINDS, KIND_SCHEMAS, check, validate_spec
from flows.checks.structure import LIST_STYLES, headings, list_items
from flows.checks.units import UNITS, count_units, split_paragraphs
from flows.checks.verdict import Verdict

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
