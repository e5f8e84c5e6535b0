"""Is an extracted spec grounded in its constraint's text? ``ground`` keeps what the text supports.

An LLM that extracts checks (prompts/extract_checks.j2) can fill the schema with checks its
constraint never asked for: a small model answers "Use Markdown format." with a Markdown *table*,
"Return exactly three clauses." with a count of sentences, "不超过50个字" with exactly 50. A wrong
check rejects good answers, so a check is kept only where the constraint's own words carry it:

- count: the unit is named (字 / words / 句 / paragraphs ...) and every bound is a number the
  text writes (50, fifty, 五十); a bound the text's wording rules out is dropped ("at most 250"
  keeps only max), and an approximate limit ("about 200 words", "200字左右") keeps no check;
- format, list, headings, language: the text names the format, list, heading or language;
- include, exclude, starts_with, ends_with: every phrase is in the text.

Nothing here guesses a check; it only removes what the text does not support.
"""
from __future__ import annotations

import re

from flows.checks.language import LANGUAGE_NAMES
from flows.checks.phrases import norm
from flows.checks.text import words_pattern

# Words that name each unit or format, matched in the normalised (case-folded) constraint text.
UNIT_WORDS = {
    "chars": ("字", "character", "char", "letter"),
    "words": ("字", "词", "word"),
    "sentences": ("句", "sentence"),
    "paragraphs": ("段", "paragraph"),
    "list_items": ("条", "项", "点", "item", "point", "bullet", "entries", "entry"),
}
FORMAT_WORDS = {
    "json": ("json",),
    "markdown_table": ("表格", "table"),
    "html": ("html",),
    "latex": ("latex",),
}
LIST_WORDS = {
    "numbered": ("编号", "序号", "number"),
    "bulleted": ("项目符号", "bullet", "圆点"),
    "any": ("列表", "清单", "list", "条", "bullet", "编号", "number"),
}
HEADING_WORDS = ("标题", "heading", "title", "section", "#")
LANGUAGE_WORDS_ZH = {"zh": ("中文", "汉语", "简体", "繁体"), "en": ("英文", "英语"), "ja": ("日语", "日文"),
                     "ko": ("韩语", "韩文"), "fr": ("法语", "法文"), "de": ("德语", "德文"),
                     "es": ("西班牙语",), "ru": ("俄语", "俄文"), "ar": ("阿拉伯语",), "pt": ("葡萄牙语",),
                     "it": ("意大利语",)}

# A bound the wording rules out: "at most 50" has no minimum, "at least 3" no maximum. Some cues
# contain others ("no more than" / "more than", "不少于" / "少于"): the longest is read first.
UPPER_ONLY = ("at most", "no more than", "not more than", "up to", "not exceed", "under", "fewer than",
              "less than", "maximum", "within", "不超过", "不多于", "最多", "以内", "之内", "少于", "不得超过")
LOWER_ONLY = ("at least", "no fewer than", "no less than", "not less than", "more than", "minimum",
              "不少于", "至少", "以上", "多于", "不低于")
_EN_NUMBERS = {w: n for n, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())}
_EN_NUMBERS |= {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80,
                "ninety": 90, "hundred": 100, "a hundred": 100, "one hundred": 100, "single": 1}
_ZH_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9}
_ZH_UNITS = {"十": 10, "百": 100, "千": 1000, "万": 10000}
_ZH_NUMERAL_RE = re.compile(f"[{''.join(_ZH_DIGITS)}{''.join(_ZH_UNITS)}]+")
# An approximate limit ("about 200 words", "200字左右", "约200字"); "about" alone is a topic, 约束 a constraint.
APPROXIMATE_RE = re.compile(r"(?<![a-z])(?:about|around|approximately|roughly|nearly|close to)\s*(?:\d|(?:"
                            + "|".join(_EN_NUMBERS) + r")(?![a-z]))|左右|大约|约\s*[\d一二两三四五六七八九十百千]")


