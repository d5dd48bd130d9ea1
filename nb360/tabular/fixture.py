"""A tiny NATS-Bench benchmark in the exact file format, with numbers a test can recompute (spec §5, "Tiny fixture").

:func:`write_fixture` writes it as one ``.pickle.pbz2`` file or as a fast-mode directory;
:func:`fixture_dict` is the dict itself.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nb360.tabular.nats import PICKLE_EXT, save_nats_pickle
from nb360.tabular.nats_export import results_count_state

__all__ = ["fixture_dict", "write_fixture"]


def fixture_dict(
    *,
    indexes: Sequence[int] = (0, 1, 2),
    dataset: str = "ninapro",
    seeds: Sequence[int] = (777,),
    hp: str = "12",
    epochs: int = 2,
    eval_names: Sequence[str] = ("ori-test",),
    class_num: int = 18,
) -> dict[str, Any]:
    """A tiny NATS tss benchmark dict in the exact file format, with numbers a test can recompute.

    For the ``k``-th listed architecture, the ``j``-th seed, epoch ``e`` and the ``q``-th set:
    train loss ``2 - 0.5 e + 0.1 k + 0.01 j``, acc1 ``50 + 10 k + e + j``, acc5 ``90 + k + 0.5 e``,
    time ``2 + k + 0.25 e``; eval loss ``1.5 - 0.1 e + 0.05 q + 0.1 k + 0.01 j``, acc1
    ``40 + 10 k + e + 2 q + j``, time ``0.5 + 0.1 e + q``; params ``0.1 (k + 1)``, flop
    ``10 (k + 1)``, latency ``[0.001 (k + 1)]``.
    """
    from nb360.spaces import get_space

    archs = list(get_space("tss").archs)
    arch2infos = {}
    for k, index in enumerate(indexes):
        all_results = {}
        for j, seed in enumerate(seeds):
            steps = range(epochs)
            evals = {
                name: {
                    "loss": [1.5 - 0.1 * e + 0.05 * q + 0.1 * k + 0.01 * j for e in steps],
                    "acc1": [40.0 + 10 * k + e + 2 * q + j for e in steps],
                    "time": [0.5 + 0.1 * e + q for e in steps],
                }
                for q, name in enumerate(eval_names)
            }
            all_results[(dataset, seed)] = results_count_state(
                name=dataset,
                seed=f"{seed:04d}",
                epochs=epochs,
                train={
                    "loss": [2.0 - 0.5 * e + 0.1 * k + 0.01 * j for e in steps],
                    "acc1": [50.0 + 10 * k + e + j for e in steps],
                    "acc5": [90.0 + k + 0.5 * e for e in steps],
                    "time": [2.0 + k + 0.25 * e for e in steps],
                },
                evals=evals,
                params=0.1 * (k + 1),
                flop=10.0 * (k + 1),
                latency=[0.001 * (k + 1)],
                arch_config={"channel": 16, "num_cells": 5, "arch_str": archs[index], "class_num": class_num},
            )
        state = {
            "arch_index": index,
            "arch_str": archs[index],
            "all_results": all_results,
            "dataset_seed": {dataset: sorted(seeds)},
            "clear_net_done": True,
        }
        arch2infos[index] = collections.OrderedDict([(hp, state)])
    return {"meta_archs": archs, "total_archs": len(archs), "arch2infos": arch2infos, "evaluated_indexes": set(indexes)}


def write_fixture(
    root: str | os.PathLike[str], *, fast_mode: bool = False, name: str = "NATS-tss-v1_0-test0", **options: Any
) -> Path:
    """Write :func:`fixture_dict` (``options`` go to it) under ``root`` as ``<name>.pickle.pbz2`` or ``<name>-simple/``."""
    root = Path(root)
    data = fixture_dict(**options)
    if not fast_mode:
        return save_nats_pickle(data, root / f"{name}{PICKLE_EXT}")
    directory = root / f"{name}-simple"
    directory.mkdir(parents=True, exist_ok=True)
    for index, states in data["arch2infos"].items():
        save_nats_pickle(states, directory / f"{index:06d}{PICKLE_EXT}")
    save_nats_pickle({**data, "arch2infos": None, "evaluated_indexes": set()}, directory / f"meta{PICKLE_EXT}")
    return directory
