"""CIFAR-100 (2-D point classification, 100 classes) from the official ``cifar-100-python.tar.gz``.

Reference protocol (NB ``backbone/data_utils/load_data.py``, through torchvision's
``CIFAR100``): the 50,000 training images split 40,000 / 10,000 in file order for the
search split, all 50,000 -> the official 10,000 test images for the final split. Pixels
are scaled to [0, 1] and normalised per channel with the reference's CIFAR-100 mean and
std. Training images get RandomCrop(32, padding 4), a horizontal flip with p = 0.5, the
normalisation, then Cutout 16 x 16 (after normalisation, so the square is 0 in the
normalised image); validation and test images are only normalised.

The images stay uint8 in memory (150 MB for the training set) and every batch is
converted and augmented with vectorised torch ops. The archive's pickles are Python 2
pickles with byte-string keys; they are read through the restricted unpickler.
"""

from __future__ import annotations

import gzip
import io
import pickle
import tarfile
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nb360.datamodules.base import TaskDataModule, TensorDictDataset
from nb360.datamodules.common import fixture_sizes, split_point
from nb360.safe_pickle import load_pickle
from nb360.datamodules.sources import RemoteFile
from nb360.errors import DataError, UsageError
from nb360.io import atomic_path
from nb360.tasks import Reference, TaskSpec, register_task

__all__ = [
    "CIFAR100DataModule",
    "training_view",
    "evaluation_view",
    "random_crop",
    "random_flip",
    "normalise",
    "cutout",
    "MEAN",
    "STD",
]

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
OFFICIAL_MD5 = "eb9058c3a382ffc7106e4002c42a8d85"  # published with the archive (also torchvision's check)
ARCHIVE = "cifar-100-python.tar.gz"
FOLDER = "cifar-100-python"
PARTS = ("train", "test")
SIDE = 32
MEAN = (0.5071, 0.4867, 0.4408)
STD = (0.2675, 0.2565, 0.2761)


# ----------------------------------------------------------------- batch transforms
def random_crop(images: Tensor, padding: int) -> Tensor:
    """RandomCrop(size, padding) per image: zero-pad every side, cut the original size at a uniform offset in [0, 2 * padding]."""
    n, _, h, w = images.shape
    windows = F.pad(images, (padding,) * 4).unfold(2, h, 1).unfold(3, w, 1)  # a view: (n, c, 2p + 1, 2p + 1, h, w)
    top = torch.randint(0, 2 * padding + 1, (n,))
    left = torch.randint(0, 2 * padding + 1, (n,))
    return windows[torch.arange(n), :, top, left]


def random_flip(images: Tensor) -> Tensor:
    """Mirror each image left-right with probability 0.5."""
    flip = torch.rand(len(images)) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def normalise(images: Tensor) -> Tensor:
    """uint8 -> float32 in [0, 1] (ToTensor), then ``(x - mean) / std`` per channel (Normalize)."""
    mean = torch.tensor(MEAN).view(3, 1, 1)
    std = torch.tensor(STD).view(3, 1, 1)
    return (images.float() / 255 - mean) / std


def cutout(images: Tensor, length: int) -> Tensor:
    """Zero rows ``[y - length // 2, y + length // 2)`` x the same columns around a uniform centre pixel, clipped."""
    n, _, h, w = images.shape
    half = length // 2
    centre_y = torch.randint(0, h, (n, 1))
    centre_x = torch.randint(0, w, (n, 1))
    rows = torch.arange(h)
    cols = torch.arange(w)
    in_rows = (rows >= centre_y - half) & (rows < centre_y + half)
    in_cols = (cols >= centre_x - half) & (cols < centre_x + half)
    square = in_rows[:, :, None] & in_cols[:, None, :]
    return images.masked_fill(square[:, None], 0.0)


def training_view(batch: dict[str, Tensor], crop_padding: int, cutout_size: int) -> dict[str, Tensor]:
    """A gathered batch of uint8 images, augmented as the reference trains: crop, flip, normalise, Cutout.

    Augmentation draws from torch's global generator, which Lightning seeds (per worker
    process too), so a run is reproducible from its seed.
    """
    x = normalise(random_flip(random_crop(batch["x"], crop_padding)))
    return {"x": cutout(x, cutout_size), "y": batch["y"]}


