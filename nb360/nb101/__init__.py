"""NAS-Bench-101 (Ying et al., 2019) in nb360, torch-free (the network is :mod:`nb360.models.nb101`).

* :mod:`~nb360.nb101.spec`: :class:`ModelSpec` (pruning, validity), the reference graph hash and canonical codes;
* :mod:`~nb360.nb101.enumerate`: every unique cell (423,624), vectorised, with the reference hashes;
* :mod:`~nb360.nb101.space`: space ``nb101`` (cells in enumeration order) for ``nb360.tabular`` and ``nb360.precompute``;
* :mod:`~nb360.nb101.store`, :mod:`~nb360.nb101.tfrecord`: the reference data as an ``nb360-tabular`` store;
* :mod:`~nb360.nb101.api`: :class:`NB101Benchmark`, the reference query API;
* :mod:`~nb360.nb101.search_space`: the space and evaluator of the multi-trial search algorithms.

    python -m nb360.nb101 enumerate --out cells.npz
    python -m nb360.nb101 import --tfrecord nasbench_full.tfrecord --store data/nb101/nasbench_full.nb360
"""

from __future__ import annotations

from nb360.nb101.spec import OPS, ModelSpec, OutOfDomainError

__all__ = ["OPS", "ModelSpec", "OutOfDomainError", "NB101Benchmark"]


def __getattr__(name: str):
    if name == "NB101Benchmark":
        from nb360.nb101.api import NB101Benchmark

        return NB101Benchmark
    raise AttributeError(name)
