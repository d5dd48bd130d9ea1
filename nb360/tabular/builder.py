"""Writing an ``nb360-tabular`` store (the format is described in :mod:`nb360.tabular.store`).

:class:`StoreBuilder` collects :class:`~nb360.tabular.schema.RunRecord` objects and writes
one group directory per (dataset, hp) with one row per evaluated architecture, the derived
running sums included, atomically: into a hidden directory beside the target, then renamed.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nb360.errors import DataError, UsageError
from nb360.io import atomic_directory, file_digest
from nb360.tabular.schema import (
    DERIVED_COLUMNS,
    EVAL_COLUMNS,
    FORMAT,
    NAN,
    OPTIONAL_COLUMNS,
    TRAIN_COLUMNS,
    VERSION,
    RunRecord,
    ScoreRule,
    column_stem,
    load_space,
    score_rule,
)

__all__ = ["StoreBuilder"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def _safe_name(name: str, taken: set[str]) -> str:
    base = _SAFE.sub("_", name).lstrip(".") or "_"
    candidate, k = base, 1
    while candidate.lower() in taken:
        candidate, k = f"{base}_{k}", k + 1
    taken.add(candidate.lower())
    return candidate


def _as_series(values: Any, epochs: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.shape[0] != epochs:
        raise UsageError(f"{what}: {arr.shape[0]} values for {epochs} epochs")
    return arr


class StoreBuilder:
    """Collects :class:`RunRecord` objects and writes them as a store.

    Args:
        space: the search space (``"nb201"``/``"tss"`` or ``"nats_sss"``/``"sss"``).
        score: per-dataset overrides of :data:`SCORE_RULES` (a :class:`ScoreRule` or its dict).
    """

    def __init__(self, space: str, score: Mapping[str, ScoreRule | Mapping[str, Any]] | None = None) -> None:
        self.space = load_space(space)
        self.num_archs = len(self.space)
        self._score = dict(score or {})
        self._groups: dict[tuple[str, str], list[RunRecord]] = {}
        self._keys: set[tuple[str, str, int, int]] = set()

    def __len__(self) -> int:
        return len(self._keys)

    def add(self, run: RunRecord) -> None:
        index, dataset, hp, seed = int(run.arch_index), str(run.dataset), str(run.hp), int(run.seed)
        if not 0 <= index < self.num_archs:
            raise UsageError(f"run of architecture {index}: out of range 0..{self.num_archs - 1} of space {self.space.name}")
        key = (dataset, hp, seed, index)
        if key in self._keys:
            raise UsageError(f"architecture {index} already has a run on {dataset} with hp {hp!r} and seed {seed}")
        if int(run.epochs) < 1:
            raise UsageError(f"run of architecture {index} on {dataset}/{hp}: epochs must be >= 1, not {run.epochs}")
        unknown = {f"train.{c}" for c in run.train if c not in TRAIN_COLUMNS + OPTIONAL_COLUMNS}
        unknown |= {f"{s}.{c}" for s, cols in run.evals.items() for c in cols if c not in EVAL_COLUMNS + OPTIONAL_COLUMNS}
        if unknown:
            raise UsageError(f"run of architecture {index}: unknown columns {sorted(unknown)}")
        if "train" in run.evals:
            raise UsageError(
                f"run of architecture {index}: an evaluation set cannot be called 'train' (it names the training columns)"
            )
        self._keys.add(key)
        self._groups.setdefault((dataset, hp), []).append(run)

    # ---------------------------------------------------------------------------------- writing
    def _group_meta(self, dataset: str, hp: str, runs: list[RunRecord], path: str) -> dict[str, Any]:
        epochs = {int(r.epochs) for r in runs}
        if len(epochs) != 1:
            raise DataError(f"runs on {dataset} with hp {hp!r} have different epoch counts: {sorted(epochs)}")
        (n_epochs,) = epochs
        seeds = sorted({int(r.seed) for r in runs})
        eval_sets: list[str] = []
        for r in runs:
            eval_sets.extend(s for s in r.evals if s not in eval_sets)
        file_taken = {"train", "archs", "params", "flops", "latency", "latency_len", "evaluated"}
        files = {s: _safe_name(s, file_taken) for s in eval_sets}
        columns = {
            "train": [*TRAIN_COLUMNS, *(c for c in OPTIONAL_COLUMNS if any(c in r.train for r in runs))],
            "eval": [*EVAL_COLUMNS, *(c for c in OPTIONAL_COLUMNS if any(c in cols for r in runs for cols in r.evals.values()))],
        }
        rule = score_rule(dataset, self._score.get(dataset))
        if rule.column not in columns["eval"]:
            raise UsageError(f"the score of {dataset} is the {rule.column!r} column, but no run on {dataset}/{hp} records it")
        config_run = next((r for r in runs if r.arch_config is not None), None)
        arch_config, arch_keys = None, []
        if config_run is not None:
            arch = self.space.arch(config_run.arch_index)
            arch_config = {}
            for key, value in config_run.arch_config.items():
                if isinstance(value, str) and value == arch and key in ("arch_str", "channels"):
                    arch_keys.append(key)
                    value = None
                arch_config[key] = value
        labels = {}
        for r in runs:
            if r.seed_label is not None:
                labels.setdefault(str(int(r.seed)), r.seed_label)
        latency_k = max([len(r.latency) for r in runs if r.latency is not None] + [1])
        nan_values = sorted({c for r in runs if r.nan_values for c, m in r.nan_values.items() if np.any(m)})
        known = {f"train.{c}" for c in columns["train"]} | {f"{s}.{c}" for s in eval_sets for c in columns["eval"]}
        if set(nan_values) - known:
            raise UsageError(f"nan_values of runs on {dataset}/{hp} name unknown columns {sorted(set(nan_values) - known)}")
        return {
            "dataset": dataset,
            "hp": hp,
            "epochs": n_epochs,
            "seeds": seeds,
            "rows": len({int(r.arch_index) for r in runs}),
            "eval_sets": eval_sets,
            "columns": columns,
            "path": path,
            "files": files,
            "score": rule.as_dict(),
            "arch_config": arch_config,
            "arch_keys": arch_keys,
            "latency_k": latency_k,
            "nan_values": nan_values,
            "nats": {"seed_labels": labels, "clear_net_done": True},
        }

    def _write_group(self, root: Path, meta: dict[str, Any], runs: list[RunRecord]) -> None:
        """Write one group's columns, one at a time (a full 200-epoch column is 25 MB per seed)."""
        directory = root / meta["path"]
        directory.mkdir(parents=True)

        def save(stem: str, arr: np.ndarray) -> None:
            np.save(directory / f"{stem}.npy", arr)

        archs = np.array(sorted({int(r.arch_index) for r in runs}), dtype=np.int32)
        row_of = {a: k for k, a in enumerate(archs.tolist())}
        seed_pos = {s: k for k, s in enumerate(meta["seeds"])}
        cells = [(seed_pos[int(r.seed)], row_of[int(r.arch_index)]) for r in runs]  # (seed, row) of every run
        E, S, R = meta["epochs"], len(meta["seeds"]), len(archs)

        evaluated = np.zeros((S, R), dtype=bool)
        params, flops = np.full((S, R), NAN), np.full((S, R), NAN)
        latency = np.full((meta["latency_k"], S, R), NAN)
        latency_len = np.full((S, R), -1, dtype=np.int16)
        for r, (s, k) in zip(runs, cells, strict=True):
            evaluated[s, k] = True
            params[s, k], flops[s, k] = float(r.params), float(r.flops)
            if r.latency is not None:
                latency_len[s, k] = len(r.latency)
                latency[: len(r.latency), s, k] = [NAN if v is None else float(v) for v in r.latency]
        for stem, arr in [("archs", archs), ("evaluated", evaluated), ("params", params), ("flops", flops)]:
            save(stem, arr)
        for stem, arr in [("latency", latency), ("latency_len", latency_len)]:
            save(stem, arr)

        where = f"{meta['dataset']}/{meta['hp']}"
        sets = [("train", meta["columns"]["train"])] + [(s, meta["columns"]["eval"]) for s in meta["eval_sets"]]
        for set_name, columns in sets:
            for column in columns:
                values = np.full((E, S, R), NAN)
                for r, (s, k) in zip(runs, cells, strict=True):
                    series = (r.train if set_name == "train" else r.evals.get(set_name, {})).get(column)
                    if series is not None:
                        values[:, s, k] = _as_series(series, E, f"{where} arch {r.arch_index} {set_name} {column}")
                stem = column_stem(meta["files"], set_name, column)
                save(stem, values)
                for derived, source in DERIVED_COLUMNS.items():
                    if column == source:
                        save(column_stem(meta["files"], set_name, derived), np.cumsum(values, axis=0))
                if f"{set_name}.{column}" in meta["nan_values"]:
                    mask = np.zeros((E, S, R), dtype=bool)
                    for r, (s, k) in zip(runs, cells, strict=True):
                        recorded = (r.nan_values or {}).get(f"{set_name}.{column}")
                        if recorded is not None:
                            mask[:, s, k] = np.asarray(recorded, dtype=bool)
                    save(f"{stem}.nanvalue", mask)

    def write(
        self,
        path: str | os.PathLike[str],
        source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        *,
        overwrite: bool = False,
        nats: Mapping[tuple[str, str], Mapping[str, Any]] | None = None,
    ) -> Path:
        """Write the store to ``path`` (a directory) atomically and return it.

        ``source`` is the file the runs came from (its name and SHA-256 are recorded) or a
        ready dict. ``nats`` overrides the per-group NATS export details (``clear_net_done``).
        An existing store at ``path`` is replaced only with ``overwrite``.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            raise UsageError(f"{path} already exists; pass overwrite=True to replace it")
        from nb360 import __version__

        if source is not None and not isinstance(source, Mapping):
            source = {"file": Path(source).name, "sha256": file_digest(source)}
        with atomic_directory(path) as tmp:
            taken: set[str] = set()
            dataset_dirs: dict[str, str] = {}
            hp_dirs: dict[str, set[str]] = {}
            groups = []
            for (dataset, hp), runs in self._groups.items():
                if dataset not in dataset_dirs:  # one directory per dataset, one subdirectory per hp
                    dataset_dirs[dataset] = _safe_name(dataset, taken)
                directory = f"{dataset_dirs[dataset]}/{_safe_name(hp, hp_dirs.setdefault(dataset, set()))}"
                meta = self._group_meta(dataset, hp, runs, directory)
                if nats and (dataset, hp) in nats:
                    meta["nats"].update(nats[(dataset, hp)])
                groups.append(meta)
            rules: dict[str, dict] = {}
            for meta in groups:
                if rules.setdefault(meta["dataset"], meta["score"]) != meta["score"]:
                    raise UsageError(f"dataset {meta['dataset']}: one score rule for all its groups")
            np.save(tmp / "archs.npy", np.array([a.encode("ascii") for a in self.space.archs]))
            for meta, runs in zip(groups, self._groups.values(), strict=True):
                self._write_group(tmp, meta, runs)
            document = {
                "format": FORMAT,
                "version": VERSION,
                "space": self.space.name,
                "num_archs": self.num_archs,
                "created_by": f"nb360 {__version__}",
                "source": dict(source) if source is not None else None,
                "groups": groups,
            }
            with open(tmp / "meta.json", "w", encoding="utf-8") as f:
                json.dump(document, f, indent=1, default=_json_default)
                f.write("\n")
        return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
