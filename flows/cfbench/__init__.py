"""CFBench (Zhang et al. 2024, arXiv:2408.01122): 1,000 Chinese instructions, each with a
checklist of criteria a judge scores 0 or 1, ranked primary (主需) or secondary (次需).

``data`` reads the official file (PKU-Baichuan-MLSystemLab/CFBench, data/cfbench_data.json);
``metrics`` turns judge verdicts into CSR, ISR and PSR as the official evaluation code does, so
that scores are comparable with published CFBench numbers. The data is not vendored: the
official repository carries no licence.
"""
