"""The ``nb360-tabular`` store: a directory of memory-mapped ``.npy`` columns plus ``meta.json``.

Format ``nb360-tabular``, version 2::

    <store>/
      meta.json                 format, version, space, num_archs, created_by, source, groups (below)
      archs.npy                 (num_archs,) ASCII bytes (numpy 'S'): the architecture strings in index order
      <dataset>/<hp>/           one directory per group = (training set, hyperparameter key)
        archs.npy               (rows,) int32, sorted: the architectures with at least one run; row k holds archs[k]
        evaluated.npy           (seeds, rows) bool: a run exists
        train.loss.npy          (epochs, seeds, rows) float64
        train.acc1.npy          (epochs, seeds, rows) float64, % (Darcy: 1 - relative l2, a fraction)
        train.acc5.npy          (epochs, seeds, rows) float64
        train.time.npy          (epochs, seeds, rows) float64, seconds per epoch (NATS pseudo-times)
        train.metric.npy        optional: the task's NB360 metric (only where a run recorded one)
        train.time_total.npy    derived: running sum of train.time over epochs 0..e (NaN from a missing epoch on)
        <set>.loss.npy          per evaluation set, same shape; <set> is the file-name-safe form
        <set>.acc1.npy          of the set name (``files`` in the group's meta maps one to the other)
        <set>.time.npy, <set>.time_total.npy, <set>.metric.npy (optional)
        params.npy, flops.npy   (seeds, rows) float64, millions (M)
        latency.npy             (k, seeds, rows) float64, seconds; a run's latency list, NaN-padded
        latency_len.npy         (seeds, rows) int16: the length of that list, -1 where it was None
        <column>.nanvalue.npy   only where a source recorded NaN as a value (see below): bool, same shape

A group stores only its evaluated architectures (a 3-architecture sample takes kilobytes,
a complete NAS-Bench-201 group 15,625 rows). Columns are epoch-major, so one epoch of one
seed over all rows is one contiguous read. NaN means "not recorded" (a key absent from the
NATS dict); in the rare case that a source recorded NaN itself (a diverged run), the
column's ``nanvalue`` mask marks those entries, so that an export writes them back as NaN
values rather than dropping their keys (``nan_values`` in the group's meta lists such columns).
The running sums are added left to right in epoch order (``np.cumsum``), the very
additions a per-query sum would make, so ``*-all-time`` is one lookup at any epoch.

Every group entry of ``meta.json`` holds
``dataset, hp, epochs, seeds, rows, eval_sets`` (file order), ``columns`` (the per-epoch
value columns stored for ``train`` and for every evaluation set: the required ones plus any
of :data:`OPTIONAL_COLUMNS`), ``path``, ``files``, ``score`` (which column is the task
score, its name, unit and direction), ``arch_config`` and ``arch_keys`` (the NATS network
config; the ``arch_keys`` are filled with the architecture string), ``latency_k``,
``nan_values`` and ``nats`` (what an exact NATS export needs: ``seed_labels``, ``clear_net_done``).

A store is opened lazily: ``meta.json`` and ``archs.npy`` on open, each column with
``np.load(mmap_mode="r")`` on first use. It is written atomically: built in a hidden
directory beside the target, then renamed. Readers accept exactly version 2 (version 1,
with every column spanning all architectures, was never released).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nb360.errors import DataError
from nb360.tabular.schema import (
    DERIVED_COLUMNS,
    FORMAT,
    NAN,
    OPTIONAL_COLUMNS,
    VERSION,
    ScoreRule,
    column_stem,
    load_space,
)

__all__ = ["Group", "Store"]


class Group:
    """One (dataset, hp) group of an open store; columns are memory-mapped on first use.

    Columns have one row per evaluated architecture (:attr:`archs`); :attr:`row_of` maps an
    architecture index to its row (-1: no run).
    """

    def __init__(self, root: Path, meta: Mapping[str, Any], num_archs: int) -> None:
        self.meta = dict(meta)
        self.dataset: str = meta["dataset"]
        self.hp: str = meta["hp"]
        self.epochs: int = int(meta["epochs"])
        self.seeds: list[int] = [int(s) for s in meta["seeds"]]
        self.rows: int = int(meta["rows"])
        self.eval_sets: list[str] = list(meta["eval_sets"])
        self.train_columns: tuple[str, ...] = tuple(meta["columns"]["train"])
        self.eval_columns: tuple[str, ...] = tuple(meta["columns"]["eval"])
        self.files: dict[str, str] = dict(meta["files"])
        self.score = ScoreRule.from_dict(meta["score"])
        self.arch_config: dict[str, Any] | None = meta.get("arch_config")
        self.arch_keys: list[str] = list(meta.get("arch_keys", []))
        self.nats: dict[str, Any] = dict(meta.get("nats") or {})
        self.nan_values: list[str] = list(meta.get("nan_values") or [])
        self.directory = root / meta["path"]
        self.num_archs = num_archs
        self._columns: dict[str, np.ndarray] = {}
        self._row_of: np.ndarray | None = None

    def __repr__(self) -> str:
        return (
            f"Group({self.dataset!r}, hp={self.hp!r}, {self.rows} architectures, {self.epochs} epochs, "
            f"seeds {self.seeds}, sets {self.eval_sets})"
        )

    def file_stem(self, set_name: str, column: str) -> str:
        """``train.loss`` / ``<safe set>.acc1``: the file of a column."""
        return column_stem(self.files, set_name, column)

    def column(self, name: str) -> np.ndarray:
        """A column by file stem (``train.loss``, ``ori-test.acc1``, ``params``, ``evaluated``...), read-only."""
        arr = self._columns.get(name)
        if arr is None:
            path = self.directory / f"{name}.npy"
            try:
                mapped = np.load(path, mmap_mode="r", allow_pickle=False)
            except FileNotFoundError:
                raise DataError(
                    f"tabular store {self.directory.parent.parent}: missing column {path.name} of {self.dataset}/{self.hp}"
                ) from None
            except (OSError, ValueError) as err:
                raise DataError(f"tabular store: {path} is not a readable .npy file: {type(err).__name__}: {err}") from None
            arr = np.asarray(mapped)  # a plain ndarray view of the map: cheaper scalar indexing
            self._columns[name] = arr
        return arr

    def has(self, set_name: str, column: str) -> bool:
        """Whether ``column`` (``loss``, ``metric``, ``time_total``...) is stored for ``set_name`` (``"train"`` or a set)."""
        stored = self.train_columns if set_name == "train" else self.eval_columns
        return column in stored or (column in DERIVED_COLUMNS and DERIVED_COLUMNS[column] in stored)

    def series(self, set_name: str, column: str) -> np.ndarray:
        """``(epochs, seeds, rows)`` values of ``column`` on ``set_name``; all NaN for an optional column not stored."""
        if column in OPTIONAL_COLUMNS and not self.has(set_name, column):
            return np.broadcast_to(np.float64(NAN), (self.epochs, len(self.seeds), self.rows))
        return self.column(self.file_stem(set_name, column))

    @property
    def archs(self) -> np.ndarray:
        """``(rows,)`` int32: the architecture of every row, ascending."""
        return self.column("archs")

    @property
    def row_of(self) -> np.ndarray:
        """``(num_archs,)`` int32: the row of every architecture, -1 where it has no run (read-only)."""
        if self._row_of is None:
            row_of = np.full(self.num_archs, -1, dtype=np.int32)
            row_of[self.archs] = np.arange(self.rows, dtype=np.int32)
            row_of.flags.writeable = False
            self._row_of = row_of
        return self._row_of

    @property
    def evaluated(self) -> np.ndarray:
        """``(seeds, rows)`` bool: which runs exist."""
        return self.column("evaluated")

    def scatter(self, values: np.ndarray, fill: Any = NAN) -> np.ndarray:
        """``(..., rows) -> (..., num_archs)``: per-row values placed at their architectures, ``fill`` elsewhere (a new array)."""
        values = np.asarray(values)
        if self.rows == self.num_archs:  # a complete group: rows are the architectures in order
            return values.copy()
        out = np.full(values.shape[:-1] + (self.num_archs,), fill, dtype=values.dtype)
        out[..., self.archs] = values
        return out

    def expected_shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        E, S, R = self.epochs, len(self.seeds), self.rows
        shapes = {
            "archs": ((R,), "int32"),
            "evaluated": ((S, R), "bool"),
            "params": ((S, R), "float64"),
            "flops": ((S, R), "float64"),
        }
        shapes["latency"] = ((int(self.meta.get("latency_k", 1)), S, R), "float64")
        shapes["latency_len"] = ((S, R), "int16")
        for set_name in ["train", *self.eval_sets]:
            for c in [*(self.train_columns if set_name == "train" else self.eval_columns), *DERIVED_COLUMNS]:
                shapes[self.file_stem(set_name, c)] = ((E, S, R), "float64")
        for c in self.nan_values:
            set_name, column = c.rsplit(".", 1)
            shapes[f"{self.file_stem(set_name, column)}.nanvalue"] = ((E, S, R), "bool")
        return shapes

    def recorded_nan(self, set_name: str, column: str) -> np.ndarray | None:
        """The ``nanvalue`` mask of a column (NaNs the source recorded as values), or None if it has none."""
        if f"{set_name}.{column}" not in self.nan_values:
            return None
        return self.column(f"{self.file_stem(set_name, column)}.nanvalue")


class Store:
    """An open ``nb360-tabular`` store (read-only). Use :meth:`open`."""

    def __init__(self, path: Path, meta: dict[str, Any], space: Any) -> None:
        self.path = path
        self.meta = meta
        self.space = space
        self.num_archs = int(meta["num_archs"])
        self.groups: dict[tuple[str, str], Group] = {}
        for g in meta["groups"]:
            group = Group(path, g, self.num_archs)
            self.groups[(group.dataset, group.hp)] = group

    @classmethod
    def open(cls, path: str | os.PathLike[str], check_archs: bool = True) -> Store:
        path = Path(path)
        meta_path = path / "meta.json"
        if not meta_path.is_file():
            hint = " (a NATS file? import it with nb360.tabular.import_nats)" if path.name.endswith(".pbz2") else ""
            raise DataError(f"{path} is not an {FORMAT} store: no meta.json{hint}")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"{meta_path} is not readable JSON: {err}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(
                f"{path} is not an {FORMAT} store (format {meta.get('format') if isinstance(meta, dict) else None!r})"
            )
        version = meta.get("version")
        if isinstance(version, int) and version > VERSION:
            raise DataError(f"{path}: store format version {version} is newer than this nb360 reads ({VERSION}); upgrade nb360")
        if version != VERSION:
            raise DataError(
                f"{path}: store format version {version!r} is an unreleased earlier layout that this nb360 does not read "
                f"(it reads version {VERSION}); rebuild the store from its source "
                "(nb360.tabular.import_nats, or a precompute merge)"
            )
        try:
            space = load_space(meta["space"])
            store = cls(path, meta, space)
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{meta_path}: malformed store metadata ({type(err).__name__}: {err})") from None
        if store.num_archs != len(space):
            raise DataError(f"{path}: {store.num_archs} architectures, but space {space.name} has {len(space)}")
        if check_archs:
            store.check_archs()
        return store

    def check_archs(self) -> None:
        """``archs.npy`` must list the space's architectures in the space's index order."""
        try:
            archs = np.load(self.path / "archs.npy", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"{self.path}/archs.npy is not readable: {type(err).__name__}: {err}") from None
        if (
            archs.shape != (self.num_archs,)
            or archs.dtype.kind != "S"
            or archs.tolist() != [a.encode("ascii") for a in self.space.archs]
        ):
            raise DataError(
                f"{self.path}/archs.npy does not list the {self.num_archs} architectures of space {self.space.name} "
                "in its index order; the store is corrupt or was written for another ordering"
            )

    def verify(self) -> list[str]:
        """Check every column's shape and dtype and every group's rows; one ``ok`` line per group (raises on a problem)."""
        self.check_archs()
        lines = []
        for group in self.groups.values():
            for name, (shape, dtype) in group.expected_shapes().items():
                arr = group.column(name)
                if arr.shape != shape or str(arr.dtype) != dtype:
                    raise DataError(
                        f"{group.directory}/{name}.npy: shape {arr.shape} {arr.dtype}, expected {shape} {dtype}; "
                        "the store is corrupt"
                    )
            archs = group.archs
            if len(archs) and (archs[0] < 0 or archs[-1] >= self.num_archs or np.any(np.diff(archs) <= 0)):
                raise DataError(f"{group.directory}/archs.npy: not ascending architecture indexes in 0..{self.num_archs - 1}")
            if not group.evaluated.any(axis=0).all():
                raise DataError(f"{group.directory}: a row without any run; the store is corrupt")
            lines.append(
                f"ok {group.dataset}/{group.hp}: {group.rows}/{self.num_archs} architectures, {group.epochs} epochs, "
                f"seeds {group.seeds}, eval sets {group.eval_sets}"
            )
        return lines

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(d for d, _ in self.groups))

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r}, space={self.space.name}, groups={[f'{d}/{h}' for d, h in self.groups]})"
