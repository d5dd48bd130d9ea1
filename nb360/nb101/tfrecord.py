"""Read the reference ``nasbench_full.tfrecord`` / ``nasbench_only108.tfrecord`` without TensorFlow, and import it.

TFRecord framing, per record: ``uint64`` little-endian payload length, ``uint32`` masked
CRC-32C of those 8 bytes, the payload, ``uint32`` masked CRC-32C of the payload (mask:
rotate right by 15, add ``0xa282ead8``). Both CRCs are verified.

Payload: the JSON list ``[module_hash, epochs, raw_adjacency, raw_operations, raw_metrics]``,
``raw_metrics`` the base64 of a ``ModelMetrics`` protobuf (``nasbench/lib/model_metrics.proto``)::

    ModelMetrics   { repeated EvaluationData evaluation_data = 1; int32 trainable_parameters = 2; double total_time = 3; }
    EvaluationData { double current_epoch = 1; double training_time = 2; double train_accuracy = 3;
                     double validation_accuracy = 4; double test_accuracy = 5; string checkpoint_path = 6; }

parsed here from the wire format (varints, fixed64, length-delimited). As the reference
loader, ``evaluation_data[1]`` is the halfway and ``[2]`` the final evaluation, repeats are
numbered in file order. Any malformed byte raises a one-line :class:`DataError`.

CRC-32C uses ``google_crc32c`` when it is installed (fast) and a table-driven Python
fallback otherwise (a few MB/s: minutes for the 2 GB file; ``verify=False`` skips the checks).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nb360.errors import DataError, UsageError
from nb360.nb101.spec import ModelSpec, OutOfDomainError, pack

__all__ = ["crc32c", "masked_crc", "read_records", "parse_metrics", "parse_record", "import_tfrecord", "load_rows"]

_TABLE: list[int] = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _TABLE.append(_c)


def _crc32c_python(data: bytes) -> int:
    crc = 0xFFFFFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


try:  # pragma: no cover - depends on the environment
    import google_crc32c as _gcrc

    def crc32c(data: bytes) -> int:
        """CRC-32C (Castagnoli) of ``data``."""
        return int(_gcrc.value(bytes(data)))

except ImportError:
    crc32c = _crc32c_python


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_records(path: str | os.PathLike[str], verify: bool = True) -> Iterator[bytes]:
    """The payloads of a TFRecord file, CRCs checked (``verify``)."""
    path = Path(path)
    try:
        f = open(path, "rb")
    except OSError as err:
        raise DataError(f"cannot read {path}: {err}") from None
    with f:
        k = 0
        while True:
            head = f.read(12)
            if not head:
                return
            if len(head) < 12:
                raise DataError(f"{path}: record {k} is truncated (its 12-byte header has {len(head)} bytes)")
            (length,) = struct.unpack("<Q", head[:8])
            (length_crc,) = struct.unpack("<I", head[8:])
            if verify and masked_crc(head[:8]) != length_crc:
                raise DataError(f"{path}: record {k} has a corrupt length (CRC mismatch); not a TFRecord file?")
            data = f.read(length)
            tail = f.read(4)
            if len(data) < length or len(tail) < 4:
                raise DataError(f"{path}: record {k} is truncated ({len(data)} of {length} payload bytes)")
            if verify and masked_crc(data) != struct.unpack("<I", tail)[0]:
                raise DataError(f"{path}: record {k} has a corrupt payload (CRC mismatch)")
            yield data
            k += 1


# ------------------------------------------------------------------------ protobuf wire format
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """``(field number, wire type, value)`` of a message: ints for varints, floats for fixed64/32, bytes for LEN."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            if pos + 8 > len(buf):
                raise ValueError("truncated fixed64")
            (value,) = struct.unpack_from("<d", buf, pos)
            pos += 8
        elif wire == 2:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("truncated length-delimited field")
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            if pos + 4 > len(buf):
                raise ValueError("truncated fixed32")
            (value,) = struct.unpack_from("<f", buf, pos)
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, wire, value


_EVAL_FIELDS = {1: "current_epoch", 2: "training_time", 3: "train_accuracy", 4: "validation_accuracy", 5: "test_accuracy"}


def parse_metrics(buf: bytes) -> dict[str, Any]:
    """A ``ModelMetrics`` message: ``{"evaluation_data": [dict, ...], "trainable_parameters": int, "total_time": float}``."""
    out: dict[str, Any] = {"evaluation_data": [], "trainable_parameters": 0, "total_time": 0.0}
    for number, wire, value in _fields(buf):
        if number == 1 and wire == 2:
            ev: dict[str, Any] = {name: 0.0 for name in _EVAL_FIELDS.values()}
            ev["checkpoint_path"] = ""
            for n2, w2, v2 in _fields(value):
                if n2 in _EVAL_FIELDS and w2 == 1:
                    ev[_EVAL_FIELDS[n2]] = v2
                elif n2 == 6 and w2 == 2:
                    ev["checkpoint_path"] = v2.decode("utf-8")
            out["evaluation_data"].append(ev)
        elif number == 2 and wire == 0:
            value &= 0xFFFFFFFFFFFFFFFF
            out["trainable_parameters"] = value - (1 << 64) if value >= 1 << 63 else value  # int32: negative as 10 bytes
        elif number == 3 and wire == 1:
            out["total_time"] = value
    return out


