"""ComplexBench's verification rules: every rule form of the official evaluator, decided
deterministically on the parts of a response a question is about.

ComplexBench decides a question with a rule (the `rule` field, e.g. ``model_length:[300,10000]``)
in two steps: an LLM extractor copies out of the response the part(s) the question is about
("the second essay", "each scene's first sentence"), or answers "all" or "None"; the rule is then
checked on those segments. ``extracted_segments`` reads the extractor's reply the official way;
``check`` applies a rule to segments (``[response]`` to check the whole response).

    rule = parse_rule("model_length:[300,10000]", where="data_final.json: row 3: field ...")
    check(rule, extracted_segments(extractor_reply, response))

The forms are every one the official code (thu-coai/ComplexBench, evaluation/con_rule.py and
rule_based_evaluation.py) decides, as it defines them; they were listed from that code, the data
file not being at hand, so a form the data uses beyond them shows as an InputError on loading.
"Nothing" means the extractor found nothing (no segment, or one empty one):

- model_keyword:[k1,k2]: the first segment contains every keyword. Nothing: fails.
- model_keyword_each:[k1,k2]: every segment contains every keyword. Nothing: fails.
- model_keyword_num:[lo,hi,k1,k2,...]: between lo and hi of the keywords occur in the first
  segment (each keyword counts once, however often it occurs). Nothing: fails.
- model_keyword_num_each:[lo,hi,k1,...]: the same for every segment. Nothing: fails.
- model_keyword_num_each:[lo,hi,k1,...] + newline + model_forbidden_word_each:[f1,...]: the same,
  and no segment contains a forbidden word. Nothing: fails.
- model_forbidden_word:[f1,f2]: the first segment contains none of them. Nothing: passes.
- model_forbidden_word_each:[f1,f2]: no segment contains any of them. Nothing: passes.
- model_number_each:[lo,hi]: there are between lo and hi segments. Nothing: fails.
- model_length:[lo,hi]: the first segment has lo to hi characters. Nothing: fails.
- model_length_each:[lo,hi]: every segment has lo to hi characters. Nothing: fails.
- model_length_word:[lo,hi] / model_length_word_each:[lo,hi]: the same in words.
- model_startswith:X / model_endswith:X: the first segment starts / ends with X. Nothing: fails.
- model_startswith:X + newline + model_endswith:Y: both, on the first segment.
- model_startswith_each:X / model_endswith_each:X: every segment starts / ends with X; for
  endswith_each the last of several segments is not checked. Nothing: fails.
- model_starts_with_list_each:[a,b,c]: exactly as many segments as items, segment i starting
  with item i. Nothing: fails.
- model_not_startswith:X / model_not_endswith:X: the first segment does not start / end with X;
  model_not_endswith_each:X: no segment ends with X. Nothing: passes.
- model_constraint_punc:[p1,p2] / model_constraint_punc_each:[p1,p2]: the first / every segment
  uses no punctuation mark but those listed. Nothing: fails.
- Plain forms, on the first segment (or on an empty text when there is none): keyword:[...],
  forbidden_word:[...], constraint_punc:[...], startswith:X, endswith:X, not endswith:X,
  startswith:X + newline + endswith:Y, length:[lo,hi], length_word:[lo,hi], match:X (the segment
  is X, or X followed by 。 or .), Json:[k1,k2] (the first {...} in the segment is a JSON object
  with exactly these keys; any object when the list is empty). A text that is empty or contains
  "None" fails all of them but forbidden_word and not endswith, which it passes.

The official counting conventions, kept here on purpose so that verdicts equal the official ones:

- A character is a Python code point (len), spaces and line breaks included; a word is a run of
  non-whitespace (str.split), so Chinese text without spaces is one word.
- "Starts with X" also holds on X followed by 。 or ？ (so it is plain startswith); "ends with X"
  holds on text ending in X, X。 or X？.
- The length forms, endswith_each, constraint_punc_each and the plain forms hold when they hold
  on the segment or on it trimmed (leading line breaks, then one pair of surrounding quotes "",
  “”, `` removed); model_constraint_punc looks at the trimmed segment only.
- Punctuation is folded before matching: ASCII ! # $ % & ( ) * , . : ; ? \\ ^ become their
  full-width forms and “ ” become ", on the rule's keywords and targets and, in most forms, the
  segment. The official code leaves the segment unfolded in model_keyword, model_keyword_num,
  model_keyword_num_each, model_forbidden_word and model_constraint_punc, and the target
  unfolded in match; so there an ASCII mark in the response does not equal its full-width form,
  and model_constraint_punc does not see the ASCII marks that fold (. , ! ? : ; ( ) ...) at all.
  Kept.
- constraint_punc looks only at the 32 ASCII punctuation marks (folded): 、 《 》 … are allowed.
- List items are split at "," and stripped of spaces, except the keywords of
  model_keyword_num_each (and its forbidden words), which keep their spaces.
- An empty keyword or forbidden word ("[]") is found in every text.

Where this knowingly differs from the official code:

- The form is read from the rule's prefix. The official code picks it by looking for form names
  anywhere in the rule text, so a rule whose own words contain "model", "each", "keyword",
  "match" ... can be read as another form there (and a plain rule containing "model" or "each"
  is not decided at all, which its aggregation counts as met).
- A rule this module cannot read (an unknown form, a malformed list, two forms the official code
  cannot combine) is an InputError when the data is loaded, where the official code raises on
  the first response or leaves the question undecided (met).
- A segment of nothing but line breaks is trimmed to empty, where the official code raises.
"""
from __future__ import annotations

