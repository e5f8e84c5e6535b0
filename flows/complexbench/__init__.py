"""ComplexBench (Wen et al. 2024, arXiv:2407.03978): 1,150 instructions composing constraints
with And, Chain and Selection, each with scoring questions that may depend on one another.

``data`` reads the official file (thu-coai/ComplexBench, data/data_final.json); ``rules``
decides the questions that carry a verification rule, with the official code's conventions;
``metrics`` turns per-question verdicts into DRFR (dependencies applied), its breakdowns and the
coherent test over Selection groups, as the official aggregation does. The data is not vendored.
"""
