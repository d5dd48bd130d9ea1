"""NAS-Bench-101 data as an ``nb360-tabular`` store (space ``nb101``), written column by column.

Mapping from the reference data (``NASBench.computed_statistics[hash][epochs][repeat]``):

=====================================  ===========================================================
reference                              store
=====================================  ===========================================================
budget ``epochs`` (4, 12, 36, 108)     group ``cifar10`` / hp ``'4'``, ``'12'``, ``'36'``, ``'108'``
repeat 0, 1, 2 (file order)            seeds 0, 1, 2
``halfway_*``, ``final_*``             the group's two "epochs" (evaluation points 0 and 1)
``*_train_accuracy``                   ``train.acc1`` (a fraction, as the reference)
``*_validation_accuracy``              ``valid.acc1``
``*_test_accuracy``                    ``test.acc1``
``*_training_time`` (cumulative)       ``train.time_total``; ``train.time`` holds the increments
``trainable_parameters``               ``params`` (millions, as every store)
module hash                            ``nb101_hashes.npy`` at the store root (``S32``, one per cell)
=====================================  ===========================================================

The score rule of ``cifar10`` in these stores is ``acc1``, unit ``fraction`` (the reference's).
A group holds only the cells with data. Unrecorded columns (losses, top-5) are NaN.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nb360.errors import UsageError
from nb360.io import atomic_directory
from nb360.tabular.schema import DERIVED_COLUMNS, EVAL_COLUMNS, FORMAT, NAN, TRAIN_COLUMNS, VERSION, ScoreRule, column_stem

__all__ = ["BUDGETS", "DATASET", "SCORE", "Budget", "write_store", "HASHES_FILE"]

BUDGETS = (4, 12, 36, 108)
DATASET = "cifar10"
SCORE = ScoreRule("acc1", "accuracy", "fraction", False)
HASHES_FILE = "nb101_hashes.npy"
REPEATS = 3
POINTS = ("halfway", "final")


@dataclass
class Budget:
    """Dense data of one budget: ``index`` (R,) cell indexes and ``(2 points, repeats, R)`` arrays (NaN = no run)."""

    index: np.ndarray
    train_accuracy: np.ndarray
    validation_accuracy: np.ndarray
    test_accuracy: np.ndarray
    training_time: np.ndarray  # cumulative seconds at each point
    params: np.ndarray  # (R,) trainable parameters
    evaluated: np.ndarray | None = None  # (repeats, R) bool; default: a final time is recorded
    extra: dict[str, Any] = field(default_factory=dict)

    def check(self) -> None:
        R = len(self.index)
        for name in ("train_accuracy", "validation_accuracy", "test_accuracy", "training_time"):
            arr = getattr(self, name)
            if arr.shape[0] != 2 or arr.shape[2] != R:
                raise UsageError(f"NB101 budget column {name}: shape {arr.shape}, expected (2, repeats, {R})")
        if len(self.params) != R:
            raise UsageError(f"NB101 budget params: {len(self.params)} values for {R} cells")


def _group_meta(epochs: int, rows: int, seeds: list[int]) -> dict[str, Any]:
    return {
        "dataset": DATASET,
        "hp": str(epochs),
        "epochs": len(POINTS),
        "seeds": seeds,
        "rows": rows,
        "eval_sets": ["valid", "test"],
        "columns": {"train": list(TRAIN_COLUMNS), "eval": list(EVAL_COLUMNS)},
        "path": f"{DATASET}/{epochs}",
        "files": {"valid": "valid", "test": "test"},
        "score": SCORE.as_dict(),
        "arch_config": None,
        "arch_keys": [],
        "latency_k": 1,
        "nan_values": [],
        "nats": {"seed_labels": {}, "clear_net_done": True},
        "nb101": {"points": list(POINTS), "budget_epochs": epochs},
    }


def write_store(
    path: str | os.PathLike[str],
    budgets: Mapping[int, Budget],
    *,
    hashes: np.ndarray | None = None,
    source: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write budgets (epochs -> :class:`Budget`) as a store of space ``nb101`` at ``path``, atomically."""
    from nb360 import __version__
    from nb360.nb101.space import NB101

    path = Path(path)
    if path.exists() and not overwrite:
        raise UsageError(f"{path} already exists; pass overwrite=True to replace it")
    num = len(NB101)
    groups = []
    with atomic_directory(path) as tmp:
        np.save(tmp / "archs.npy", np.array([a.encode("ascii") for a in NB101.archs]))
        if hashes is not None:
            hashes = np.asarray(hashes, dtype="S32")
            if hashes.shape != (num,):
                raise UsageError(f"NB101 hashes: shape {hashes.shape}, expected ({num},)")
            np.save(tmp / HASHES_FILE, hashes)
        for epochs in sorted(budgets):
            b = budgets[epochs]
            b.check()
            order = np.argsort(b.index, kind="stable")
            index = np.asarray(b.index, dtype=np.int64)[order]
            if len(index) and (index[0] < 0 or index[-1] >= num or np.any(np.diff(index) <= 0)):
                raise UsageError(f"NB101 budget {epochs}: cell indexes must be distinct and in 0..{num - 1}")
            E, S, R = len(POINTS), b.train_accuracy.shape[1], len(index)
            meta = _group_meta(int(epochs), R, list(range(S)))
            directory = tmp / meta["path"]
            directory.mkdir(parents=True)

            def save(stem: str, arr: np.ndarray, directory: Path = directory) -> None:
                np.save(directory / f"{stem}.npy", arr)

            cum = np.asarray(b.training_time, dtype=np.float64)[:, :, order]
            evaluated = b.evaluated[:, order] if b.evaluated is not None else ~np.isnan(cum[-1])
            save("archs", index.astype(np.int32))
            save("evaluated", np.asarray(evaluated, dtype=bool))
            params = np.broadcast_to(np.asarray(b.params, dtype=np.float64)[order] / 1e6, (S, R))
            save("params", np.where(evaluated, params, NAN))
            save("flops", np.full((S, R), NAN))
            save("latency", np.full((1, S, R), NAN))
            save("latency_len", np.full((S, R), -1, dtype=np.int16))
            increments = np.diff(cum, axis=0, prepend=0.0)
            values = {
                "train": {"acc1": b.train_accuracy, "time": increments},
                "valid": {"acc1": b.validation_accuracy},
                "test": {"acc1": b.test_accuracy},
            }
            for set_name, columns in [("train", TRAIN_COLUMNS), ("valid", EVAL_COLUMNS), ("test", EVAL_COLUMNS)]:
                for column in columns:
                    given = values[set_name].get(column)
                    arr = np.full((E, S, R), NAN) if given is None else np.asarray(given, dtype=np.float64)[:, :, order]
                    save(column_stem(meta["files"], set_name, column), arr)
                    for derived, src in DERIVED_COLUMNS.items():
                        if src == column:
                            # the cumulative times themselves (not a re-summed copy), so queries return them exactly
                            total = cum if set_name == "train" else np.cumsum(arr, axis=0)
                            save(column_stem(meta["files"], set_name, derived), total)
            groups.append(meta)
        document = {
            "format": FORMAT,
            "version": VERSION,
            "space": NB101.name,
            "num_archs": num,
            "created_by": f"nb360 {__version__}",
            "source": dict(source) if source is not None else None,
            "groups": groups,
        }
        with open(tmp / "meta.json", "w", encoding="utf-8") as f:
            json.dump(document, f, indent=1)
            f.write("\n")
    return path