import ast
import json
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

from flows.errors import InputError

# ASCII punctuation to the official "Chinese" forms; the other ASCII marks stay as they are.
_FOLD = str.maketrans({"!": "！", "#": "＃", "$": "＄", "%": "％", "&": "＆", "(": "（", ")": "）", "*": "＊",
                       ",": "，", ".": "。", ":": "：", ";": "；", "?": "？", "\\": "＼", "^": "＾",
                       "“": '"', "”": '"'})
_MARKS = [c.translate(_FOLD) for c in string.punctuation]  # what constraint_punc looks for


def fold(text: str) -> str:
    return text.translate(_FOLD)


def trim(text: str) -> str:
    """Leading line breaks, then one pair of surrounding quotes, removed."""
    text = (text or "").lstrip("\n")
    if text and text[0] in '"“`' and text[-1] in '"”`':
        return text[1:-1]
    return text


def _starts(text: str, target: str) -> bool:
    return text.startswith(fold(target))  # X。 and X？ start with X anyway


def _ends(text: str, target: str) -> bool:
    target = fold(target)
    return text.endswith((target, target + "。", target + "？"))


def _all_in(text: str, words: tuple[str, ...]) -> bool:
    return all(fold(w) in text for w in words)


def _none_in(text: str, words: tuple[str, ...]) -> bool:
    return not any(fold(w) in text for w in words)


def _count_in(text: str, words: tuple[str, ...]) -> int:
    return sum(fold(w) in text for w in words)


def _only_marks(text: str, allowed: tuple[str, ...]) -> bool:
    allowed_folded = [fold(p) for p in allowed]
    return not any(mark in text and mark not in allowed_folded for mark in _MARKS)


def _in_range(n: int, bounds: tuple[float, float]) -> bool:
    return bounds[0] <= n <= bounds[1]


def _words(text: str) -> int:
    return len(text.split())


def _first_object(text: str) -> str:
    """The first balanced {...} of the text (braces counted, strings not parsed), or ""."""
    depth, start = 0, 0
    for i, char in enumerate(text):
        if char == "{":
            if depth == 0:
                start = i
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start:i + 1]
    return ""


