"""A seed's material, and whether a rewrite of the seed kept it (reject reason `material_lost`).

Many seeds are an instruction followed by what it works on: "Summarise the following paragraph:
<paragraph>", "请提取下面这段文字中的人名、地点和时间：<文字>". The paper's expansion keeps the
seed's theme and its structuring must be faithful, so that material has to survive both. A small
model sometimes replaces it with text of its own (on the demo seeds the 1.5B model summarised an
invented sentence about sales instead of the seed's paragraph on shared bikes).

The material is what follows the seed's first colon (: or ：) when the clause before the colon
points at it ("the following paragraph", "this review", "下面这段话", "给定的文本") and does not
announce requirements instead ("Follow these rules:", "请按以下要求：", "注意以下几点："), and
when it has at least MIN_MATERIAL letters and digits. It is kept when at least KEPT_SHARE of its
character 5-grams appear in the rewrite, compared on letters and digits only (NFKC, case folded), so that changed punctuation,
quotes, spacing or a table layout of the same words still count as kept.
"""
from __future__ import annotations

import re
import unicodedata

from flows.checks.text import words_pattern

MIN_MATERIAL = 12  # letters and digits after the colon; less is a label ("Title: Autumn")
KEPT_SHARE = 0.8
GRAM = 5

_COLON = re.compile(r"[:：]")
_CLAUSE_END = re.compile(r"[。.!?！？;；\n]")
# Words by which an instruction points at the text that follows its colon, and words that say
# what follows is requirements, not material. Matched in the case-folded clause before the colon.
POINTERS = ("following", "below", "this", "these", "given", "the text", "the passage", "下面", "以下", "如下",
            "下列", "这段", "这句", "这条", "这篇", "这首", "这个", "这些", "给定", "所给", "原文")
REQUIREMENT_WORDS = ("requirement", "rule", "constraint", "guideline", "instruction", "要求", "规定", "规则", "注意",
                     "约束", "条件")
_POINTER_RE, _REQUIREMENT_RE = words_pattern(POINTERS, whole=True), words_pattern(REQUIREMENT_WORDS)
# A quotation right after the colon is the material, and what follows it is more instruction
# ('Rewrite this sentence: "..." Use no commas.'), as is a paragraph after a blank line.
_CLOSING = {'"': '"', "“": "”", "「": "」", "『": "』", "'": "'", "‘": "’"}


def _letters(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN")


def _grams(letters: str) -> set[str]:
    return {letters[i:i + GRAM] for i in range(max(1, len(letters) - GRAM + 1))}


def seed_material(seed: str) -> str | None:
    """The text after the seed's first colon up to a blank line (only the quotation, when one
    opens it), when the clause before the colon points at that text and it is long enough."""
    parts = _COLON.split(seed, maxsplit=1)
    if len(parts) < 2 or len(_letters(parts[1])) < MIN_MATERIAL:
        return None
    clause = _CLAUSE_END.split(parts[0].casefold())[-1]
    if not _POINTER_RE.search(clause) or _REQUIREMENT_RE.search(clause):
        return None
    material = re.split(r"\n\s*\n", parts[1].strip(), maxsplit=1)[0]  # a paragraph after it is instruction again
    closing = _CLOSING.get(material[:1])
    end = material.find(closing, 1) if closing else -1
    if end > 0 and len(_letters(material[1:end])) >= MIN_MATERIAL:
        return material[1:end]
    return material


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
