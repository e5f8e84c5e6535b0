"""Specs: their JSON schema, which kinds may check which dimension, validation, and ``check``."""
from __future__ import annotations

import jsonschema

from flows.checks.formats import FORMATS, check_format
from flows.checks.language import LANGUAGE_NAMES, LANGUAGES, check_language
from flows.checks.phrases import check_ends_with, check_exclude, check_include, check_starts_with, norm, strip_edges
from flows.checks.structure import LIST_STYLES, check_headings, check_list
from flows.checks.units import UNITS, check_count
from flows.checks.verdict import Verdict

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


_PHRASES = {"type": "array", "minItems": 1,
            "items": {"type": "string", "minLength": 1,
                      "description": "Exact words or a phrase, copied from the constraint without surrounding quotes."},
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
                      "description": "ISO 639-1 code: " + ", ".join(f"{code} {name}"
                                                                     for code, name in LANGUAGE_NAMES.items()) + "."}},
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
        if not norm(phrase):
            return f"{spec['kind']}: phrase {phrase!r} is empty after normalising"
    if "phrase" in spec and not strip_edges(norm(spec["phrase"]), left=True, right=True):
        return f"{spec['kind']}: phrase {spec['phrase']!r} is empty after stripping marks and whitespace"
    return None


# ------------------------------------------------------------------------------- dispatch

_CHECKERS = {
    "count": check_count,
    "format": check_format,
    "list": check_list,
    "headings": check_headings,
    "include": check_include,
    "exclude": check_exclude,
    "language": check_language,
    "starts_with": check_starts_with,
    "ends_with": check_ends_with,
}

EMPTY_RESPONSE = Verdict(False, "the response is empty")


def check(spec: dict, response: str) -> Verdict:
    """Apply a valid spec to a response. Raises ValueError for an unknown kind.

    An empty or whitespace-only response fails every check: no answer follows no constraint,
    even one it cannot break ("at most 300 characters", "must not contain X").
    """
    kind = spec.get("kind")
    checker = _CHECKERS.get(kind) if isinstance(kind, str) else None
    if checker is None:
        raise ValueError(f"unknown check kind {kind!r}")
    if not response.strip():
        return EMPTY_RESPONSE
    return checker(spec, response)
