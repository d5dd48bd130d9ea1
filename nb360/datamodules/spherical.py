"""Spherical CIFAR-100 (2-D point classification, 100 classes): CIFAR-100 projected onto the sphere, 3 x 60 x 60.

Reference protocol (NB ``backbone/data_utils/load_data.py::load_scifar100_data``):
``s2_cifar100.gz`` is a gzip-compressed pickle of ``{"train": {"images", "labels"},
"test": {...}}``; images are cast to float32 without any normalisation or augmentation,
labels to int64. Search split: the first ``int(0.8 N)`` training images (40,000) ->
the rest (10,000); final split: all 50,000 -> the 10,000 test images.

The pickle is read through the restricted unpickler. Images stored as 8-bit integers
stay so in memory (540 MB instead of 2.2 GB for the training set) and each batch is
cast to float32, which gives the same values as the reference's up-front cast.

The reference WRN ends with ``avg_pool2d(8)`` on a 15 x 15 map, which averages only the
top-left 8 x 8 window; the spec's ``network_options`` keep that (``pool: 8``), and
``--model.network_options '{"pool": "global"}'`` pools the whole map instead.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nb360.datamodules.base import TaskDataModule, TensorDictDataset
from nb360.datamodules.common import fixture_sizes, split_point
from nb360.safe_pickle import load_pickle
from nb360.datamodules.sources import RemoteFile
from nb360.errors import DataError, UsageError
from nb360.io import atomic_path
from nb360.tasks import Reference, TaskSpec, register_task

__all__ = ["SphericalDataModule", "float_images", "read_file", "FILE"]

FILE = "s2_cifar100.gz"
PARTS = ("train", "test")
COMPACT = (np.dtype(np.uint8), np.dtype(np.int8))  # kept as stored, cast per batch; every other dtype becomes float32 once


def float_images(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """Images in a compact stored dtype, cast to float32 per batch (the reference's ``astype(np.float32)``)."""
    return {**batch, "x": batch["x"].float()}


def _check_part(path: Path, name: str, part: Any, shape: tuple[int, ...], classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One part's images (compact or float32) and int64 labels, after the checks the reference's casts would skip."""
    if not isinstance(part, dict) or not {"images", "labels"} <= set(part):
        raise DataError(f"{path}: {name!r} must be a dict with 'images' and 'labels'")
    images, labels = part["images"], part["labels"]
    if not isinstance(images, np.ndarray) or images.shape[1:] != shape or images.dtype.kind not in "biuf" or not len(images):
        found = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        want = ", ".join(map(str, shape))
        raise DataError(f"{path}: {name} images must be a numeric array (N, {want}) with N > 0, found {found}")
    if not isinstance(labels, np.ndarray) or labels.shape != (len(images),) or labels.dtype.kind not in "iuf":
        found = f"{labels.dtype} {labels.shape}" if isinstance(labels, np.ndarray) else type(labels).__name__
        raise DataError(f"{path}: {name} labels must be a numeric array ({len(images)},), found {found}")
    as_int = labels.astype(np.int64)
    if not np.array_equal(as_int, labels) or as_int.min() < 0 or as_int.max() >= classes:
        found = f"{labels.min()}..{labels.max()}"
        raise DataError(f"{path}: {name} labels must be whole numbers in 0..{classes - 1}, found values in {found}")
    return (images if images.dtype in COMPACT else images.astype(np.float32, copy=False)), as_int


def read_file(path: Path, shape: tuple[int, ...], classes: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train": (images, labels), "test": (...)}`` from ``s2_cifar100.gz``, checked; images compact or float32."""
    if not path.is_file():
        raise DataError(f"{path} is missing; fetch it with `python -m nb360.data download --task spherical --root {path.parent}`")
    with gzip.open(path, "rb") as stream:
        content = load_pickle(stream, source=str(path))
    if not isinstance(content, dict) or not set(PARTS) <= set(content):
        found = list(content) if isinstance(content, dict) else type(content).__name__
        raise DataError(f"{path}: expected a pickled dict with 'train' and 'test', found {found}")
    return {name: _check_part(path, name, content[name], shape, classes) for name in PARTS}


class SphericalDataModule(TaskDataModule):
    """Spherical CIFAR-100 from ``s2_cifar100.gz`` (S3 key ``spherical/s2_cifar100.gz``).

    Args:
        val_fraction: the last ``val_fraction`` of the training images form the search split's validation set (reference 0.2).
        **kwargs: the common options of :class:`~nb360.datamodules.base.TaskDataModule`.
    """

    task = "spherical"
    files = (RemoteFile(FILE, s3_key=f"spherical/{FILE}"),)

    def __init__(self, val_fraction: float = 0.2, **kwargs: Any) -> None:
        if not 0 < val_fraction < 1:
            raise UsageError(f"spherical: val_fraction must lie strictly between 0 and 1, got {val_fraction}")
        self.val_fraction = val_fraction
        super().__init__(**kwargs)

    def _read(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return read_file(self.root / FILE, self.spec.input_shape, self.spec.num_outputs)

    def load(self) -> Mapping[str, TensorDictDataset]:
        parts = {name: (torch.from_numpy(x), torch.from_numpy(y)) for name, (x, y) in self._read().items()}
        images, labels = parts["train"]
        if self.split == "search":
            n_fit = split_point(len(images), self.val_fraction, str(self.root / FILE))
            return {
                "train": TensorDictDataset(float_images, x=images[:n_fit], y=labels[:n_fit]),
                "val": TensorDictDataset(float_images, x=images[n_fit:], y=labels[n_fit:]),
            }
        test_images, test_labels = parts["test"]
        return {"train": TensorDictDataset(float_images, x=images, y=labels), "test": TensorDictDataset(float_images, x=test_images, y=test_labels)}

    def describe_file(self, path: Path) -> str:
        parts = read_file(path, self.spec.input_shape, self.spec.num_outputs)
        shape = "x".join(map(str, self.spec.input_shape))
        return "gzip pickle, " + ", ".join(
            f"{name} {len(x)} images {shape} {x.dtype}, labels {y.min()}..{y.max()}" for name, (x, y) in parts.items()
        )

    @classmethod
    def write_fixture(cls, root: Path, n: int, seed: int = 0) -> list[Path]:
        """``s2_cifar100.gz``: a gzip pickle of float32 images (N, 3, 60, 60) in [0, 255), int64 labels (8: train 10, test 4)."""
        rng = np.random.default_rng(seed)
        content = {
            part: {
                "images": (rng.random((size, 3, 60, 60)) * 255).astype(np.float32),
                "labels": rng.integers(0, 100, size).astype(np.int64),
            }
            for part, size in fixture_sizes(n).items()
        }
        path = Path(root) / FILE
        with atomic_path(path) as tmp, open(tmp, "wb") as raw, gzip.GzipFile(filename=FILE, fileobj=raw, mode="wb", mtime=0) as f:
            pickle.dump(content, f)
        return [path]


SPEC = register_task(
    TaskSpec(
        name="spherical",
        title="Spherical CIFAR-100",
        dims=2,
        kind="point",
        input_shape=(3, 60, 60),
        num_outputs=100,
        loss="cross_entropy",
        metric="error",
        reference=Reference(lr=0.1, batch_size=128),
        aliases=("scifar100", "s2cifar100", "spherical_cifar100"),
        # the reference WRN pools a fixed 8x8 window of the 15x15 map (its top-left corner)
        network_options={"wrn": {"pool": 8}},
        datamodule=SphericalDataModule,
    )
)