def _json_keys(text: str, keys: tuple[str, ...]) -> bool:
    keys = tuple(k for k in keys if k != "")
    try:
        obj = json.loads(_first_object(text))
    except (ValueError, RecursionError):
        return False
    if not isinstance(obj, dict) or any(k not in obj for k in keys):
        return False
    return not keys or len(obj) == len(keys)


# --------------------------------------------------------------------------- the forms

Segments = list[str]


def _nothing(segments: Segments) -> bool:
    return not segments or (len(segments) == 1 and segments[0] == "")


def _each(segments: Segments, test: Callable[[str], bool]) -> bool:
    return all(test(s) for s in segments if s != "")


def _segment_form(on_nothing: bool, test: Callable[[Segments, tuple], bool]):
    return lambda args, segments: on_nothing if _nothing(segments) else test(args, segments)


def _plain_form(on_empty: bool, test: Callable[[str, tuple], bool]):
    def decide(args: tuple, segments: Segments) -> bool:
        def one(text: str) -> bool:
            return on_empty if text == "" or "None" in text else test(text, args)
        if not segments:
            return one("")
        return one(trim(segments[0])) or one(segments[0])
    return decide


def _ends_each(args: tuple, segments: Segments) -> bool:
    checked = segments if len(segments) == 1 else segments[:-1]
    return _each(checked, lambda s: _ends(trim(fold(s)), args[0]) or _ends(fold(s), args[0]))


def _list_each(args: tuple, segments: Segments) -> bool:
    items = args
    return len(segments) == len(items) and all(_starts(fold(s), item) for s, item in zip(segments, items) if s != "")


def _match(text: str, args: tuple) -> bool:
    folded = fold(text)
    return folded in (args[0], args[0] + "。", args[0] + ".")


