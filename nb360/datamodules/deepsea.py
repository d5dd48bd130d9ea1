"""DeepSEA (1-D point, 36 binary chromatin-profile labels): one-hot DNA sequences of 1,000 bases.

Reference protocol (NB ``backbone_1d/data_utils/load_data.py::load_deepsea_data``):
``deepsea_filtered.npz`` holds ``x_{train,val,test}`` one-hot sequences (N, 1000, 4) and
``y_{train,val,test}`` binary labels (N, 36). Sequences are permuted to (4, 1000) and cast
to float32; labels are cast to float for the BCE loss. Search split: train (71,753) ->
val (2,490); final split: train -> test (149,400). Validation is never merged into
training. The metric is 1 - the macro AUROC over the 36 labels.

Sequences stay in memory in their stored one-byte dtype (about 0.9 GB for train + test
instead of 3.6 GB as float32); each batch is gathered, permuted and cast on its own.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from nb360.datamodules.base import TaskDataModule, TensorDictDataset
from nb360.safe_pickle import read_npy_header
from nb360.datamodules.sources import RemoteFile
from nb360.errors import DataError
from nb360.tasks import Reference, TaskSpec, register_task

__all__ = ["DeepSEADataModule", "as_network_input"]

FILE = "deepsea_filtered.npz"
PARTS = ("train", "val", "test")


def as_network_input(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """A gathered batch of compact (B, length, 4) sequences -> float32 (B, 4, length) inputs and float32 labels."""
    return {"x": batch["x"].to(torch.float32).transpose(-1, -2).contiguous(), "y": batch["y"].to(torch.float32)}


def _compact(array: np.ndarray) -> np.ndarray:
    """The in-memory form of values checked to lie in [0, 1]: bool and uint8 as stored, other integers as uint8 (exact).

    Floats become float32, the reference's own cast: a float file may hold fractions (0.25 for an unknown base).
    """
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    if array.dtype.kind in "iu":
        return array.astype(np.uint8, copy=False)
    return array


class DeepSEADataModule(TaskDataModule):
    """DeepSEA sequences and labels from the reference ``.npz`` file (read without pickle)."""

    task = "deepsea"
    files = (RemoteFile(FILE, s3_key=f"deepsea/{FILE}"),)

    def _check_layout(self, path: Path, arrays: Mapping[str, tuple[tuple[int, ...], np.dtype]]) -> dict[str, int]:
        """Check the keys, shapes and dtypes of the parts in ``arrays`` (name -> (shape, dtype)); return their sizes."""
        channels, length = self.spec.input_shape
        sizes = {}
        for part in PARTS:
            keys = (f"x_{part}", f"y_{part}")
            if not set(keys) <= set(arrays):
                raise DataError(f"{path}: expected arrays x_{part} and y_{part}, found {', '.join(sorted(arrays)) or 'none'}")
            (x_shape, x_dtype), (y_shape, y_dtype) = arrays[keys[0]], arrays[keys[1]]
            n = x_shape[0] if x_shape else 0
            if len(x_shape) != 3 or x_shape[1:] != (length, channels) or x_dtype.kind not in "biuf":
                want = f"numeric one-hot sequences (N, {length}, {channels})"
                raise DataError(f"{path}: x_{part} must be {want}, found {x_dtype} {x_shape}")
            if y_shape != (n, self.spec.num_outputs) or y_dtype.kind not in "biuf":
                want = f"numeric labels ({n}, {self.spec.num_outputs})"
                raise DataError(f"{path}: y_{part} must be {want}, found {y_dtype} {y_shape}")
            sizes[part] = n
        return sizes

    def _part(self, path: Path, npz: np.lib.npyio.NpzFile, part: str) -> TensorDictDataset:
        x, y = npz[f"x_{part}"], npz[f"y_{part}"]
        if x.size and (x.min() < 0 or x.max() > 1):
            raise DataError(f"{path}: x_{part} holds values outside [0, 1], not a one-hot encoding")
        if not np.isin(y, (0, 1)).all():
            raise DataError(f"{path}: y_{part} holds values other than 0 and 1")
        y = torch.from_numpy(y.astype(np.uint8, copy=False))
        return TensorDictDataset(as_network_input, x=torch.from_numpy(_compact(x)), y=y)

    def load(self) -> Mapping[str, TensorDictDataset]:
        path = self.root / FILE
        evaluated = "val" if self.split == "search" else "test"
        try:
            with np.load(path, allow_pickle=False) as npz:
                self._check_layout(path, {key[: -len(".npy")]: _member_header(npz.zip, key) for key in npz.zip.namelist()})
                return {"train": self._part(path, npz, "train"), evaluated: self._part(path, npz, evaluated)}
        except (DataError, MemoryError):
            raise
        except Exception as err:
            raise DataError(f"{path}: not a readable .npz file without pickle: {type(err).__name__}: {err}") from None

    def describe_file(self, path: Path) -> str:
        """Reads only the member headers: keys, shapes and dtypes."""
        try:
            with zipfile.ZipFile(path) as archive:
                arrays = {name[: -len(".npy")]: _member_header(archive, name) for name in archive.namelist()}
        except (DataError, MemoryError):
            raise
        except Exception as err:
            raise DataError(f"{path}: not a readable .npz file: {type(err).__name__}: {err}") from None
        sizes = ", ".join(f"{part} {n}" for part, n in self._check_layout(path, arrays).items())
        return f"npz: {sizes} sequences, x {arrays['x_train'][1]}, y {arrays['y_train'][1]}"

    @classmethod
    def write_fixture(cls, root: Path, n: int, seed: int = 0) -> list[Path]:
        """``n`` uint8 one-hot sequences (N, 1000, 4) and uint8 labels (N, 36) per part, saved with ``np.savez``.

        Every label has both classes in every part (``n >= 2``), so each label's AUROC is defined.
        """
        rng = np.random.default_rng(seed)
        arrays = {}
        for part in PARTS:
            arrays[f"x_{part}"] = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, (n, 1000))]
            positives = rng.integers(1, n, 36)  # 1..n-1 positives per label
            arrays[f"y_{part}"] = (rng.random((n, 36)).argsort(axis=0).argsort(axis=0) < positives).astype(np.uint8)
        path = Path(root) / FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
        return [path]


def _member_header(archive: zipfile.ZipFile, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one ``.npy`` member of an ``.npz``, from its header alone."""
    if not name.endswith(".npy"):
        raise DataError(f"{archive.filename}: unexpected member {name} (an .npz holds .npy files only)")
    with archive.open(name) as f:
        shape, _, dtype = read_npy_header(f, f"{archive.filename}: member {name}")
    return shape, dtype


SPEC = register_task(
    TaskSpec(
        name="deepsea",
        title="DeepSEA",
        dims=1,
        kind="point",
        input_shape=(4, 1000),
        num_outputs=36,
        loss="bce_with_logits",
        metric="one_minus_auroc",
        reference=Reference(lr=0.1, batch_size=256),
        aliases=("deep_sea",),
        datamodule=DeepSEADataModule,
    )
)
