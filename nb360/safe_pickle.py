"""Loading the pickles inside NB360's files without running code from them.

Several reference files are pickles (ECG's ``challenge2017.pkl``, Spherical's gzip
pickle, PSICOV's feature dicts) or ``.npy`` files holding pickled objects (Satellite's
dicts, PSICOV's distance tuples). A pickle can name any importable callable, so a
tampered download could run code when loaded with ``pickle.load`` or
``np.load(allow_pickle=True)``. :class:`RestrictedUnpickler` admits only builtin
containers and scalars and what numpy needs to rebuild arrays and dtypes; anything
else stops the load with a one-line :class:`~nb360.errors.DataError`.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import IO, Any

import numpy as np

from nb360.errors import DataError

__all__ = ["RestrictedUnpickler", "load_pickle", "loads_pickle", "load_npy", "read_npy_header"]

_ALLOWED: dict[str, set[str]] = {
    "builtins": {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "complex", "bool", "slice", "range", "object"},
    "collections": {"OrderedDict", "defaultdict"},
    "_codecs": {"encode"},  # numpy's Python 2 era pickles encode raw buffers this way
    "copy_reg": {"_reconstructor"},
    "copyreg": {"_reconstructor"},
}
# the array/dtype/scalar reconstructors under numpy 1 (numpy.core) and numpy 2 (numpy._core) names
for _core in ("numpy.core", "numpy._core"):
    _ALLOWED[f"{_core}.multiarray"] = {"_reconstruct", "scalar"}
    _ALLOWED[f"{_core}.numeric"] = {"_frombuffer"}
_ALLOWED["numpy"] = {"ndarray", "dtype"}
_ALLOWED["numpy.dtypes"] = {name for name in dir(np.dtypes) if name.endswith("DType")}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only builtin containers/scalars and numpy array reconstruction."""

    source = "pickle"

    def find_class(self, module: str, name: str) -> Any:
        if name in _ALLOWED.get(module, ()):
            return super().find_class(module, name)
        raise DataError(
            f"{self.source} contains a pickled {module}.{name}, which nb360 refuses to load "
            "(only containers and numpy arrays are allowed; the file may be corrupt or tampered with)"
        )


def _unpickle(stream: IO[bytes], source: str, encoding: str) -> Any:
    unpickler = RestrictedUnpickler(stream, encoding=encoding)
    unpickler.source = source
    try:
        return unpickler.load()
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{source} is not a readable pickle (truncated or corrupt?): {type(err).__name__}: {err}") from None


def loads_pickle(data: bytes, source: str = "pickle", encoding: str = "latin1") -> Any:
    return _unpickle(io.BytesIO(data), source, encoding)


def load_pickle(path: Path | IO[bytes], encoding: str = "latin1", source: str | None = None) -> Any:
    """Load a pickle file (or open binary stream) through :class:`RestrictedUnpickler`."""
    if isinstance(path, (str, Path)):
        with open(path, "rb") as f:
            return _unpickle(f, source or str(path), encoding)
    return _unpickle(path, source or getattr(path, "name", "pickle"), encoding)


def read_npy_header(stream: IO[bytes], source: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` from the header of a ``.npy`` stream, leaving it at the data."""
    version = np.lib.format.read_magic(stream)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise DataError(f"{source}: unsupported .npy format version {version}")
    return readers[version](stream)


def load_npy(path: Path, encoding: str = "latin1", mmap: bool = False) -> Any:
    """Read a ``.npy`` file; object arrays (pickled payloads) go through the restricted unpickler.

    Plain numeric arrays are returned as arrays (memory-mapped when ``mmap``); an object
    array's pickled payload is returned as what the pickle holds (for example the dict
    of a 0-d object array, as ``np.load(...)[()]`` would give).
    """
    try:
        with open(path, "rb") as f:
            _, _, dtype = read_npy_header(f, str(path))
            if not dtype.hasobject:
                f.seek(0)
                return np.load(f if not mmap else path, allow_pickle=False, mmap_mode="r" if mmap else None)
            payload = _unpickle(f, str(path), encoding)
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"{path} is not a readable .npy file: {type(err).__name__}: {err}") from None
    if isinstance(payload, np.ndarray) and payload.shape == () and payload.dtype == object:
        return payload[()]
    return payload