def chinese_numeral(text: str) -> int | None:
    """五十 → 50, 十二 → 12, 两千零五 → 2005; None for what is not one plain number: 一二 (a list
    of digits) or 三百五 (short for 350, read otherwise as 305)."""
    total, digit, last_unit, zero = 0, None, None, False
    for ch in text:
        if ch in _ZH_DIGITS:
            if digit is not None:
                return None
            digit, zero = _ZH_DIGITS[ch], zero or ch in "零〇"
            if zero and digit == 0:
                digit = None
            continue
        unit = _ZH_UNITS[ch]
        if unit == 10000:
            total, digit, last_unit = (total + (digit or 0)) * unit, None, unit
            continue
        total, digit, last_unit, zero = total + (1 if digit is None else digit) * unit, None, unit, False
    if digit is not None and last_unit is not None and last_unit >= 100 and not zero:
        return None
    return total + (digit or 0)


def numbers_in(text: str) -> set[int]:
    """Every whole number the text writes in digits, English words or Chinese numerals."""
    text = norm(text)
    found = {int(m.replace(",", "")) for m in re.findall(r"\d[\d,]*", text) if m.replace(",", "").isdigit()}
    found |= {n for word, n in _EN_NUMBERS.items() if words_pattern((word,), whole=True).search(text)}
    for m in _ZH_NUMERAL_RE.findall(text):
        n = chinese_numeral(m)
        if n is not None:
            found.add(n)
    return found


def _names(text: str, words: tuple[str, ...]) -> bool:
    return bool(words) and bool(words_pattern(words).search(text))


def _cues(text: str) -> tuple[bool, bool]:
    """(an upper-bound cue, a lower-bound cue) in the text, the longest cues read first."""
    found = {"upper": False, "lower": False}
    for cue, side in sorted([(c, "upper") for c in UPPER_ONLY] + [(c, "lower") for c in LOWER_ONLY],
                            key=lambda pair: -len(pair[0])):
        if _names(text, (cue,)):
            found[side] = True
            text = words_pattern((cue,)).sub(" ", text)
    return found["upper"], found["lower"]


def _named_language(text: str, code: str) -> bool:
    name = LANGUAGE_NAMES.get(code, code).casefold()
    return bool(words_pattern((name,), whole=True).search(text)) or _names(text, LANGUAGE_WORDS_ZH.get(code, ()))


def _bounds(spec: dict, text: str, low: str, high: str) -> dict | None:
    """The spec with only the bounds the text supports, or None when none is left."""
    if APPROXIMATE_RE.search(text):
        return None
    numbers = numbers_in(text)
    upper, lower = _cues(text)
    kept = dict(spec)
    for key in (low, high):
        if key in kept and kept[key] not in numbers:
            del kept[key]
    if upper and not lower:
        kept.pop(low, None)
    if lower and not upper:
        kept.pop(high, None)
    return kept


def ground(spec: dict, constraint_text: str) -> dict | None:
    """The part of a valid spec that the constraint's text supports, or None when nothing is."""
    text = norm(constraint_text)
    kind = spec["kind"]
    if kind == "count":
        if not _names(text, UNIT_WORDS[spec["unit"]]):
            return None
        kept = _bounds(spec, text, "min", "max")
        return kept if kept and ("min" in kept or "max" in kept) else None
    if kind == "format":
        return spec if _names(text, FORMAT_WORDS[spec["format"]]) else None
    if kind == "list":
        if not _names(text, LIST_WORDS[spec["style"]]):
            return None
        return _bounds(spec, text, "min_items", "max_items")
    if kind == "headings":
        if not _names(text, HEADING_WORDS):
            return None
        return _bounds(spec, text, "min_count", "max_count")
    if kind == "language":
        return spec if _named_language(text, spec["language"]) else None
    if kind in ("include", "exclude"):
        return spec if all(norm(p) in text for p in spec["phrases"]) else None
    if kind in ("starts_with", "ends_with"):
        return spec if norm(spec["phrase"]) in text else None
    return None
