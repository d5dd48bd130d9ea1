"""Satellite (1-D point, 24 land-cover classes): yearly series of 46 satellite observations.

Reference protocol (NB ``backbone_1d/data_utils/load_data.py::load_satellite_data``): each
of ``satellite_train.npy`` (900,000 series) and ``satellite_test.npy`` (100,000) holds a
pickled dict ``{"data": (N, 46), "label": 1..24}`` in a 0-d object array. Labels are
shifted to 0..23 and every series is z-normalised over its own 46 values (mean and
population std of the row); the network sees (1, 46). Search split: the first 800,000
training series -> the last 100,000; final split: all 900,000 -> test.

A constant series has std 0, which the reference turns into a series of NaN. nb360 sets
such a series to zeros instead (its values minus its mean) and warns how many it found.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nb360.datamodules.base import TaskDataModule, TensorDictDataset
from nb360.datamodules.common import array_summary, class_labels
from nb360.safe_pickle import load_npy
from nb360.datamodules.sources import RemoteFile
from nb360.errors import DataError
from nb360.tasks import Reference, TaskSpec, register_task

__all__ = ["SatelliteDataModule", "standardize_rows"]

TRAIN, TEST = "satellite_train.npy", "satellite_test.npy"
_CHUNK = 1 << 16  # rows normalised at a time: bounds the float64 temporaries to a few tens of MB


def standardize_rows(data: np.ndarray) -> tuple[np.ndarray, int]:
    """Z-normalise every row over its values, as float32; constant rows become zeros.

    The arithmetic runs in the data's floating dtype (float64 for integers), as the
    reference's numpy expression does, chunk by chunk to keep memory low. Returns the
    normalised rows and the number of constant rows.
    """
    out = np.empty(data.shape, dtype=np.float32)
    work = data.dtype if data.dtype.kind == "f" else np.dtype(np.float64)
    constant = 0
    for start in range(0, len(data), _CHUNK):
        rows = data[start : start + _CHUNK].astype(work, copy=False)
        flat = rows.max(axis=1, keepdims=True) == rows.min(axis=1, keepdims=True)
        std = np.where(flat, 1, rows.std(axis=1, keepdims=True))
        out[start : start + _CHUNK] = np.where(flat, 0, (rows - rows.mean(axis=1, keepdims=True)) / std)
        constant += int(flat.sum())
    return out, constant


class SatelliteDataModule(TaskDataModule):
    """Satellite series from the reference pickled-dict ``.npy`` files (through the restricted unpickler).

    Args:
        n_val: the last ``n_val`` training series form the validation set of the search split
            (reference 100,000, the size of the test set).
        **kwargs: the common options of :class:`~nb360.datamodules.base.TaskDataModule`.
    """

    task = "satellite"
    files = (RemoteFile(TRAIN, s3_key=f"satellite/{TRAIN}"), RemoteFile(TEST, s3_key=f"satellite/{TEST}"))

    def __init__(self, n_val: int = 100_000, **kwargs: Any) -> None:
        self.n_val = n_val
        super().__init__(**kwargs)

    def _read(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """The file's raw series (N, length) and its labels as class indices 0..23, checked."""
        record = load_npy(path)
        if not isinstance(record, dict) or not {"data", "label"} <= set(record):
            keys = sorted(map(str, record)) if isinstance(record, dict) else None
            found = keys or array_summary(record)
            raise DataError(f"{path}: expected a pickled dict with keys 'data' and 'label', found {found}")
        data, length = record["data"], self.spec.input_shape[-1]
        if not isinstance(data, np.ndarray) or data.dtype.kind not in "iuf" or data.ndim != 2 or data.shape[1] != length:
            raise DataError(f"{path}: expected 'data' of numeric series of shape (N, {length}), found {array_summary(data)}")
        if data.dtype.kind == "f" and not np.isfinite(data).all():
            raise DataError(f"{path}: 'data' contains NaN or infinite values")
        labels = class_labels(record["label"], path, self.spec.num_outputs, first=1)
        if len(labels) != len(data):
            raise DataError(f"{path}: {len(labels)} labels for {len(data)} series")
        return data, labels

    def _dataset(self, name: str) -> TensorDictDataset:
        path = self.root / name
        data, labels = self._read(path)
        x, constant = standardize_rows(data)
        if constant:
            warnings.warn(f"{path}: {constant} constant series set to zero (std 0: the reference would give NaN)", stacklevel=2)
        return TensorDictDataset(x=torch.from_numpy(x)[:, None], y=torch.from_numpy(labels))

    def load(self) -> Mapping[str, TensorDictDataset]:
        train = self._dataset(TRAIN)
        if self.split == "final":
            return {"train": train, "test": self._dataset(TEST)}
        if not 0 < self.n_val < len(train):
            raise DataError(f"satellite: need 0 < n_val < {len(train)} (the series in {TRAIN}), got n_val={self.n_val}")
        x, y = train.tensors["x"], train.tensors["y"]
        cut = len(train) - self.n_val
        return {"train": TensorDictDataset(x=x[:cut], y=y[:cut]), "val": TensorDictDataset(x=x[cut:], y=y[cut:])}

    def describe_file(self, path: Path) -> str:
        data, labels = self._read(path)
        return f"pickled dict: data {array_summary(data)}, {len(np.unique(labels))} distinct labels in 1..{self.spec.num_outputs}"

    @classmethod
    def write_fixture(cls, root: Path, n: int, seed: int = 0) -> list[Path]:
        """Pickled dicts as in the bucket: ``2 n`` training series (``n`` for validation) and ``n`` test series.

        Series are float64 seasonal curves with noise (never constant), labels int64 1..24.
        """
        rng = np.random.default_rng(seed)
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        t = np.linspace(0, 2 * np.pi, 46)
        paths = []
        for name, count in ((TRAIN, 2 * n), (TEST, n)):
            data = 1000 + 500 * np.sin(t + rng.uniform(0, 2 * np.pi, (count, 1))) + 50 * rng.standard_normal((count, 46))
            record = {"data": data, "label": rng.integers(1, 25, count).astype(np.int64)}
            np.save(root / name, np.array(record, dtype=object), allow_pickle=True)
            paths.append(root / name)
        return paths

    @classmethod
    def fixture_args(cls, n: int) -> dict[str, int]:
        return {"n_val": n}


SPEC = register_task(
    TaskSpec(
        name="satellite",
        title="Satellite",
        dims=1,
        kind="point",
        input_shape=(1, 46),
        num_outputs=24,
        loss="cross_entropy",
        metric="error",
        reference=Reference(lr=0.1, batch_size=4096),
        aliases=("satellite_ts",),
        datamodule=SatelliteDataModule,
    )
)
