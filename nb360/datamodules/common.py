"""Small helpers shared by several task modules: array summaries, class-label checks, fraction splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nb360.errors import DataError

__all__ = ["array_summary", "class_labels", "split_point", "fixture_sizes"]


def array_summary(value: object) -> str:
    """A few words on what a file held: ``float32 (8, 52, 16)``, or the Python type of a non-array."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {tuple(value.shape)}"
    return type(value).__name__


def class_labels(values: object, path: Path, count: int, first: int = 0) -> np.ndarray:
    """Class labels ``first .. first + count - 1`` as int64 indices counted from 0.

    Whole-valued floats are accepted, as the reference's ``astype(int64)`` would read
    them; anything else (fractions, NaN, out-of-range classes, other shapes) is a
    one-line :class:`DataError` naming ``path``.
    """
    if not isinstance(values, np.ndarray) or values.ndim != 1 or values.dtype.kind not in "iuf":
        raise DataError(f"{path}: expected a 1-D array of integer class labels, found {array_summary(values)}")
    with np.errstate(invalid="ignore"):
        labels = values.astype(np.int64)
    if values.dtype.kind == "f" and not np.array_equal(labels, values):
        raise DataError(f"{path}: class labels must be whole numbers, found fractional or non-finite values")
    last = first + count - 1
    if labels.size and (labels.min() < first or labels.max() > last):
        raise DataError(f"{path}: class labels must lie in {first}..{last}, found {labels.min()}..{labels.max()}")
    return labels - first


def split_point(total: int, val_fraction: float, source: str) -> int:
    """Size of the training part of the search split: ``int((1 - val_fraction) * total)``, as the reference computes it."""
    n_fit = int((1 - val_fraction) * total)
    if not 0 < n_fit < total:
        raise DataError(f"{source}: val_fraction={val_fraction} leaves an empty training or validation part of {total} samples")
    return n_fit


def fixture_sizes(n: int) -> dict[str, int]:
    """Fixture part sizes: train 5 * ceil(n / 4), which the 80/20 split cuts into about n and n / 4 (8: 8 + 2); test n / 2."""
    return {"train": 5 * -(-n // 4), "test": max(1, n // 2)}
