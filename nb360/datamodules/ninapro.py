"""NinaPro DB5 (2-D point, 18 hand gestures): windows of 16-channel sEMG, 52 time steps each.

Reference protocol (NB ``backbone/data_utils/load_data.py::load_ninapro_data``): the files
``ninapro_{train,val,test}.npy`` hold windows of shape (N, 52, 16) (time, channel) and
``label_{train,val,test}.npy`` their gesture labels 0..17. Each window is transposed to
(16, 52) and given a channel axis: the network sees a (1, 16, 52) image. No
normalisation, no augmentation. Search split: train (2,638) -> val (659); final split:
train + val (3,297) -> test (659).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from nb360.datamodules.base import TaskDataModule, TensorDictDataset
from nb360.datamodules.common import array_summary, class_labels
from nb360.safe_pickle import load_npy
from nb360.datamodules.sources import RemoteFile
from nb360.errors import DataError
from nb360.tasks import Reference, TaskSpec, register_task

__all__ = ["NinaProDataModule"]

PARTS = ("train", "val", "test")


def data_name(part: str) -> str:
    return f"ninapro_{part}.npy"


def label_name(part: str) -> str:
    return f"label_{part}.npy"


class NinaProDataModule(TaskDataModule):
    """NinaPro DB5 windows from the reference ``.npy`` files (read without unpickling)."""

    task = "ninapro"
    files = tuple(RemoteFile(name, s3_key=f"ninapro/{name}") for part in PARTS for name in (data_name(part), label_name(part)))

    @property
    def window_shape(self) -> tuple[int, int]:
        """(time steps, channels) of a stored window: the network's (1, channels, time) input, transposed."""
        _, channels, steps = self.spec.input_shape
        return steps, channels

    def _windows(self, path: Path, mmap: bool = False) -> np.ndarray:
        data, (steps, channels) = load_npy(path, mmap=mmap), self.window_shape
        numeric = isinstance(data, np.ndarray) and data.dtype.kind in "iuf"
        if not numeric or data.ndim != 3 or data.shape[1:] != (steps, channels):
            raise DataError(f"{path}: expected numeric windows of shape (N, {steps}, {channels}), found {array_summary(data)}")
        return data

    def _labels(self, path: Path) -> np.ndarray:
        return class_labels(load_npy(path), path, self.spec.num_outputs)

    def _part(self, part: str) -> dict[str, torch.Tensor]:
        """One part: ``x`` (N, 1, channels, time) float32 windows and ``y`` int64 labels."""
        data_path, label_path = self.root / data_name(part), self.root / label_name(part)
        data, labels = self._windows(data_path), self._labels(label_path)
        if len(labels) != len(data):
            raise DataError(f"{label_path}: {len(labels)} labels for the {len(data)} windows of {data_path.name}")
        x = np.ascontiguousarray(data.transpose(0, 2, 1)[:, None], dtype=np.float32)
        if not np.isfinite(x).all():
            raise DataError(f"{data_path}: windows contain NaN or infinite values")
        return {"x": torch.from_numpy(x), "y": torch.from_numpy(labels)}

    def load(self) -> Mapping[str, TensorDictDataset]:
        train, val = self._part("train"), self._part("val")
        if self.split == "search":
            return {"train": TensorDictDataset(**train), "val": TensorDictDataset(**val)}
        merged = {key: torch.cat([train[key], val[key]]) for key in train}  # train then val, as the reference's ConcatDataset
        return {"train": TensorDictDataset(**merged), "test": TensorDictDataset(**self._part("test"))}

    def describe_file(self, path: Path) -> str:
        if path.name.startswith("label_"):
            labels = self._labels(path)
            return f"{len(labels)} labels, {len(np.unique(labels))} distinct classes"
        return f"windows {array_summary(self._windows(path, mmap=True))}"

    @classmethod
    def write_fixture(cls, root: Path, n: int, seed: int = 0) -> list[Path]:
        """``n`` random float32 windows (N, 52, 16) and int64 labels 0..17 per part, saved with ``np.save``."""
        rng = np.random.default_rng(seed)
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)
        paths = []
        for part in PARTS:
            np.save(root / data_name(part), rng.standard_normal((n, 52, 16)).astype(np.float32))
            np.save(root / label_name(part), rng.integers(0, 18, n).astype(np.int64))
            paths += [root / data_name(part), root / label_name(part)]
        return paths


SPEC = register_task(
    TaskSpec(
        name="ninapro",
        title="NinaPro DB5",
        dims=2,
        kind="point",
        input_shape=(1, 16, 52),
        num_outputs=18,
        loss="cross_entropy",
        metric="error",
        reference=Reference(lr=0.1, batch_size=128),
        aliases=("ninapro_db5", "db5"),
        datamodule=NinaProDataModule,
    )
)