# form -> (argument kind, decide(args, segments))
_FORMS: dict[str, tuple[str, Callable[[tuple, Segments], bool]]] = {
    "model_keyword": ("words", _segment_form(False, lambda a, rs: _all_in(rs[0], a))),
    "model_keyword_each": ("words", _segment_form(False, lambda a, rs: _each(rs, lambda s: _all_in(fold(s), a)))),
    "model_keyword_num": ("count", _segment_form(False, lambda a, rs: _in_range(_count_in(rs[0], a[2]), a[:2]))),
    "model_keyword_num_each": ("count_raw", _segment_form(
        False, lambda a, rs: _each(rs, lambda s: _in_range(_count_in(s, a[2]), a[:2])))),
    "model_keyword_num_each+model_forbidden_word_each": ("count_forbidden", _segment_form(
        False, lambda a, rs: _each(rs, lambda s: _in_range(_count_in(s, a[2]), a[:2]) and _count_in(s, a[3]) == 0))),
    "model_forbidden_word": ("words", _segment_form(True, lambda a, rs: _none_in(rs[0], a))),
    "model_forbidden_word_each": ("words", _segment_form(
        True, lambda a, rs: _each(rs, lambda s: _none_in(fold(s), a)))),
    "model_number_each": ("bounds", _segment_form(False, lambda a, rs: _in_range(len(rs), a))),
    "model_length": ("bounds", _segment_form(
        False, lambda a, rs: _in_range(len(trim(rs[0])), a) or _in_range(len(rs[0]), a))),
    "model_length_each": ("bounds", _segment_form(
        False, lambda a, rs: _each(rs, lambda s: _in_range(len(s), a) or _in_range(len(trim(s)), a)))),
    "model_length_word": ("bounds", _segment_form(
        False, lambda a, rs: _in_range(_words(rs[0]), a) or _in_range(_words(trim(rs[0])), a))),
    "model_length_word_each": ("bounds", _segment_form(
        False, lambda a, rs: _each(rs, lambda s: _in_range(_words(s), a) or _in_range(_words(trim(s)), a)))),
    "model_startswith": ("text", _segment_form(False, lambda a, rs: _starts(fold(rs[0]), a[0]))),
    "model_startswith_each": ("text", _segment_form(False, lambda a, rs: _each(rs, lambda s: _starts(fold(s), a[0])))),
    "model_starts_with_list_each": ("words", _segment_form(False, _list_each)),
    "model_endswith": ("text", _segment_form(False, lambda a, rs: _ends(fold(rs[0]), a[0]))),
    "model_endswith_each": ("text", _segment_form(False, _ends_each)),
    "model_startswith+model_endswith": ("two_texts", _segment_form(
        False, lambda a, rs: _starts(fold(rs[0]), a[0]) and _ends(fold(rs[0]), a[1]))),
    "model_not_startswith": ("text", _segment_form(True, lambda a, rs: not _starts(fold(rs[0]), a[0]))),
    "model_not_endswith": ("text", _segment_form(True, lambda a, rs: not _ends(fold(rs[0]), a[0]))),
    "model_not_endswith_each": ("text", _segment_form(
        True, lambda a, rs: _each(rs, lambda s: not _ends(fold(s), a[0])))),
    "model_constraint_punc": ("words", _segment_form(False, lambda a, rs: _only_marks(trim(rs[0]), a))),
    "model_constraint_punc_each": ("words", _segment_form(
        False, lambda a, rs: _each(rs, lambda s: _only_marks(trim(fold(s)), a) or _only_marks(fold(s), a)))),
    "keyword": ("words", _plain_form(False, lambda s, a: _all_in(fold(s), a))),
    "forbidden_word": ("words", _plain_form(True, lambda s, a: _none_in(fold(s), a))),
    "constraint_punc": ("words", _plain_form(False, lambda s, a: _only_marks(fold(s), a))),
    "startswith": ("text", _plain_form(False, lambda s, a: _starts(fold(s), a[0]))),
    "endswith": ("text", _plain_form(False, lambda s, a: _ends(fold(s), a[0]))),
    "not endswith": ("text", _plain_form(True, lambda s, a: not _ends(fold(s), a[0]))),
    "startswith+endswith": ("two_texts", _plain_form(
        False, lambda s, a: _starts(fold(s), a[0]) and _ends(fold(s), a[1]))),
    "length": ("bounds", _plain_form(False, lambda s, a: _in_range(len(s), a))),
    "length_word": ("bounds", _plain_form(False, lambda s, a: _in_range(_words(s), a))),
    "match": ("line", _plain_form(False, _match)),
    "Json": ("keys", _plain_form(False, lambda s, a: _json_keys(s, a))),
}
FORMS = tuple(_FORMS)

# The two-line forms: (first prefix, second prefix) -> form
_PAIRS = {("model_keyword_num_each", "model_forbidden_word_each"): "model_keyword_num_each+model_forbidden_word_each",
          ("model_startswith", "model_endswith"): "model_startswith+model_endswith",
          ("startswith", "endswith"): "startswith+endswith"}
_NAME = re.compile(r"(model_[a-z_]+|not endswith|[A-Za-z_]+):")
_LIST = re.compile(r"\[[^\n]*\]\n?")


@dataclass(frozen=True)
class Rule:
    text: str  # as in the data
    form: str  # one of FORMS
    args: tuple


def check(rule: Rule, segments: Segments) -> bool:
    """Whether the segments (the extractor's, or [response]) satisfy the rule."""
    return _FORMS[rule.form][1](rule.args, list(segments))


def _one_line(arg: str) -> str:
    return arg.removesuffix("\n")


def _items(arg: str, where: str, strip: bool = True) -> list[str]:
    if not _LIST.fullmatch(arg):
        raise InputError(f"{where}: expected a [..] list on one line, not {arg[:60]!r}")
    items = _one_line(arg).strip("[]").split(",")
    return [i.strip() for i in items] if strip else items