def evaluation_view(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """A gathered batch of uint8 images, normalised only."""
    return {"x": normalise(batch["x"]), "y": batch["y"]}


# ----------------------------------------------------------------- files
def _field(record: dict, key: str, path: Path) -> Any:
    """``record[b"key"]`` (Python 2 pickles read with ``encoding="bytes"``), or ``record["key"]`` from a Python 3 pickle."""
    for name in (key.encode(), key):
        if name in record:
            return record[name]
    raise DataError(f"{path}: no key b'{key}' (found {list(record)}); not a CIFAR-100 python batch file")


def read_part(path: Path, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch file (``train`` or ``test``): images (N, 3, 32, 32) uint8 and fine labels (N,) int64, checked."""
    if not path.is_file():
        root = path.parent.parent
        raise DataError(f"{path} is missing; fetch the data with `python -m nb360.data download --task cifar100 --root {root}`")
    record = load_pickle(path, encoding="bytes")
    if not isinstance(record, dict):
        raise DataError(f"{path}: expected a pickled dict, found {type(record).__name__}")
    data, labels = _field(record, "data", path), np.asarray(_field(record, "fine_labels", path))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.shape[1:] != (3 * SIDE * SIDE,) or not len(data):
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: expected b'data' as uint8 (N, {3 * SIDE * SIDE}) with N > 0, found {found}")
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: expected {len(data)} integer b'fine_labels', found {labels.dtype} {labels.shape}")
    if labels.min() < 0 or labels.max() >= classes:
        raise DataError(f"{path}: fine labels must lie in 0..{classes - 1}, found {labels.min()}..{labels.max()}")
    return data.reshape(-1, 3, SIDE, SIDE), labels.astype(np.int64)


class _Python2Pickler(pickle._Pickler):
    """Writes pickles as Python 2's cPickle did for the official files: protocol 2, 8-bit strings, numpy 1 module names.

    Read back with ``encoding="bytes"``, every string (keys included) is ``bytes``, as with the real files.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_string8(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + len(data).to_bytes(4, "little") + data)
        self.memoize(obj)

    dispatch[str] = save_string8
    dispatch[bytes] = save_string8

    def save_global(self, obj: Any, name: str | None = None) -> None:
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode())
        self.memoize(obj)


def _python2_pickle(obj: Any) -> bytes:
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


class CIFAR100DataModule(TaskDataModule):
    """CIFAR-100 from ``cifar-100-python.tar.gz`` (downloaded from ``archive_url``) or an already unpacked ``cifar-100-python/``.

    Args:
        val_fraction: the last ``val_fraction`` of the training file is the search split's validation set (reference 0.2).
        archive_url: where the archive is downloaded from (default: the official Toronto URL).
        crop_padding: zero padding of the random crop (reference 4; 0 disables the crop).
        cutout: side of the Cutout square (reference 16; 0 disables Cutout).
        **kwargs: the common options of :class:`~nb360.datamodules.base.TaskDataModule`.
    """

    task = "cifar100"

    def __init__(
        self, val_fraction: float = 0.2, archive_url: str = OFFICIAL_URL, crop_padding: int = 4, cutout: int = 16, **kwargs: Any
    ) -> None:
        if not 0 < val_fraction < 1:
            raise UsageError(f"cifar100: val_fraction must lie strictly between 0 and 1, got {val_fraction}")
        if crop_padding < 0 or cutout < 0:
            raise UsageError(f"cifar100: crop_padding and cutout must be >= 0, got {crop_padding} and {cutout}")
        self.val_fraction, self.archive_url = val_fraction, archive_url
        self.crop_padding, self.cutout = crop_padding, cutout
        super().__init__(**kwargs)

    def required_files(self) -> tuple[RemoteFile, ...]:
        """The archive, unless the root holds an unpacked ``cifar-100-python/`` folder and no archive."""
        unpacked = all((self.root / FOLDER / part).is_file() for part in PARTS)
        if unpacked and not (self.root / ARCHIVE).exists():
            return tuple(RemoteFile(f"{FOLDER}/{part}") for part in PARTS)
        md5 = OFFICIAL_MD5 if self.archive_url == OFFICIAL_URL else None
        return (RemoteFile(ARCHIVE, url=self.archive_url, md5=md5, unpack=True),)

    def _read(self, part: str) -> tuple[Tensor, Tensor]:
        images, labels = read_part(self.root / FOLDER / part, self.spec.num_outputs)
        return torch.from_numpy(images), torch.from_numpy(labels)

    def _dataset(self, images: Tensor, labels: Tensor, augment: bool) -> TensorDictDataset:
        view = partial(training_view, crop_padding=self.crop_padding, cutout_size=self.cutout) if augment else evaluation_view
        return TensorDictDataset(view, x=images, y=labels)

    def load(self) -> Mapping[str, TensorDictDataset]:
        images, labels = self._read("train")
        if self.split == "search":
            n_fit = split_point(len(images), self.val_fraction, str(self.root / FOLDER / "train"))
            return {
                "train": self._dataset(images[:n_fit], labels[:n_fit], augment=True),
                "val": self._dataset(images[n_fit:], labels[n_fit:], augment=False),
            }
        return {"train": self._dataset(images, labels, augment=True), "test": self._dataset(*self._read("test"), augment=False)}

    def describe_file(self, path: Path) -> str:
        if path.name != ARCHIVE:
            images, labels = read_part(path, self.spec.num_outputs)
            return f"pickle, {len(images)} images 3x{SIDE}x{SIDE} uint8, fine labels {labels.min()}..{labels.max()}"
        try:
            with tarfile.open(path, "r:gz") as archive:
                names = set(archive.getnames())
        except (OSError, EOFError, tarfile.TarError) as err:
            reason = f"{type(err).__name__}: {err}".splitlines()[0]
            raise DataError(f"{path}: not a readable tar.gz archive (truncated or corrupt?): {reason}") from None
        missing = [f"{FOLDER}/{part}" for part in PARTS if f"{FOLDER}/{part}" not in names]
        if missing:
            raise DataError(f"{path}: the archive lacks {', '.join(missing)}; not the CIFAR-100 python archive")
        return f"tar.gz with {', '.join(sorted(n for n in names if n.startswith(FOLDER + '/')))}"

    @classmethod
    def write_fixture(cls, root: Path, n: int, seed: int = 0) -> list[Path]:
        """``cifar-100-python.tar.gz`` with random images, laid out as the official one: ``cifar-100-python/{train,test,meta}``.

        Sizes: see :func:`fixture_sizes` (8 -> train 10, test 4). Fixed timestamps make the bytes a function of ``seed``.
        """
        rng = np.random.default_rng(seed)
        members = {}
        for part, size in fixture_sizes(n).items():
            fine = rng.integers(0, 100, size)
            members[part] = {
                "filenames": [f"fixture_{part}_{i}.png" for i in range(size)],
                "batch_label": f"{part}ing batch 1 of 1",
                "fine_labels": fine.tolist(),
                "coarse_labels": (fine // 5).tolist(),
                "data": rng.integers(0, 256, (size, 3 * SIDE * SIDE), dtype=np.uint8),
            }
        members["meta"] = {
            "fine_label_names": [f"class{i}" for i in range(100)],
            "coarse_label_names": [f"superclass{i}" for i in range(20)],
        }
        path = Path(root) / ARCHIVE
        with (
            atomic_path(path) as tmp,
            open(tmp, "wb") as raw,
            gzip.GzipFile(filename=ARCHIVE, fileobj=raw, mode="wb", mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w") as tar,
        ):
            folder = tarfile.TarInfo(FOLDER)
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(folder)
            for name, record in members.items():
                data = _python2_pickle(record)
                info = tarfile.TarInfo(f"{FOLDER}/{name}")
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
        return [path]


SPEC = register_task(
    TaskSpec(
        name="cifar100",
        title="CIFAR-100",
        dims=2,
        kind="point",
        input_shape=(3, 32, 32),
        num_outputs=100,
        loss="cross_entropy",
        metric="error",
        reference=Reference(lr=0.1, batch_size=128),
        aliases=("cifar", "cifar-100", "cifar_100"),
        datamodule=CIFAR100DataModule,
    )
)
