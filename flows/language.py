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
from functools import cache

UNKNOWN = "unknown"
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


def supported_languages() -> tuple[str, ...]:
    """Every code detect_language can answer (besides 'unknown')."""
    return tuple(sorted(_identifier().nb_classes))
