"""Tabular NAS benchmarks (NAS-Bench-201 / NATS-Bench and NB360's precomputed tasks), without PyTorch.

* :mod:`~nb360.tabular.schema`: the columns, :class:`ScoreRule` and :class:`RunRecord`;
* :mod:`~nb360.tabular.store`: the ``nb360-tabular`` store (memory-mapped ``.npy`` columns, one
  row per evaluated architecture); :mod:`~nb360.tabular.builder`: :class:`StoreBuilder` writes one;
* :mod:`~nb360.tabular.nats`: NATS-Bench ``.pickle.pbz2`` files and directories read and imported;
  :mod:`~nb360.tabular.nats_export` writes them, :mod:`~nb360.tabular.fixture` a tiny one for tests;
* :mod:`~nb360.tabular.api`: :class:`TabularBenchmark`, the query API (:func:`create`), on top of
  :mod:`~nb360.tabular.views` (one group's lookups and reductions);
* :mod:`~nb360.tabular.download`: the NB360 NAS-Bench-201 files (imported only when used).

    from nb360.tabular import create
    bench = create("data/nb201/NATS-tss-v1_0-daa55.nb360")
    bench.get_more_info(123, "ninapro", "200")["ori-test-accuracy"]
    bench.scores("darcyflow", "200", "ori-test")          # relative l2 of all 15,625 cells
"""

from __future__ import annotations

from nb360.tabular.api import TabularBenchmark, create, open_benchmark
from nb360.tabular.builder import StoreBuilder
from nb360.tabular.fixture import write_fixture
from nb360.tabular.nats import import_nats, load_nats_pickle
from nb360.tabular.nats_export import export_nats
from nb360.tabular.schema import SCORE_RULES, RunRecord, ScoreRule, score_rule
from nb360.tabular.store import Store

__all__ = [
    "SCORE_RULES",
    "RunRecord",
    "ScoreRule",
    "Store",
    "StoreBuilder",
    "TabularBenchmark",
    "create",
    "export_nats",
    "import_nats",
    "load_nats_pickle",
    "open_benchmark",
    "score_rule",
    "write_fixture",
]
