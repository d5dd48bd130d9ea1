"""MATLAB ``.mat`` files: v5 through scipy, v7.3 (HDF5) through h5py, as the reference's ``MatReader``.

v7.3 files store arrays in column-major order, so h5py sees the axes reversed; they
are transposed back here. Reading v7.3 is lazy, so only the selected samples and the
subsampled grid points are read from disk.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from nb360.errors import DataError
from nb360.io import atomic_path

__all__ = ["read_fields", "write_mat"]


def _select(array: np.ndarray, rows: slice, stride: int) -> np.ndarray:
    index = (rows,) + (slice(None, None, stride),) * (array.ndim - 1)
    return np.ascontiguousarray(array[index])


def read_fields(path: Path, fields: Sequence[str], rows: slice = slice(None), stride: int = 1) -> dict[str, np.ndarray]:
    """Read ``fields`` of a .mat file as float32, keeping samples ``rows`` and every ``stride``-th grid point."""
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                missing = [k for k in fields if k not in f]
                if missing:
                    raise DataError(f"{path} has no field(s) {', '.join(missing)} (found: {', '.join(f.keys())})")
                out = {}
                for key in fields:
                    ds = f[key]
                    spatial = (slice(None, None, stride),) * (ds.ndim - 1)
                    out[key] = np.ascontiguousarray(ds[spatial + (rows,)].transpose()).astype(np.float32)
                return out
        data = scipy.io.loadmat(str(path), variable_names=list(fields))
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"cannot read {path} as a MATLAB .mat file (v5 or v7.3): {type(err).__name__}: {err}") from None
    missing = [k for k in fields if k not in data]
    if missing:
        raise DataError(f"{path} has no field(s) {', '.join(missing)}")
    return {key: _select(data[key], rows, stride).astype(np.float32) for key in fields}


def _matlab_header() -> bytes:
    text = f"MATLAB 7.3 MAT-file, Platform: nb360, Created on: {time.strftime('%a %b %d %H:%M:%S %Y')} HDF5 schema 1.00 ."
    return text.encode("ascii").ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"


def write_mat(path: Path, arrays: Mapping[str, np.ndarray], version: str = "v5") -> None:
    """Write float64 arrays to ``path`` atomically as a MATLAB v5 or v7.3 file."""
    with atomic_path(path) as tmp:
        if version == "v5":
            scipy.io.savemat(str(tmp), {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}, appendmat=False)
        elif version == "v7.3":
            with h5py.File(tmp, "w", userblock_size=512) as f:
                for key, value in arrays.items():
                    ds = f.create_dataset(key, data=np.asarray(value, dtype=np.float64).transpose())
                    ds.attrs["MATLAB_class"] = np.bytes_("double")
            with open(tmp, "r+b") as f:
                f.write(_matlab_header())
        else:
            raise ValueError(f"version must be 'v5' or 'v7.3', got {version!r}")