def _literal(arg: str, where: str) -> object:
    try:
        return ast.literal_eval(_one_line(arg).strip())
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise InputError(f"{where}: {arg[:60]!r} is not a list") from None


def _bounds(arg: str, where: str) -> tuple[float, float]:
    value = _literal(arg, where)
    numbers = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not numbers:
        raise InputError(f"{where}: expected [low,high], not {arg[:60]!r}")
    return value[0], value[1]


def _counted(arg: str, where: str, strip: bool) -> tuple[int, int, tuple[str, ...]]:
    items = _items(arg, where, strip)
    try:
        low, high = int(items[0]), int(items[1])
    except (IndexError, ValueError):
        raise InputError(f"{where}: expected [low,high,keyword,...], not {arg[:60]!r}") from None
    return low, high, tuple(items[2:])


def _args(kind: str, arg: str, second: str | None, where: str) -> tuple:
    if kind == "words":
        return tuple(_items(arg, where))
    if kind in ("count", "count_raw"):
        return _counted(arg, where, strip=kind == "count")
    if kind == "count_forbidden":
        return (*_counted(arg, where, strip=False), tuple(_items(second, where, strip=False)))
    if kind == "bounds":
        return _bounds(arg, where)
    if kind == "text":
        return (_one_line(arg),)
    if kind == "two_texts":
        return arg, _one_line(second)
    if kind == "line":
        if "\n" in _one_line(arg):
            raise InputError(f"{where}: the text to match must be one line")
        return (_one_line(arg),)
    keys = _literal(arg, where)  # "keys"
    if not (isinstance(keys, (list, tuple)) and all(isinstance(k, str) for k in keys)):
        raise InputError(f"{where}: expected a list of key names, not {arg[:60]!r}")
    return tuple(keys)


def parse_rule(text: str, where: str) -> Rule:
    """A rule of the data read into its form and arguments; anything else is an InputError
    naming `where` (file, row, field)."""
    body = text.lstrip()
    name = _NAME.match(body)
    if not name or name.group(1) not in {*FORMS, *(a for a, _ in _PAIRS)}:
        raise InputError(f"{where}: unknown rule form {body.split(':')[0][:40]!r}")
    arg, second = body[name.end():], None
    for (first, then), form in _PAIRS.items():
        marker = f"\n{then}:"
        if name.group(1) == first and marker in arg:
            arg, second = arg.split(marker, 1)
            break
    else:
        form = name.group(1)
        if form not in _FORMS:
            raise InputError(f"{where}: unknown rule form {form!r}")
    if second is None and (clash := re.search(r"\n(model_[a-z_]+|not endswith|[A-Za-z_]+):", arg)) \
            and clash.group(1) in {*FORMS, *(b for _, b in _PAIRS)}:
        raise InputError(f"{where}: rule forms {form!r} and {clash.group(1)!r} cannot be combined")
    return Rule(text, form, _args(_FORMS[form][0], arg, second, f"{where}: {form}"))


# --------------------------------------------------------------------------- the extractor's reply

_HEADER = "【模型回复中评分问题的评测对象】\n"


def extracted_segments(reply: str | None, response: str | None) -> Segments:
    """The segments an extractor reply names, read as the official code reads them: the text
    after the last 评分对象： (or 评测对象：, or the last ：), with a trailing note removed;
    "all..." means the whole response, anything containing "None" means nothing, else the
    parts between "||", stripped."""
    if reply is None or response is None:
        return []
    if _HEADER in reply:
        reply = reply.rsplit(_HEADER, 1)[1]
    for note in ("\n\n请注意", "\n\n**注意", "\n\n注意"):
        reply = reply.rsplit(note, 1)[0]
    for label in ("评分对象：", "评测对象：", "："):
        if label in reply:
            reply = reply.rsplit(label, 1)[1]
            break
    if reply.startswith("all"):
        return [response]
    if "None" in reply:
        return []
    return [part.strip() for part in reply.split("||")]