def parse_record(payload: bytes) -> tuple[str, int, np.ndarray, list[str], dict[str, Any]]:
    """``(module_hash, epochs, adjacency, operations, metrics)`` of one payload."""
    module_hash, epochs, raw_adjacency, raw_operations, raw_metrics = json.loads(payload.decode("utf-8"))
    dim = int(round(len(raw_adjacency) ** 0.5))
    if dim * dim != len(raw_adjacency) or set(raw_adjacency) - {"0", "1"}:
        raise ValueError(f"adjacency {raw_adjacency!r} is not a square 0/1 matrix")
    adjacency = np.array([int(e) for e in raw_adjacency], dtype=np.int8).reshape(dim, dim)
    metrics = parse_metrics(base64.b64decode(raw_metrics, validate=True))
    return str(module_hash), int(epochs), adjacency, raw_operations.split(","), metrics


def load_rows(
    path: str | os.PathLike[str], verify: bool = True
) -> Iterator[tuple[str, int, np.ndarray, list[str], dict[str, Any]]]:
    """Parsed records of a NAS-Bench-101 TFRecord file (one-line :class:`DataError` on any malformed record)."""
    for k, payload in enumerate(read_records(path, verify=verify)):
        try:
            yield parse_record(payload)
        except (ValueError, TypeError, KeyError, UnicodeDecodeError, binascii.Error) as err:
            raise DataError(f"{path}: record {k} is not a NAS-Bench-101 row ({type(err).__name__}: {err})") from None


def import_tfrecord(
    tfrecord: str | os.PathLike[str],
    store: str | os.PathLike[str],
    *,
    verify: bool = True,
    check_hashes: int = 1000,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Convert a reference TFRecord into an ``nb360-tabular`` store (see :mod:`nb360.nb101.store`).

    Every module is mapped to its cell index; ``check_hashes`` modules (all, if fewer; spread
    over the file) get their reference hash recomputed and compared with the file's.
    """
    from nb360.nb101.space import NB101
    from nb360.nb101.store import REPEATS, Budget, write_store

    num = len(NB101)
    hashes = np.zeros(num, dtype="S32")
    params = np.full(num, np.nan)
    index_of: dict[str, int] = {}
    # per budget: (repeats, cells, 8) values (halfway then final: time, train, valid, test) and the runs seen per cell
    values: dict[int, np.ndarray] = {}
    seen: dict[int, np.ndarray] = {}
    keys = ("training_time", "train_accuracy", "validation_accuracy", "test_accuracy")
    for k, (module_hash, epochs, adjacency, ops, metrics) in enumerate(load_rows(tfrecord, verify=verify)):
        if progress and k % 10000 == 0:
            progress(k)
        i = index_of.get(module_hash)
        if i is None:
            try:
                spec = ModelSpec(adjacency, ops)
                code = pack(spec.matrix, spec.labels())
                try:  # the reference stores the first encoding of each cell met by its enumeration: the canonical one
                    i = NB101.code_index(code)
                except OutOfDomainError:
                    i = NB101.index(spec)
            except UsageError as err:
                raise DataError(f"{tfrecord}: record {k} (module {module_hash}) is not an NB101 cell: {err}") from None
            index_of[module_hash] = i
            hashes[i] = module_hash.encode("ascii")
            params[i] = int(metrics["trainable_parameters"])
        evals = metrics["evaluation_data"]
        if len(evals) < 3:
            raise DataError(f"{tfrecord}: record {k} has {len(evals)} evaluations; expected 3 (start, halfway, final)")
        if epochs not in values:
            values[epochs] = np.full((REPEATS, num, 8), np.nan)
            seen[epochs] = np.zeros(num, dtype=np.int8)
        r = int(seen[epochs][i])
        if r >= REPEATS:
            raise DataError(f"{tfrecord}: module {module_hash} has more than {REPEATS} runs of {epochs} epochs")
        values[epochs][r, i] = [evals[p][key] for p in (1, 2) for key in keys]
        seen[epochs][i] = r + 1
    if not values:
        raise DataError(f"{tfrecord}: no records")
    _check_hashes(index_of, check_hashes, tfrecord)
    budgets = {}
    for epochs in sorted(values):
        cells = np.flatnonzero(seen[epochs])
        arr = values.pop(epochs)[:, cells].transpose(2, 0, 1)  # (8, repeats, cells)
        arr = arr.reshape(2, 4, REPEATS, len(cells))  # (point, metric, repeat, cell)
        budgets[epochs] = Budget(
            index=cells,
            training_time=arr[:, 0],
            train_accuracy=arr[:, 1],
            validation_accuracy=arr[:, 2],
            test_accuracy=arr[:, 3],
            params=params[cells],
            evaluated=np.arange(REPEATS)[:, None] < seen[epochs][cells][None, :],
        )
    source = {"file": Path(tfrecord).name, "size": os.path.getsize(tfrecord)}
    # the hash table lists the file's hashes at their cells (empty where the file has no module)
    return write_store(store, budgets, hashes=hashes, source=source, overwrite=overwrite)


def _check_hashes(index_of: dict[str, int], count: int, path: Any) -> None:
    from nb360.nb101.space import NB101

    items = sorted(index_of.items(), key=lambda kv: kv[1])
    step = max(1, len(items) // max(1, count))
    for module_hash, i in items[::step][:count]:
        if NB101.spec(i).hash() != module_hash:
            raise DataError(f"{path}: module {module_hash} is cell {NB101.arch(i)}, whose hash is {NB101.spec(i).hash()}")
