"""``NB101Benchmark``: the reference ``NASBench`` query API over an ``nb360-tabular`` store of space ``nb101``.

    bench = NB101Benchmark("data/nb101/nasbench_full.nb360", seed=0)
    data = bench.query({"matrix": matrix, "ops": ops}, epochs=108)
    fixed, computed = bench.get_metrics_from_spec(spec)

As the reference: ``query`` validates and prunes the spec (:class:`OutOfDomainError` outside
the space), picks one repeat uniformly at random (``random.Random(seed)``; ``repeat=`` an int
or ``"mean"`` chooses otherwise), returns the final (or, with ``stop_halfway``, the halfway)
metrics and adds the returned ``training_time`` and ``epochs`` (``epochs // 2`` halfway) to
the budget counters. ``get_metrics_*`` cost nothing. Isomorphic specs are one cell.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nb360.errors import DataError, UsageError
from nb360.nb101.spec import ModelSpec, OutOfDomainError
from nb360.nb101.store import DATASET, HASHES_FILE, POINTS
from nb360.tabular.store import Store

__all__ = ["NB101Benchmark", "OutOfDomainError", "ModelSpec"]

_SETS = {"train_accuracy": ("train", "acc1"), "validation_accuracy": ("valid", "acc1"), "test_accuracy": ("test", "acc1")}


class NB101Benchmark:
    """The NAS-Bench-101 query API (``query``, ``get_metrics_from_spec``/``_hash``, budget counters) over a store."""

    def __init__(self, store: str | os.PathLike[str] | Store, seed: int | None = None) -> None:
        self.store = store if isinstance(store, Store) else Store.open(Path(store))
        if self.store.space.name != "nb101":
            raise DataError(f"{self.store.path} holds space {self.store.space.name}, not nb101")
        self.space = self.store.space
        self.groups = {int(hp): g for (dataset, hp), g in self.store.groups.items() if dataset == DATASET}
        if not self.groups:
            raise DataError(f"{self.store.path}: no {DATASET} groups")
        self.valid_epochs = set(self.groups)
        self.rng = random.Random(seed)
        self.num_repeats = max(len(g.seeds) for g in self.groups.values())
        self.training_time_spent = 0.0
        self.total_epochs_spent = 0
        self._hashes: dict[str, int] | None = None

    def __repr__(self) -> str:
        return f"NB101Benchmark({str(self.store.path)!r}, epochs {sorted(self.valid_epochs)})"

    # ------------------------------------------------------------------ cells
    def _index(self, spec: Any) -> int:
        spec = ModelSpec.coerce(spec)
        return self.space.index(spec)  # OutOfDomainError outside the space

    def is_valid(self, spec: Any) -> bool:
        """Whether the pruned spec is inside the space (no budget cost), as the reference."""
        try:
            return ModelSpec.coerce(spec).is_valid()
        except UsageError:
            return False

    def evaluated(self) -> np.ndarray:
        """Ascending indexes of the cells that have data at some budget."""
        return np.unique(np.concatenate([g.archs for g in self.groups.values()]))

    @property
    def hashes(self) -> dict[str, int]:
        """Reference hash -> cell index of every cell with data (from the store, else computed once)."""
        if self._hashes is None:
            cells = self.evaluated()
            stored = self.store.path / HASHES_FILE
            if stored.is_file():
                table = np.load(stored, mmap_mode="r", allow_pickle=False)
                values = np.asarray(table[cells])
            else:
                from nb360.nb101.enumerate import reference_hashes

                values = reference_hashes(self.space.codes[cells], workers=1)
            self._hashes = {h.decode("ascii"): int(i) for h, i in zip(values.tolist(), cells.tolist())}
        return self._hashes

    def hash_iterator(self) -> Iterator[str]:
        """Every module hash in the data (ascending cell index)."""
        return iter(self.hashes)

    # ------------------------------------------------------------------ lookups
    def _fixed(self, index: int) -> dict[str, Any]:
        spec = self.space.spec(index)
        params = np.nan
        for g in self.groups.values():
            row = g.row_of[index]
            if row >= 0:
                values = g.column("params")[:, row]
                values = values[~np.isnan(values)]
                if len(values):
                    params = values[0]
                    break
        return {
            "module_adjacency": spec.matrix.copy(),
            "module_operations": list(spec.ops),
            "trainable_parameters": int(round(float(params) * 1e6)) if not np.isnan(params) else None,
        }

    def _point(self, g: Any, row: int, point: int, seed_pos: int | None) -> dict[str, float]:
        """Metrics of one evaluation point of one repeat (``seed_pos``) or their mean over repeats (None)."""
        pick = slice(None) if seed_pos is None else seed_pos
        out = {"training_time": g.column("train.time_total")[point, pick, row]}
        for key, (set_name, column) in _SETS.items():
            out[key] = g.column(g.file_stem(set_name, column))[point, pick, row]
        if seed_pos is None:
            done = g.evaluated[:, row]
            return {k: float(np.mean(np.asarray(v)[done])) for k, v in out.items()}
        return {k: float(v) for k, v in out.items()}

    def get_metrics_from_hash(self, module_hash: str) -> tuple[dict[str, Any], dict[int, list[dict[str, float]]]]:
        """``(fixed_stats, computed_stats)`` of a hash; no budget cost."""
        if module_hash not in self.hashes:
            raise OutOfDomainError(f"module hash {module_hash!r} is not in {self.store.path}")
        return self._metrics(self.hashes[module_hash])

    def get_metrics_from_spec(self, spec: Any) -> tuple[dict[str, Any], dict[int, list[dict[str, float]]]]:
        """``(fixed_stats, computed_stats)``: ``computed_stats[epochs][repeat]`` has ``halfway_*``/``final_*`` metrics."""
        return self._metrics(self._index(spec))

    def _metrics(self, index: int) -> tuple[dict[str, Any], dict[int, list[dict[str, float]]]]:
        computed: dict[int, list[dict[str, float]]] = {}
        for epochs in sorted(self.groups):
            g = self.groups[epochs]
            row = int(g.row_of[index])
            if row < 0:
                continue
            runs = []
            for s in range(len(g.seeds)):
                if not g.evaluated[s, row]:
                    continue
                run = {}
                for point, prefix in enumerate(POINTS):
                    for key, value in self._point(g, row, point, s).items():
                        run[f"{prefix}_{key}"] = value
                runs.append(run)
            computed[epochs] = runs
        if not computed:
            raise OutOfDomainError(f"cell {self.space.arch(index)} has no data in {self.store.path}")
        return self._fixed(index), computed

    def query(
        self,
        spec: Any,
        epochs: int = 108,
        stop_halfway: bool = False,
        repeat: int | str = "random",
        rng: random.Random | None = None,
    ) -> dict[str, Any]:
        """One repeat's metrics of ``spec`` at ``epochs`` (final or halfway); adds its time and epochs to the counters."""
        if epochs not in self.valid_epochs:
            raise OutOfDomainError(f"invalid number of epochs, must be one of {sorted(self.valid_epochs)}")
        index = self._index(spec)
        g = self.groups[epochs]
        row = int(g.row_of[index])
        if row < 0:
            raise OutOfDomainError(f"cell {self.space.arch(index)} has no {epochs}-epoch data in {self.store.path}")
        if repeat == "mean":
            seed_pos = None
        elif repeat == "random":
            seed_pos = (rng or self.rng).randint(0, len(g.seeds) - 1)
        elif isinstance(repeat, (int, np.integer)) and 0 <= int(repeat) < len(g.seeds):
            seed_pos = int(repeat)
        else:
            raise UsageError(f"repeat must be 'random', 'mean' or an int in 0..{len(g.seeds) - 1}, got {repeat!r}")
        if seed_pos is not None and not g.evaluated[seed_pos, row]:
            raise DataError(f"cell {self.space.arch(index)}: repeat {seed_pos} of the {epochs}-epoch runs is missing")
        data = self._fixed(index)
        data.update(self._point(g, row, 0 if stop_halfway else 1, seed_pos))
        self.training_time_spent += data["training_time"]
        self.total_epochs_spent += epochs // 2 if stop_halfway else epochs
        return data

    def get_budget_counters(self) -> tuple[float, int]:
        return self.training_time_spent, self.total_epochs_spent

    def reset_budget_counters(self) -> None:
        self.training_time_spent = 0.0
        self.total_epochs_spent = 0

    # ------------------------------------------------------------------ whole-space views
    def scores(self, epochs: int = 108, column: str = "validation_accuracy", point: str = "final") -> np.ndarray:
        """``(repeats, num cells)`` values of a metric (NaN where a cell has no run); no budget cost."""
        g = self.groups[epochs]
        if column == "training_time":
            values = g.column("train.time_total")[POINTS.index(point)]
        else:
            set_name, col = _SETS[column]
            values = g.column(g.file_stem(set_name, col))[POINTS.index(point)]
        return g.scatter(np.asarray(values))
