"""The response's language (``language``), identified by flows.language (py3langid).

``LANGUAGE_NAMES`` is what a spec may ask for: the languages a user plausibly names, each an
ISO 639-1 code the identifier knows (the first nine were the whole set before; the 22 response
languages of IFEval are all in). The identifier knows more (``supported_languages()``: regional
varieties, rare languages, some hard to tell apart such as Bosnian from Croatian and Serbian);
they can be detected but not asked for, so the JSON schema an LLM fills in stays a readable list.
"""
from __future__ import annotations

from flows.checks.verdict import Verdict
from flows.language import VARIETY_OF, detect_language

LANGUAGE_NAMES: dict[str, str] = {
    "zh": "Chinese", "en": "English", "ja": "Japanese", "ko": "Korean", "ru": "Russian", "ar": "Arabic",
    "fr": "French", "de": "German", "es": "Spanish",
    # Europe
    "pt": "Portuguese", "it": "Italian", "nl": "Dutch", "pl": "Polish", "tr": "Turkish", "uk": "Ukrainian",
    "cs": "Czech", "sk": "Slovak", "sl": "Slovenian", "hr": "Croatian", "sr": "Serbian", "bg": "Bulgarian",
    "mk": "Macedonian", "ro": "Romanian", "hu": "Hungarian", "el": "Greek", "sv": "Swedish", "da": "Danish",
    "no": "Norwegian", "fi": "Finnish", "is": "Icelandic", "et": "Estonian", "lv": "Latvian",
    "lt": "Lithuanian", "ga": "Irish", "cy": "Welsh", "ca": "Catalan", "eu": "Basque", "gl": "Galician",
    "sq": "Albanian", "be": "Belarusian", "la": "Latin",
    # Middle East, South, Southeast and Central Asia
    "he": "Hebrew", "fa": "Persian", "ur": "Urdu", "hi": "Hindi", "bn": "Bengali", "pa": "Punjabi",
    "gu": "Gujarati", "mr": "Marathi", "ne": "Nepali", "ta": "Tamil", "te": "Telugu", "kn": "Kannada",
    "ml": "Malayalam", "si": "Sinhala", "th": "Thai", "vi": "Vietnamese", "id": "Indonesian", "ms": "Malay",
    "tl": "Tagalog", "my": "Burmese", "km": "Khmer", "lo": "Lao", "ka": "Georgian", "hy": "Armenian",
    "az": "Azerbaijani", "kk": "Kazakh", "uz": "Uzbek", "mn": "Mongolian", "ps": "Pashto", "ku": "Kurdish",
    # Africa
    "sw": "Swahili", "am": "Amharic", "ha": "Hausa", "yo": "Yoruba", "ig": "Igbo", "zu": "Zulu",
    "xh": "Xhosa", "so": "Somali", "af": "Afrikaans",
}
LANGUAGES = tuple(LANGUAGE_NAMES)



def language_name(code: str) -> str:
    """'Chinese' for 'zh'; a code outside LANGUAGE_NAMES names itself."""
    return LANGUAGE_NAMES.get(code, code)


def check_language(spec: dict, response: str) -> Verdict:
    detected = detect_language(response)
    got, want = VARIETY_OF.get(detected, detected), spec["language"]
    if detected == got:
        shown = f"{got} ({language_name(got)})"
    else:
        shown = f"{detected} (a variety of {got}, {language_name(got)})"
    return Verdict(got == want, f"detected {shown}, needs {want} ({language_name(want)})")
