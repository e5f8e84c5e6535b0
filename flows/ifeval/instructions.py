"""IFEval's 25 verifiable instructions as rule checks, with IFEval's own definitions.

The definitions follow IFEval (Zhou et al. 2023, "Instruction-Following Evaluation for Large
Language Models", arXiv:2311.07911), whose reference implementation is google-research/
google-research, folder instruction_following_eval (Apache-2.0). This is an independent
implementation of the same definitions; the strict verdicts are meant to equal the reference's,
so that scores here are comparable with published IFEval numbers.

    >>> check_instruction("punctuation:no_comma", "No commas here.", {}, "Do not use commas.")
    True
    >>> kwargs_problem("length_constraints:number_words", {"num_words": 300})
    'missing relation'

``check_instruction`` gives the strict verdict of one instruction on one response (the loose
one is the same call on the loose variants of the response); an empty or whitespace-only
response follows no instruction. ``kwargs_problem`` says whether an instruction's kwargs (as in
IFEval's input_data.jsonl; a None value counts as missing) are usable: the reference draws
random values for missing ones, here they are an error. What a word, a sentence, a paragraph,
a highlight ... is lives in flows/ifeval/text.py.

Where this knowingly differs from the reference:

- language (language:response_language, and the English check of change_case:english_capital
  and english_lowercase) is identified by ``flows.language.detect_language`` (py3langid,
  deterministic; code blocks and URLs ignored) instead of langdetect (random unless seeded).
  The reference counts a response its detector cannot read (no letters) as followed; here a
  response with no letters at all follows a language instruction (nothing in it is in another
  language), while one whose only letters are in code or URLs does not (it is not prose in the
  language). The case checks need a cased letter anyway, so they fail on both.
- keywords, the keyword to count, the section splitter and postscript markers other than
  "P.S." and "P.P.S" are matched as literal text; the reference uses them as regular
  expressions, which is the same for every value in IFEval's data (plain words).
- keywords:letter_frequency counts the given character whatever it is ("#", "!"), as the
  current reference does; its 2023 release replaced a non-letter by a random letter.
- NLTK is the pinned current release, not the 2023 one: see flows/ifeval/text.py.

IFEval counts differently from the Trace checkers (flows/checks), on purpose, and this module
keeps IFEval's definitions:

- words: IFEval counts runs of \\w, so a run of Chinese characters without spaces is one word
  and "don't" or "3.14" are two; flows/checks counts each Chinese character as a word and
  "don't", "3.14" as one.
- sentences: IFEval uses Punkt English (only . ? ! end a sentence; Chinese text punctuated with
  。！？ is one sentence; line breaks never end one); flows/checks ends sentences at 。！？ too
  and at structural line breaks (headings, list items).
- paragraphs: IFEval splits at the divider *** (number_paragraphs) or at exactly "\\n\\n"
  (nth_paragraph_first_word); flows/checks splits at blank lines.
- punctuation:no_comma forbids only the ASCII comma: the Chinese comma ， and 、 are allowed;
  flows/checks folds ， to , (NFKC) when it matches phrases.
- keywords: existence and frequency match anywhere, case-insensitively, without word
  boundaries ("cat" is found in "category"); forbidden words need \\b on both sides, and
  Chinese characters are word characters, so a forbidden Chinese word is found only where it
  is not joined to other Chinese characters. flows/checks normalises (NFKC, quotes, emphasis)
  and matches Chinese as plain substrings.
- startend:quotation, title and placeholders use the ASCII marks only ("...", <<...>>, [...]):
  “...”, 《...》 and 【...】 do not count.
- detectable_format:json_format accepts any JSON value, a bare string or number too, after
  removing one ```json / ``` fence; flows/checks wants an object or array.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache

from flows.ifeval import text
from flows.language import UNKNOWN, detect_language, supported_languages

# ------------------------------------------------------------------------------- kwargs

Validator = Callable[[object], "str | None"]


def _count(value: object) -> str | None:
    # 3.0 is fine (a file written through pandas has its integers as floats); True is not.
    whole = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not whole:
        return f"must be an integer, not {value!r}"
    return None if value >= 0 else f"must not be negative ({value})"


def _relation(value: object) -> str | None:
    return None if value in text.RELATIONS else f"must be 'less than' or 'at least', not {value!r}"


def _phrase(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return f"must be a non-empty string, not {value!r}"
    return None


def _phrases(value: object) -> str | None:
    if not isinstance(value, list) or not value:
        return f"must be a non-empty list of strings, not {value!r}"
    return next((f"has an empty or non-string item {item!r}" for item in value
                 if not isinstance(item, str) or not item.strip()), None)


def _letter(value: object) -> str | None:
    if not isinstance(value, str) or len(value) != 1 or value.isspace():
        return f"must be one character, not {value!r}"
    return None


# langdetect writes Chinese as zh-cn / zh-tw; the detector here answers zh.
_LANGUAGE_ALIASES = {"zh-cn": "zh", "zh-tw": "zh"}


def _language_code(value: str) -> str:
    return _LANGUAGE_ALIASES.get(value.lower(), value.lower())


@cache
def _known_languages() -> frozenset[str]:
    return frozenset(supported_languages())


def _language(value: object) -> str | None:
    if not isinstance(value, str):
        return f"must be an ISO 639-1 code, not {value!r}"
    if _language_code(value) not in _known_languages():
        return f"{value!r} is not a language the detector knows (ISO 639-1 codes such as 'de', 'hi')"
    return None


def _nth_within(kwargs: Mapping) -> str | None:
    if not 1 <= kwargs["nth_paragraph"] <= kwargs["num_paragraphs"]:
        return f"nth_paragraph must be between 1 and num_paragraphs ({kwargs['num_paragraphs']})"
    return None


# ------------------------------------------------------------------------------- checkers
# Each takes the response (not empty) and the kwargs (validated, without None values).


def _keywords_exist(response: str, kw: Mapping) -> bool:
    return all(re.search(re.escape(word), response, flags=re.I) for word in kw["keywords"])


def _keyword_frequency(response: str, kw: Mapping) -> bool:
    occurrences = len(re.findall(re.escape(kw["keyword"].strip()), response, flags=re.I))
    return text.compare(occurrences, kw["relation"], kw["frequency"])


def _no_forbidden_words(response: str, kw: Mapping) -> bool:
    return not any(re.search(r"\b" + re.escape(word) + r"\b", response, flags=re.I)
                   for word in kw["forbidden_words"])


def _letter_frequency(response: str, kw: Mapping) -> bool:
    # Case-insensitive: both sides lowercased, as the reference does.
    occurrences = response.lower().count(kw["letter"].lower())
    return text.compare(occurrences, kw["let_relation"], kw["let_frequency"])


_LETTER = re.compile(r"[^\W\d_]")


def _response_language(response: str, kw: Mapping) -> bool:
    found = detect_language(response)
    if found == UNKNOWN:  # no letters outside code and URLs (see the module docstring)
        return not _LETTER.search(response)
    return found == _language_code(kw["language"])


def _sentence_count(response: str, kw: Mapping) -> bool:
    return text.compare(text.count_sentences(response), kw["relation"], kw["num_sentences"])


def _word_count(response: str, kw: Mapping) -> bool:
    return text.compare(text.count_words(response), kw["relation"], kw["num_words"])


def _divided_paragraphs(response: str, kw: Mapping) -> bool:
    paragraphs = text.divider_paragraphs(response)
    return paragraphs is not None and len(paragraphs) == kw["num_paragraphs"]


def _nth_paragraph_first_word(response: str, kw: Mapping) -> bool:
    pieces = text.blank_line_pieces(response)
    paragraphs = sum(1 for piece in pieces if piece.strip())
    nth = kw["nth_paragraph"]
    # The reference counts the non-blank pieces but indexes all of them: with a blank piece
    # before it, "paragraph n" is the n-th piece, which may be blank (then not followed).
    if nth > paragraphs or not pieces[nth - 1].strip():
        return False
    return (paragraphs == kw["num_paragraphs"]
            and text.first_word(pieces[nth - 1].strip()) == kw["first_word"].lower())


def _placeholders(response: str, kw: Mapping) -> bool:
    return text.count_placeholders(response) >= kw["num_placeholders"]


def _postscript(response: str, kw: Mapping) -> bool:
    return text.has_postscript(response, kw["postscript_marker"].strip())


def _bullet_count(response: str, kw: Mapping) -> bool:
    return text.count_bullets(response) == kw["num_bullets"]


CONSTRAINED_RESPONSES = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def _constrained_response(response: str, kw: Mapping) -> bool:
    # Containing one of the options is enough (the reference does not ask for it alone).
    return any(option in response for option in CONSTRAINED_RESPONSES)


def _highlights(response: str, kw: Mapping) -> bool:
    return text.count_highlights(response) >= kw["num_highlights"]


def _sections(response: str, kw: Mapping) -> bool:
    return text.count_sections(response, kw["section_spliter"].strip()) >= kw["num_sections"]


def _json_format(response: str, kw: Mapping) -> bool:
    try:
        json.loads(text.strip_json_fence(response))
    except (ValueError, RecursionError):  # RecursionError: nested too deeply to parse
        return False
    return True


def _title(response: str, kw: Mapping) -> bool:
    return text.has_title(response)


def _two_responses(response: str, kw: Mapping) -> bool:
    responses = text.separated_responses(response)
    return responses is not None and len(responses) == 2 and responses[0].strip() != responses[1].strip()


def _repeat_prompt(response: str, kw: Mapping) -> bool:
    # The request to repeat is kwargs' prompt_to_repeat (the prompt without the instruction).
    return response.strip().lower().startswith(kw["prompt_to_repeat"].strip().lower())


def _end_phrase(response: str, kw: Mapping) -> bool:
    # Surrounding whitespace and double quotes (a quoted response) do not count.
    return response.strip().strip('"').lower().endswith(kw["end_phrase"].strip().lower())


def _capital_word_frequency(response: str, kw: Mapping) -> bool:
    return text.compare(text.count_capital_words(response), kw["capital_relation"], kw["capital_frequency"])


def _english_capital(response: str, kw: Mapping) -> bool:
    return response.isupper() and detect_language(response) == "en"


def _english_lowercase(response: str, kw: Mapping) -> bool:
    return response.islower() and detect_language(response) == "en"


def _no_comma(response: str, kw: Mapping) -> bool:
    return "," not in response  # the ASCII comma only


def _quotation(response: str, kw: Mapping) -> bool:
    stripped = response.strip()
    return len(stripped) > 1 and stripped[0] == '"' and stripped[-1] == '"'


# ------------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class _Instruction:
    check: Callable[[str, Mapping], bool]
    params: Mapping[str, Validator] = field(default_factory=dict)  # all required
    consistent: Callable[[Mapping], str | None] | None = None  # a rule across params


_REGISTRY: dict[str, _Instruction] = {
    "keywords:existence": _Instruction(_keywords_exist, {"keywords": _phrases}),
    "keywords:frequency": _Instruction(
        _keyword_frequency, {"keyword": _phrase, "frequency": _count, "relation": _relation}),
    "keywords:forbidden_words": _Instruction(_no_forbidden_words, {"forbidden_words": _phrases}),
    "keywords:letter_frequency": _Instruction(
        _letter_frequency, {"letter": _letter, "let_frequency": _count, "let_relation": _relation}),
    "language:response_language": _Instruction(_response_language, {"language": _language}),
    "length_constraints:number_sentences": _Instruction(
        _sentence_count, {"num_sentences": _count, "relation": _relation}),
    "length_constraints:number_paragraphs": _Instruction(_divided_paragraphs, {"num_paragraphs": _count}),
    "length_constraints:number_words": _Instruction(_word_count, {"num_words": _count, "relation": _relation}),
    "length_constraints:nth_paragraph_first_word": _Instruction(
        _nth_paragraph_first_word,
        {"num_paragraphs": _count, "nth_paragraph": _count, "first_word": _phrase}, _nth_within),
    "detectable_content:number_placeholders": _Instruction(_placeholders, {"num_placeholders": _count}),
    "detectable_content:postscript": _Instruction(_postscript, {"postscript_marker": _phrase}),
    "detectable_format:number_bullet_lists": _Instruction(_bullet_count, {"num_bullets": _count}),
    "detectable_format:constrained_response": _Instruction(_constrained_response),
    "detectable_format:number_highlighted_sections": _Instruction(_highlights, {"num_highlights": _count}),
    "detectable_format:multiple_sections": _Instruction(
        _sections, {"section_spliter": _phrase, "num_sections": _count}),
    "detectable_format:json_format": _Instruction(_json_format),
    "detectable_format:title": _Instruction(_title),
    "combination:two_responses": _Instruction(_two_responses),
    "combination:repeat_prompt": _Instruction(_repeat_prompt, {"prompt_to_repeat": _phrase}),
    "startend:end_checker": _Instruction(_end_phrase, {"end_phrase": _phrase}),
    "change_case:capital_word_frequency": _Instruction(
        _capital_word_frequency, {"capital_frequency": _count, "capital_relation": _relation}),
    "change_case:english_capital": _Instruction(_english_capital),
    "change_case:english_lowercase": _Instruction(_english_lowercase),
    "punctuation:no_comma": _Instruction(_no_comma),
    "startend:quotation": _Instruction(_quotation),
}

INSTRUCTION_IDS: tuple[str, ...] = tuple(_REGISTRY)


def _given(kwargs: Mapping | None) -> dict:
    """The kwargs without None values (IFEval's data on the Hugging Face hub has every key, unused
    ones null), whole floats as integers."""
    return {key: int(value) if isinstance(value, float) and value.is_integer() else value
            for key, value in (kwargs or {}).items() if value is not None}


def kwargs_problem(instruction_id: str, kwargs: Mapping | None) -> str | None:
    """None if the instruction is known and its kwargs are usable, else a short reason."""
    instruction = _REGISTRY.get(instruction_id)
    if instruction is None:
        return f"unknown instruction {instruction_id!r}"
    if kwargs is not None and not isinstance(kwargs, Mapping):
        return f"kwargs must be an object, not {type(kwargs).__name__}"
    given = _given(kwargs)
    for name, valid in instruction.params.items():
        if name not in given:
            return f"missing {name}"
        reason = valid(given[name])
        if reason:
            return f"{name} {reason}"
    unexpected = sorted(set(given) - set(instruction.params))
    if unexpected:
        return f"unexpected {', '.join(unexpected)}"
    return instruction.consistent(given) if instruction.consistent else None


def check_instruction(instruction_id: str, response: str, kwargs: Mapping | None, prompt: str) -> bool:
    """Whether the response follows the instruction (IFEval's strict verdict).

    ``prompt`` is the full prompt; none of the 25 instructions needs it (repeat_prompt repeats
    kwargs' prompt_to_repeat), it is there for the interface. Raises ValueError when
    ``kwargs_problem`` finds a problem.
    """
    problem = kwargs_problem(instruction_id, kwargs)
    if problem:
        raise ValueError(f"{instruction_id}: {problem}")
    if not response.strip():
        return False
    return bool(_REGISTRY[instruction_id].check(response, _given(kwargs)))
