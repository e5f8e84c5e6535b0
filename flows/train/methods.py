"""The training methods and the sequences each one scores (no torch here: the CLI imports it)."""
from __future__ import annotations

IOPO_METHODS = ("iopo", "iopo-light", "iopo-input-only", "iopo-output-only")
METHODS = ("sft", "dpo", *IOPO_METHODS)
# Sequences per example, named prompt+response, in the order the collator lays them out.
SEQUENCES = {
    "sft": ("x1y1",),
    "dpo": ("x1y1", "x1y2"),  # chosen, rejected
    "iopo": ("x1y1", "x1y2", "x2y2", "x2y1"),
    "iopo-light": ("x1y1", "x1y2", "x2y1"),  # no y2 given x2: the paper's memory-light form
    "iopo-input-only": ("x1y1", "x1y2", "x2y2", "x2y1"),
    "iopo-output-only": ("x1y1", "x1y2", "x2y2", "x2y1"),
}
