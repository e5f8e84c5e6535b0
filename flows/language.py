"""Which language a text is in: one answer per text, the same in every process.

    >>> detect_language("请用中文回答，不少于两百字。")
    'zh'

Both the Trace `language` check (flows/checks) and IFEval's `language:response_language` use
this. The identifier is py3langid (a maintained fork of langid.py: a naive Bayes model over byte
n-grams, 97 languages, the model inside the package; nothing is downloaded). It has no random
state, so unlike langdetect (IFEval's choice, which needs a seed) it cannot differ between runs.
Code blocks, inline code and URLs are dropped first: they are not the answer's language.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from functools import cache

UNKNOWN = "unknown"
# Varieties the identifier tells apart from a language that a user asking for that language
# accepts: short Mandarin ("你好") is often taken for Cantonese or Wu, for instance.
VARIETY_OF = {"yue": "zh", "wuu": "zh", "ary": "ar", "arz": "ar", "nn": "no", "uzs": "uz", "sdh": "ku"}
_NOT_PROSE = re.compile(r"```.*?```|`[^`\n]*`|https?://\S+|www\.\S+", re.S)
_LETTER = re.compile(r"[^\W\d_]")


@cache
def _identifier():
    from py3langid.langid import MODEL_FILE, LanguageIdentifier  # loads a 4 MB model: only when asked
    return LanguageIdentifier.from_model_file(MODEL_FILE)


def detect_language(text: str) -> str:
    """The ISO 639-1 code of the text's language ('zh', 'en', 'kn', ...), or 'unknown' when the
    text has no letters outside code and URLs."""
    prose = _NOT_PROSE.sub(" ", text)
    if not _LETTER.search(prose):
        return UNKNOWN
    return _identifier().classify(prose)[0]


_WORD = re.compile(r"[^\W\d_]+")
_CJK_SCRIPTS = {"CJK", "HIRAGANA", "KATAKANA"}  # no spaces: each character counts as a word
MIN_WORDS_TO_COMPARE = 12  # below this, language identifiers guess; scripts alone decide


def scripts(text: str) -> Counter:
    """Words per writing system (LATIN, CJK, CYRILLIC, ARABIC, HANGUL, DEVANAGARI, ...) in the
    text's prose: a CJK character counts as a word, so a Chinese instruction with a few English
    terms is CJK and an English one naming a dish in Chinese is LATIN."""
    counts: Counter = Counter()
    for word in _WORD.findall(_NOT_PROSE.sub(" ", text)):
        names = [unicodedata.name(ch, "UNKNOWN").split()[0] for ch in word]
        cjk = sum(name in _CJK_SCRIPTS for name in names)
        if cjk:
            counts["CJK"] += cjk
        if cjk < len(names):
            counts[Counter(n for n in names if n not in _CJK_SCRIPTS).most_common(1)[0][0]] += 1
    return counts


def language_drift(original: str, rewritten: str) -> str | None:
    """Why `rewritten` is not in the language of `original` (e.g. a Chinese seed expanded into an
    English instruction), or None. The dominant scripts must match; within one script, texts long
    enough to identify must get the same language."""
    a, b = scripts(original), scripts(rewritten)
    if not a or not b:
        return None
    script_a, script_b = a.most_common(1)[0][0], b.most_common(1)[0][0]
    if script_a != script_b:
        return f"original in {script_a} script, rewritten in {script_b}"
    if min(sum(a.values()), sum(b.values())) >= MIN_WORDS_TO_COMPARE:
        lang_a, lang_b = (VARIETY_OF.get(code, code) for code in (detect_language(original), detect_language(rewritten)))
        if lang_a != lang_b:
            return f"original in {lang_a}, rewritten in {lang_b}"
    return None


def supported_languages() -> tuple[str, ...]:
    """Every code detect_language can answer (besides 'unknown')."""
    return tuple(sorted(_identifier().nb_classes))
