"""IFEval (Zhou et al. 2023, arXiv:2311.07911): its verifiable instructions as rule checks.

``instructions`` decides each of the 25 instruction types with IFEval's own definitions
(``text`` holds what a word, a sentence, a paragraph ... is), so that scores are comparable
with published IFEval numbers.
"""
