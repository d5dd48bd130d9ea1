"""The TFRecord importer (on files written here from the format definition), the store and the query API."""

from __future__ import annotations

import base64
import json
import random
import struct
from pathlib import Path

import numpy as np
import pytest
from nb101_cells import INCEPTION, INCEPTION_HASH

from nb360.errors import DataError, UsageError
from nb360.nb101.api import NB101Benchmark
from nb360.nb101.space import NB101
from nb360.nb101.spec import ModelSpec, OutOfDomainError
from nb360.nb101.tfrecord import crc32c, import_tfrecord
from nb360.tabular.store import Store


# ----------------------------------------------------------------------------- an independent writer
def _crc32c_bitwise(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 * (crc & 1))
    return crc ^ 0xFFFFFFFF


def _mask(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _double(field: int, x: float) -> bytes:
    return _varint(field << 3 | 1) + struct.pack("<d", x)


def _message(field: int, body: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(body)) + body


def _metrics(params: int, evals: list[tuple[float, ...]]) -> bytes:
    body = b""
    for epoch, t, tr, va, te in evals:
        ev = _double(1, epoch) + _double(2, t) + _double(3, tr) + _double(4, va) + _double(5, te) + _message(6, b"/ckpt/model")
        body += _message(1, ev)
    return body + _varint(2 << 3 | 0) + _varint(params) + _double(3, 1234.5)


def _record(payload: bytes) -> bytes:
    length = struct.pack("<Q", len(payload))
    return (
        length + struct.pack("<I", _mask(_crc32c_bitwise(length))) + payload + struct.pack("<I", _mask(_crc32c_bitwise(payload)))
    )


CELLS = [0, 7, 91, 2000, 150_000, NB101.index(ModelSpec(*INCEPTION))]
BUDGETS = (4, 108)


def _expected(seed: int = 0) -> dict:
    """cell -> epochs -> 3 repeats of (halfway, final) (time, train, valid, test); cell -> params."""
    rng = np.random.default_rng(seed)
    data = {}
    for i in CELLS:
        data[i] = {}
        for e in BUDGETS:
            reps = []
            for _ in range(3):
                t_half = float(rng.uniform(10, 100))
                half = (t_half, *rng.uniform(0.1, 1.0, 3).tolist())
                final = (t_half * 2 + float(rng.uniform(0, 1)), *rng.uniform(0.1, 1.0, 3).tolist())
                reps.append((half, final))
            data[i][e] = reps
    return data


def write_tfrecord(path: Path, data: dict, *, inception_as_readme: bool = True) -> dict[int, str]:
    """Records interleaved (repeat-major, then cell, then budget), so repeats are numbered by file order."""
    hashes = {}
    records = []
    for r in range(3):
        for i, budgets in data.items():
            spec = NB101.spec(i)
            matrix, ops = spec.matrix, spec.ops
            if inception_as_readme and i == CELLS[-1]:
                matrix, ops = np.array(INCEPTION[0]), INCEPTION[1]  # not the stored vertex order: still the same cell
            hashes[i] = spec.hash()
            for e, reps in budgets.items():
                half, final = reps[r]
                metrics = _metrics(1000 + i, [(0.0, 0.0, 0.1, 0.1, 0.1), (e / 2, *half), (float(e), *final)])
                row = [hashes[i], e, "".join(str(int(b)) for b in np.asarray(matrix).ravel()), ",".join(ops)]
                records.append(json.dumps(row + [base64.b64encode(metrics).decode()]).encode())
    path.write_bytes(b"".join(_record(rec) for rec in records))
    return hashes


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    tmp = tmp_path_factory.mktemp("nb101")
    data = _expected()
    hashes = write_tfrecord(tmp / "mini.tfrecord", data)
    store = import_tfrecord(tmp / "mini.tfrecord", tmp / "mini.nb360")
    return store, data, hashes


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == _crc32c_bitwise(b"123456789") == 0xE3069283


def test_import_keeps_every_value(imported) -> None:
    store, data, hashes = imported
    assert hashes[CELLS[-1]] == INCEPTION_HASH
    assert [line.startswith("ok") for line in Store.open(store).verify()] == [True, True]
    bench = NB101Benchmark(store)
    assert bench.valid_epochs == set(BUDGETS)
    assert set(bench.hash_iterator()) == set(hashes.values())
    for i in CELLS:
        fixed, computed = bench.get_metrics_from_spec(NB101.spec(i))
        assert fixed["trainable_parameters"] == 1000 + i
        assert np.array_equal(fixed["module_adjacency"], NB101.spec(i).matrix) and fixed["module_operations"] == NB101.spec(i).ops
        assert sorted(computed) == list(BUDGETS)
        for e in BUDGETS:
            for r, (half, final) in enumerate(data[i][e]):
                for prefix, values in (("halfway", half), ("final", final)):
                    got = [
                        computed[e][r][f"{prefix}_{k}"]
                        for k in ("training_time", "train_accuracy", "validation_accuracy", "test_accuracy")
                    ]
                    assert got == list(values)  # exact: the cumulative times are stored as such
        assert bench.get_metrics_from_hash(hashes[i])[1] == computed


def test_query_semantics(imported) -> None:
    store, data, _ = imported
    bench = NB101Benchmark(store, seed=5)
    picks = random.Random(5)
    spec = {"matrix": INCEPTION[0], "ops": INCEPTION[1]}
    i = CELLS[-1]
    expected_time = 0.0
    for k in range(6):
        halfway = k % 2 == 1
        got = bench.query(spec, epochs=108, stop_halfway=halfway)
        r = picks.randint(0, 2)  # the reference: random.randint(0, num_repeats - 1) from random.seed(seed)
        values = data[i][108][r][0 if halfway else 1]
        assert (got["training_time"], got["train_accuracy"], got["validation_accuracy"], got["test_accuracy"]) == values
        assert got["trainable_parameters"] == 1000 + i and got["module_operations"] == NB101.spec(i).ops
        expected_time += values[0]
    assert bench.get_budget_counters() == (pytest.approx(expected_time), 3 * 108 + 3 * 54)
    bench.reset_budget_counters()
    assert bench.get_budget_counters() == (0.0, 0)
    mean = bench.query(spec, epochs=4, repeat="mean")
    assert mean["test_accuracy"] == pytest.approx(np.mean([rep[1][3] for rep in data[i][4]]))
    assert bench.query(spec, epochs=4, repeat=2)["validation_accuracy"] == data[i][4][2][1][2]
    assert bench.get_budget_counters()[1] == 8
    with pytest.raises(OutOfDomainError, match="epochs"):
        bench.query(spec, epochs=12)
    with pytest.raises(OutOfDomainError, match="no 108-epoch data"):
        bench.query(NB101.spec(5), epochs=108)
    bad = {"matrix": [[0, 1, 0], [0, 0, 0], [0, 0, 0]], "ops": ["input", "maxpool3x3", "output"]}
    assert not bench.is_valid(bad) and bench.is_valid(spec)
    with pytest.raises(OutOfDomainError, match="disconnected"):
        bench.query(bad)
    with pytest.raises(UsageError, match="repeat"):
        bench.query(spec, repeat=3)


@pytest.mark.parametrize("damage", ["payload", "length", "truncate", "json"])
def test_corrupt_files_raise_one_line(tmp_path: Path, damage: str) -> None:
    good = tmp_path / "good.tfrecord"
    write_tfrecord(good, {0: _expected()[0]})
    raw = bytearray(good.read_bytes())
    if damage == "payload":
        raw[20] ^= 1
    elif damage == "length":
        raw[0] ^= 1
    elif damage == "truncate":
        raw = raw[:-7]
    else:
        raw = bytearray(_record(b'["abc", 108, "0100"]'))
    bad = tmp_path / "bad.tfrecord"
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError) as err:
        import_tfrecord(bad, tmp_path / "out.nb360")
    assert "\n" not in str(err.value) and not (tmp_path / "out.nb360").exists()


def test_import_command(tmp_path: Path, capsys) -> None:
    from nb360.nb101.__main__ import main

    write_tfrecord(tmp_path / "f.tfrecord", {7: _expected()[7]})
    assert main(["import", "--tfrecord", str(tmp_path / "f.tfrecord"), "--store", str(tmp_path / "s.nb360")]) == 0
    assert NB101Benchmark(tmp_path / "s.nb360").query(NB101.spec(7), epochs=4)["trainable_parameters"] == 1007
    assert main(["import", "--tfrecord", str(tmp_path / "missing"), "--store", str(tmp_path / "t.nb360")]) == 1
    assert "cannot read" in capsys.readouterr().err
