"""Analyses of precomputed benchmarks (rank correlation across tasks, operation importance).

The modules here take plain numpy arrays, one score per architecture, so they run on
whatever store or file the scores came from. They import neither PyTorch nor, until a
plot is drawn, matplotlib.
"""
