"""Precompute generation: train every architecture of a space on a task, sharded, into a tabular benchmark.

``python -m nb360.precompute run|merge|status`` (see :mod:`nb360.precompute.__main__`);
the worker (:mod:`~nb360.precompute.worker`) writes one result file per run, the merge
step (:mod:`~nb360.precompute.merge`) turns them into a :mod:`nb360.tabular` store.
"""
