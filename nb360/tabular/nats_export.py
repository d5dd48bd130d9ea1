"""Writing a store in NATS-Bench's format: one ``.pickle.pbz2`` file or a ``fast_mode`` directory.

:func:`export_nats` writes what NATS-Bench records, from the store's NATS columns
(``loss``, ``acc1``, ``acc5``, ``time``, latency, flops, params and the network config): a
store's ``metric`` columns and running time sums have no NATS field and are left out.
Weights (``net_state_dict``) are never stored: an export writes ``None``. The layouts are
described in :mod:`nb360.tabular.nats`.
"""

from __future__ import annotations

import bz2
import collections
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nb360.io import atomic_directory
from nb360.tabular.nats import PICKLE_EXT, _eval_keys, _progress, save_nats_pickle
from nb360.tabular.schema import EVAL_COLUMNS, TRAIN_COLUMNS
from nb360.tabular.store import Store

__all__ = ["export_nats", "nats_arch_states", "results_count_state"]


def results_count_state(
    *,
    name: str,
    seed: int | str,
    epochs: int,
    train: Mapping[str, Sequence[float] | Mapping[int, float] | None],
    evals: Mapping[str, Mapping[str, Sequence[float] | Mapping[int, float] | None]],
    params: float,
    flop: float,
    latency: Sequence[float] | None,
    arch_config: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """A ``ResultsCount`` state dict with NATS's fields, in NATS's order.

    ``train`` maps ``loss, acc1, acc5, time`` to per-epoch values: a sequence over all
    epochs, an ``{epoch: value}`` dict for some, or None (the field is None). ``evals`` maps
    every evaluation set to ``loss, acc1, time`` the same way (None: no keys).
    """

    def pairs(values: Sequence[float] | Mapping[int, float]) -> Any:
        return values.items() if isinstance(values, Mapping) else zip(range(epochs), values, strict=True)

    def per_epoch(values: Sequence[float] | Mapping[int, float] | None, ordered: bool = False) -> dict | None:
        if values is None:
            return None
        return collections.OrderedDict(pairs(values)) if ordered else dict(pairs(values))

    eval_dicts: dict[str, dict[str, float]] = {"acc1": {}, "time": {}, "loss": {}}
    for set_name, cols in evals.items():
        keys = _eval_keys(set_name, epochs)
        for column, target in eval_dicts.items():
            values = cols.get(column)
            if values is not None:
                target.update((keys[e], v) for e, v in pairs(values))
    return {
        "name": name,
        "train_acc1es": per_epoch(train.get("acc1")),
        "train_acc5es": per_epoch(train.get("acc5")),
        "train_losses": per_epoch(train.get("loss")),
        "train_times": per_epoch(train.get("time"), ordered=True),
        "arch_config": None if arch_config is None else dict(arch_config),
        "params": params,
        "flop": flop,
        "seed": seed,
        "epochs": epochs,
        "latency": None if latency is None else list(latency),
        "eval_names": list(evals),
        "eval_acc1es": eval_dicts["acc1"],
        "eval_times": eval_dicts["time"],
        "eval_losses": eval_dicts["loss"],
        "net_state_dict": None,
    }


class _GroupExport:
    """One group's NATS columns rearranged run-major (seeds, rows, epochs) for fast per-run export."""

    def __init__(self, group: Any) -> None:
        self.group = group
        self.evaluated = np.asarray(group.evaluated)
        self.row_of: list[int] = group.row_of.tolist()
        # per column: run-major values, and per run whether every / no value is absent
        self.columns: dict[tuple[str, str], tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        sets = [("train", TRAIN_COLUMNS)] + [(s, EVAL_COLUMNS) for s in group.eval_sets]
        for set_name, columns in sets:
            for column in columns:
                data = group.series(set_name, column)
                absent = np.isnan(data)
                recorded = group.recorded_nan(set_name, column)
                if recorded is not None:
                    absent &= ~recorded
                absent = np.ascontiguousarray(absent.transpose(1, 2, 0))
                self.columns[(set_name, column)] = (
                    np.ascontiguousarray(data.transpose(1, 2, 0)),
                    absent,
                    absent.all(axis=2),
                    absent.any(axis=2),
                )
        self.params, self.flops = group.column("params"), group.column("flops")
        self.latency, self.latency_len = group.column("latency"), group.column("latency_len")
        self.labels = dict(group.nats.get("seed_labels") or {})

    def _values(self, set_name: str, column: str, s: int, row: int) -> list[float] | dict[int, float] | None:
        data, absent, empty, partial = self.columns[(set_name, column)]
        if empty[s, row]:
            return None
        if not partial[s, row]:
            return data[s, row].tolist()
        return {int(e): float(data[s, row, e]) for e in np.flatnonzero(~absent[s, row])}

    def state(self, s: int, row: int, arch: str) -> dict[str, Any]:
        """The ``ResultsCount`` state of the run of seed position ``s`` at ``row``."""
        g = self.group
        train = {c: self._values("train", c, s, row) for c in TRAIN_COLUMNS}
        evals = {}
        for set_name in g.eval_sets:
            cols = {c: self._values(set_name, c, s, row) for c in EVAL_COLUMNS}
            if any(v is not None for v in cols.values()):
                evals[set_name] = cols
        n = int(self.latency_len[s, row])
        latency = None if n < 0 else self.latency[:n, s, row].tolist()
        config = None
        if g.arch_config is not None:
            config = {k: (arch if k in g.arch_keys else v) for k, v in g.arch_config.items()}
        seed = g.seeds[s]
        return results_count_state(
            name=g.dataset,
            seed=self.labels.get(str(seed), seed),
            epochs=g.epochs,
            train=train,
            evals=evals,
            params=float(self.params[s, row]),
            flop=float(self.flops[s, row]),
            latency=latency,
            arch_config=config,
        )


def _exporters(store: Store) -> dict[str, list[_GroupExport]]:
    by_hp: dict[str, list[_GroupExport]] = {}
    for group in store.groups.values():
        by_hp.setdefault(group.hp, []).append(_GroupExport(group))
    return by_hp


def nats_arch_states(
    store: Store, index: int, exporters: Mapping[str, list[_GroupExport]] | None = None
) -> collections.OrderedDict | None:
    """``{hp: ArchResults-state}`` of one architecture as NATS stores it, or None if it has no run."""
    exporters = exporters if exporters is not None else _exporters(store)
    arch = store.space.arch(index)
    out: collections.OrderedDict = collections.OrderedDict()
    for hp, groups in exporters.items():
        all_results: dict[tuple[str, int], dict] = {}
        dataset_seed: dict[str, list[int]] = {}
        for ex in groups:
            row = ex.row_of[index]
            if row < 0:
                continue
            seeds = [s for s in range(len(ex.group.seeds)) if ex.evaluated[s, row]]
            dataset_seed[ex.group.dataset] = [ex.group.seeds[s] for s in seeds]
            for s in seeds:
                all_results[(ex.group.dataset, ex.group.seeds[s])] = ex.state(s, row, arch)
        if all_results:
            out[hp] = {
                "arch_index": int(index),
                "arch_str": arch,
                "all_results": all_results,
                "dataset_seed": dataset_seed,
                "clear_net_done": bool(groups[0].group.nats.get("clear_net_done", True)),
            }
    return out or None


def export_nats(
    store: Store | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    fast_mode: bool = False,
    compresslevel: int = 9,
    progress: bool = True,
) -> Path:
    """Write ``store`` in NATS-Bench's format: one ``.pickle.pbz2`` file, or (``fast_mode``) a directory.

    ``nats_bench.create(out, 'tss'|'sss', fast_mode=...)`` reads the result. The directory
    is built under a temporary name and renamed when complete; the file is written atomically.
    """
    store = store if isinstance(store, Store) else Store.open(store)
    out = Path(out)
    exporters = _exporters(store)
    archs = list(store.space.archs)
    header = {"meta_archs": archs, "total_archs": len(archs)}
    evaluated = sorted(set().union(*(group.archs.tolist() for group in store.groups.values())))
    with _progress(len(evaluated), f"export {out.name}", progress) as bar:
        if not fast_mode:
            arch2infos = {}
            for index in evaluated:
                arch2infos[index] = nats_arch_states(store, index, exporters)
                bar.update(1)
            return save_nats_pickle({**header, "arch2infos": arch2infos, "evaluated_indexes": set(evaluated)}, out, compresslevel)
        with atomic_directory(out) as tmp:
            for index in evaluated:
                with bz2.BZ2File(tmp / f"{index:06d}{PICKLE_EXT}", "wb", compresslevel=compresslevel) as f:
                    pickle.dump(nats_arch_states(store, index, exporters), f, protocol=4)
                bar.update(1)
            with bz2.BZ2File(tmp / f"meta{PICKLE_EXT}", "wb", compresslevel=compresslevel) as f:
                pickle.dump({**header, "arch2infos": None, "evaluated_indexes": set()}, f, protocol=4)
    return out
