"""ECG (PhysioNet/CinC Challenge 2017): 4-class rhythm classification of single-lead recordings.

Reference protocol (NB ``backbone_1d/data_utils/load_data.py`` and
``backbone_1d/model_def.py::evaluate_full_dataset_ECG``): every recording of
``challenge2017.pkl`` is z-scored on its own; recordings (not windows) are split with
scikit-learn's ``train_test_split(random_state=0)``, 80/10/10 for the search split and
90/10 for the final split; each recording is cut into windows of 1000 samples whose
stride depends on its label (N 500, A 83, O 250, ~ 25), in every part. Evaluation
votes the window predictions of each recording, so every batch carries the window's
``record`` id and its ``window`` index (the window order that breaks voting ties).

The z-scored recordings of a part are kept once, concatenated, with the start offset of
every window; windows are cut per batch, so the ~300,000 overlapping windows of the
real data are never materialised.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nb360.datamodules.base import Split, TaskDataModule, TensorDictDataset
from nb360.safe_pickle import load_pickle
from nb360.datamodules.sources import RemoteFile
from nb360.errors import DataError
from nb360.io import atomic_open
from nb360.tasks import Reference, TaskSpec, register_task

__all__ = [
    "CLASSES",
    "FILE_NAME",
    "ECGDataModule",
    "Recordings",
    "WindowDataset",
    "label_strides",
    "record_split",
    "train_test_indices",
]

FILE_NAME = "challenge2017.pkl"
CLASSES = "NAO~"  # class id = position: normal rhythm, atrial fibrillation, other rhythm, too noisy
_STRIDE_DIVISORS = np.array([1, 6, 2, 20])  # the reference's strides per class: stride // divisor


def label_strides(stride: int) -> np.ndarray:
    """Window stride of each class, indexed by class id (500 -> N 500, A 83, O 250, ~ 25)."""
    return stride // _STRIDE_DIVISORS


def train_test_indices(n: int, test_size: float, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The (train, test) positions that scikit-learn's ``train_test_split(test_size=..., random_state=...)`` picks.

    Shuffled and not stratified, it delegates to ``ShuffleSplit``: ``n_test = ceil(test_size * n)``,
    ``permutation = RandomState(random_state).permutation(n)``, test = its first ``n_test`` entries,
    train = the remaining ones, both in permutation order (the order of the returned arrays).
    """
    n_test = math.ceil(test_size * n)
    permutation = np.random.RandomState(random_state).permutation(n)
    return permutation[n_test:], permutation[:n_test]


def record_split(n: int, split: Split) -> dict[str, np.ndarray]:
    """Recording indices of each part, in the reference's order.

    Search: 80/20, then the 20 % halved; its training half (``X_val``) is the validation part and
    its other half (the reference's unused test part) is left out. Final: a separate 90/10 split.
    """
    if split == "search":
        train, rest = train_test_indices(n, 0.2)
        val, _ = train_test_indices(len(rest), 0.5)
        return {"train": train, "val": rest[val]}
    train, test = train_test_indices(n, 0.1)
    return {"train": train, "test": test}


class WindowDataset(TensorDictDataset):
    """Windows cut on demand from one concatenated signal: a batch is one gather of ``start + arange(size)``.

    Items are dicts: ``x`` (1, size) float32, ``y`` class id, ``record`` the recording's index in the file,
    ``window`` the item's own index (the reference's window order).
    """

    def __init__(self, signal: Tensor, size: int, start: Tensor, y: Tensor, record: Tensor) -> None:
        super().__init__(start=start, y=y, record=record)
        self.signal = signal
        self.offsets = torch.arange(size)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        start = self.tensors["start"][index]
        x = self.signal[start[:, None] + self.offsets]
        return {"x": x[:, None], "y": self.tensors["y"][index], "record": self.tensors["record"][index], "window": index}


