"""A seed's material, and whether a rewrite of the seed kept it (reject reason `material_lost`).

Many seeds are an instruction followed by what it works on: "Summarise the following paragraph:
<paragraph>", "请提取下面这段文字中的人名、地点和时间：<文字>". The paper's expansion keeps the
seed's theme and its structuring must be faithful, so that material has to survive both. A small
model sometimes replaces it with text of its own (on the demo seeds the 1.5B model summarised an
invented sentence about sales instead of the seed's paragraph on shared bikes).

The material is what follows the seed's first colon (: or ：) when it has at least MIN_MATERIAL
letters and digits. It is kept when at least KEPT_SHARE of its character 5-grams appear in the
rewrite, compared on letters and digits only (NFKC, case folded), so that changed punctuation,
quotes, spacing or a table layout of the same words still count as kept.
"""
from __future__ import annotations

import re
import unicodedata

MIN_MATERIAL = 12  # letters and digits after the colon; less is a label ("Title: Autumn")
KEPT_SHARE = 0.8
GRAM = 5

_COLON = re.compile(r"[:：]")


def _letters(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN")


def _grams(letters: str) -> set[str]:
    return {letters[i:i + GRAM] for i in range(max(1, len(letters) - GRAM + 1))}


def seed_material(seed: str) -> str | None:
    """The text after the seed's first colon, when it is long enough to be material."""
    parts = _COLON.split(seed, maxsplit=1)
    if len(parts) < 2 or len(_letters(parts[1])) < MIN_MATERIAL:
        return None
    return parts[1].strip()


def kept_share(material: str, rewrite: str) -> float:
    """The share of the material's character 5-grams (letters and digits) found in the rewrite."""
    wanted = _grams(_letters(material))
    return len(wanted & _grams(_letters(rewrite))) / len(wanted)


def material_lost(seed: str, *rewrite: str) -> str | None:
    """Why the rewrite (its parts joined) does not keep the seed's material, or None."""
    material = seed_material(seed)
    if material is None:
        return None
    share = kept_share(material, "\n".join(rewrite))
    if share >= KEPT_SHARE:
        return None
    shown = material if len(material) <= 60 else material[:57] + "..."
    return f"{share:.0%} of the seed's material kept (needs {KEPT_SHARE:.0%}): {shown!r}"