@dataclass(frozen=True)
class Recordings:
    """The recordings and class ids of ``challenge2017.pkl``, checked but not yet normalised."""

    path: Path
    signals: list[np.ndarray]
    labels: np.ndarray

    @classmethod
    def read(cls, path: Path) -> Recordings:
        """Unpickle (restricted) ``{"data": recordings, "label": names}`` and check its structure."""
        payload = load_pickle(path)
        if not isinstance(payload, dict) or not {"data", "label"} <= payload.keys():
            found = sorted(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
            raise DataError(f"{path}: expected a pickled dict with keys 'data' and 'label', found {found}")
        labels = _encode_labels(path, payload["label"])
        signals = _signals(path, payload["data"])
        if len(signals) != len(labels):
            raise DataError(f"{path}: {len(signals)} recordings but {len(labels)} labels")
        return cls(path, signals, labels)

    def zscore(self, index: int) -> np.ndarray:
        """The reference scaling: ``(x - mean) / std`` with the population std, no epsilon."""
        signal = self.signals[index]
        std = signal.std()
        if not (np.isfinite(std) and std > 0):
            raise DataError(f"{self.path}: recording {index} is constant or holds non-finite values, so it cannot be z-scored")
        return (signal - signal.mean()) / std

    def windows(self, records: np.ndarray, size: int, stride: int) -> WindowDataset:
        """Slide and cut ``records`` in this order: starts ``range(0, len - size, stride of the label)``.

        A recording no longer than ``size`` has no window and is left out, as in the reference.
        """
        strides = label_strides(stride)[self.labels[records]]
        lengths = np.array([len(self.signals[i]) for i in records], dtype=np.int64)
        counts = np.maximum(0, -(-(lengths - size) // strides))  # len(range(0, length - size, stride))
        kept = counts > 0
        records, strides, lengths, counts = records[kept], strides[kept], lengths[kept], counts[kept]
        offsets = np.cumsum(lengths) - lengths
        signal = np.empty(int(lengths.sum()), dtype=np.float32)
        for i, offset, length in zip(records, offsets, lengths):
            signal[offset : offset + length] = self.zscore(i)
        owner = np.repeat(np.arange(len(records)), counts)
        position = np.arange(len(owner)) - (np.cumsum(counts) - counts)[owner]
        start = offsets[owner] + position * strides[owner]
        return WindowDataset(
            torch.from_numpy(signal),
            size,
            start=torch.from_numpy(start),
            y=torch.from_numpy(self.labels[records][owner]),
            record=torch.from_numpy(records[owner].astype(np.int64)),
        )

    def describe(self) -> str:
        lengths = [len(s) for s in self.signals]
        dtypes = "/".join(sorted({str(s.dtype) for s in self.signals}))
        counts = np.bincount(self.labels, minlength=len(CLASSES))
        per_class = ", ".join(f"{name} {count}" for name, count in zip(CLASSES, counts))
        span = f"{min(lengths, default=0)}..{max(lengths, default=0)}"
        return f"pickle, {len(lengths)} recordings ({dtypes}, lengths {span}), labels {per_class}"


def _array(path: Path, what: str, value: Any) -> np.ndarray:
    try:
        return np.asarray(value)
    except ValueError as err:  # ragged nesting
        raise DataError(f"{path}: {what} is not an array: {err}".splitlines()[0]) from None


def _encode_labels(path: Path, label: Any) -> np.ndarray:
    names = _array(path, "'label'", label)
    if names.ndim != 1 or names.dtype.kind not in "UO":
        raise DataError(
            f"{path}: 'label' must be a 1-D array of the names {', '.join(CLASSES)}, "
            f"found dtype {names.dtype} and shape {names.shape}"
        )
    codes = np.full(len(names), -1, dtype=np.int64)
    for code, name in enumerate(CLASSES):
        codes[names == name] = code
    unknown = np.flatnonzero(codes < 0)
    if len(unknown):
        raise DataError(
            f"{path}: unknown label {str(names[unknown[0]])!r} of recording {unknown[0]} "
            f"({len(unknown)} recording(s) with labels other than {', '.join(CLASSES)})"
        )
    return codes


def _signals(path: Path, data: Any) -> list[np.ndarray]:
    if not isinstance(data, (np.ndarray, list, tuple)) or isinstance(data, np.ndarray) and data.ndim == 0:
        raise DataError(f"{path}: 'data' must be an array of recordings, found {type(data).__name__}")
    signals = [_array(path, f"recording {index}", record) for index, record in enumerate(data)]
    for index, signal in enumerate(signals):
        if signal.ndim != 1 or signal.dtype.kind not in "iuf":
            raise DataError(
                f"{path}: recording {index} must be a 1-D integer or float array, "
                f"found dtype {signal.dtype} and shape {signal.shape}"
            )
    return signals


def _fixture_labels(count: int) -> np.ndarray:
    """Label names that put every class into the validation and final test parts where their sizes allow.

    Cycling ``NAO~`` does not: with 40 recordings the reference splits leave A out of validation
    and ~ out of the final test part.
    """
    codes = np.full(count, -1)
    for records in (record_split(count, "search")["val"], record_split(count, "final")["test"]):
        present = set(codes[records].tolist())
        order = [c for c in range(len(CLASSES)) if c not in present] + list(range(len(CLASSES)))
        free = records[codes[records] < 0]
        codes[free] = np.resize(order, len(free))
    rest = np.flatnonzero(codes < 0)
    codes[rest] = np.arange(len(rest)) % len(CLASSES)
    return np.array(list(CLASSES))[codes]


class ECGDataModule(TaskDataModule):
    """PhysioNet 2017 windows from ``challenge2017.pkl``, split by recording as the reference does.

    Args:
        window_size: samples per window (reference 1000, i.e. 3.3 s at 300 Hz).
        stride: stride of N windows; A, O and ~ use ``stride // 6``, ``// 2`` and ``// 20``
            (reference 500 -> 500, 83, 250, 25).
        **kwargs: the common options of :class:`~nb360.datamodules.base.TaskDataModule`.
    """

    task = "ecg"
    files = (RemoteFile(FILE_NAME, s3_key=f"ECG/{FILE_NAME}"),)

    def __init__(self, window_size: int = 1000, stride: int = 500, **kwargs: Any) -> None:
        self.window_size, self.stride = window_size, stride
        super().__init__(**kwargs)

    def load(self) -> dict[str, WindowDataset]:
        if self.window_size < 1 or self.stride < int(_STRIDE_DIVISORS.max()):
            raise DataError(
                f"ecg: need window_size >= 1 and stride >= 20 (~ windows use stride // 20), "
                f"got {self.window_size} and {self.stride}"
            )
        recordings = Recordings.read(self.root / FILE_NAME)
        parts = record_split(len(recordings.labels), self.split)
        datasets = {part: recordings.windows(records, self.window_size, self.stride) for part, records in parts.items()}
        for part, dataset in datasets.items():
            if len(dataset) == 0:
                raise DataError(
                    f"{recordings.path}: the {part} part of the {self.split} split has no windows "
                    f"({len(recordings.labels)} recordings; a window needs a recording longer than {self.window_size} samples)"
                )
        return datasets

    def describe_file(self, path: Path) -> str:
        return Recordings.read(path).describe()

    @classmethod
    def write_fixture(cls, root: Path, n: int, seed: int = 0) -> list[Path]:
        """``challenge2017.pkl`` with ``5 n`` (at least 10) int16 recordings of 1500..2000 samples."""
        rng = np.random.default_rng(seed)
        count = max(5 * n, 10)
        data = np.empty(count, dtype=object)
        for i, length in enumerate(rng.integers(1500, 2001, count)):
            data[i] = rng.integers(-1000, 1000, length, dtype=np.int16)
        path = Path(root) / FILE_NAME
        with atomic_open(path, "wb") as f:
            pickle.dump({"data": data, "label": _fixture_labels(count)}, f)
        return [path]

    @classmethod
    def fixture_args(cls, n: int) -> dict[str, Any]:
        """Windows of 200 samples with stride 4000 (N 4000, A 666, O 2000, ~ 200): ~3 per recording, a fast CPU epoch."""
        return {"window_size": 200, "stride": 4000}


SPEC = register_task(
    TaskSpec(
        name="ecg",
        title="ECG (PhysioNet 2017)",
        dims=1,
        kind="point",
        input_shape=(1, 1000),
        num_outputs=4,
        loss="cross_entropy",
        metric="one_minus_f1",
        reference=Reference(lr=0.1, batch_size=256),
        aliases=("physionet2017",),
        metric_kwargs={"num_classes": 4},
        datamodule=ECGDataModule,
    )
)
