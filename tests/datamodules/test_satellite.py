"""Satellite: the fixture's format, the reference normalisation and splits recomputed with numpy, constant
series, one-line errors. Files are read through nb360's restricted unpickler, never ``np.load(allow_pickle=True)``."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from nb360.safe_pickle import load_npy
from nb360.datamodules.satellite import SatelliteDataModule, standardize_rows
from nb360.errors import DataError

N = 8
TRAIN, TEST = "satellite_train.npy", "satellite_test.npy"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("satellite")
    SatelliteDataModule.write_fixture(root, N, seed=5)
    return root


@pytest.fixture
def copy(root: Path, tmp_path: Path) -> Path:
    """A checksum-free copy of the fixture that a test may damage."""
    target = tmp_path / "copy"
    target.mkdir()
    for path in root.glob("*.npy"):
        shutil.copy(path, target / path.name)
    return target


def loaded(root: Path, split: str, n_val: int = N, **kwargs) -> SatelliteDataModule:
    dm = SatelliteDataModule(root=str(root), split=split, n_val=n_val, source="local", **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def reference(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The reference's steps: labels - 1; (x - mean) / std per row (population std); axis 1 added; float32."""
    record = load_npy(path)
    data = record["data"]
    x = (data - data.mean(axis=1, keepdims=True)) / data.std(axis=1, keepdims=True)
    return np.expand_dims(x, 1).astype(np.float32), (record["label"] - 1).astype(np.int64)


def save_record(path: Path, data: np.ndarray, label: np.ndarray) -> None:
    np.save(path, {"data": data, "label": label}, allow_pickle=True)


def test_fixture_has_the_bucket_format(root):
    for name, rows in ((TRAIN, 2 * N), (TEST, N)):
        with open(root / name, "rb") as f:
            assert np.lib.format.read_magic(f) == (1, 0)
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        assert shape == () and dtype == object  # a pickled dict in a 0-d object array
        record = load_npy(root / name)
        assert set(record) == {"data", "label"}
        assert record["data"].dtype == np.float64 and record["data"].shape == (rows, 46)
        assert record["label"].shape == (rows,) and record["label"].min() >= 1 and record["label"].max() <= 24
        assert (np.ptp(record["data"], axis=1) > 0).all()


@pytest.mark.parametrize("split", ["search", "final"])
def test_normalisation_and_splits_follow_the_reference(root, split):
    dm = loaded(root, split)
    x, y = reference(root / TRAIN)
    if split == "search":  # the last n_val training series validate
        expected = {"train": (x[:N], y[:N]), "val": (x[N:], y[N:])}
    else:
        expected = {"train": (x, y), "test": reference(root / TEST)}
    assert set(dm.datasets) == set(expected)
    for name, (want_x, want_y) in expected.items():
        got = dm.datasets[name].tensors
        assert got["x"].dtype == torch.float32 and got["x"].shape == want_x.shape and got["y"].dtype == torch.int64
        np.testing.assert_allclose(got["x"].numpy(), want_x, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(got["y"].numpy(), want_y)
        np.testing.assert_allclose(got["x"].numpy().mean(axis=2), 0, atol=1e-5)
        np.testing.assert_allclose(got["x"].numpy().std(axis=2), 1, atol=1e-5)


def test_batches_are_dicts_of_one_channel_series(root):
    batch = next(iter(loaded(root, "final", batch_size=4).train_dataloader()))
    assert set(batch) == {"x", "y"} and batch["x"].shape == (4, 1, 46) and batch["y"].shape == (4,)


def test_the_reference_validation_size_needs_the_full_training_file(root):
    with pytest.raises(DataError, match="need 0 < n_val < 16 .*got n_val=100000"):
        SatelliteDataModule(root=str(root), split="search").setup("fit")
    with pytest.raises(DataError, match="n_val"):
        SatelliteDataModule(root=str(root), split="search", n_val=0).setup("fit")


def test_constant_series_become_zeros_not_nan(copy):
    record = load_npy(copy / TRAIN)
    data = record["data"].copy()
    data[2] = 7.0
    data[5] = 0.1  # its float mean differs from 0.1 by rounding: only an exact test catches it
    save_record(copy / TRAIN, data, record["label"])
    with pytest.warns(UserWarning, match="2 constant series set to zero"):
        dm = loaded(copy, "final")
    x = dm.datasets["train"].tensors["x"].numpy()
    assert np.isfinite(x).all()
    assert (x[[2, 5]] == 0).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the reference divides 0 by 0 here
        want, _ = reference(copy / TRAIN)
    assert np.isnan(want[2]).all()
    others = [i for i in range(2 * N) if i not in (2, 5)]
    np.testing.assert_allclose(x[others], want[others], rtol=1e-6, atol=1e-6)


def test_row_normalisation_across_chunks_and_for_integer_data():
    rng = np.random.default_rng(0)
    data = rng.integers(0, 10_000, (70_000, 46))  # more rows than one chunk of 65,536
    data[69_999] = 3
    out, constant = standardize_rows(data)
    want = (data - data.mean(axis=1, keepdims=True)) / np.maximum(data.std(axis=1, keepdims=True), 1e-300)
    assert out.dtype == np.float32 and constant == 1
    np.testing.assert_allclose(out, want.astype(np.float32), rtol=1e-6, atol=1e-6)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-300])


def _rewrite(**changes):
    """A damage that rewrites the file with some of its dict entries replaced (None drops the entry)."""

    def damage(path: Path) -> None:
        record = dict(load_npy(path), **changes)
        np.save(path, {k: v for k, v in record.items() if v is not None}, allow_pickle=True)

    return damage


BAD_FILES = {
    "truncated": (TRAIN, _truncate, "not a readable pickle"),
    "plain array": (TEST, lambda p: np.save(p, np.zeros((N, 46))), "pickled dict"),
    "no label": (TEST, _rewrite(label=None), "keys 'data' and 'label'"),
    "series of 45": (TRAIN, _rewrite(data=np.ones((2 * N, 45))), r"\(N, 46\)"),
    "text data": (TRAIN, _rewrite(data=np.full((2 * N, 46), "a")), r"\(N, 46\)"),
    "non-finite": (TEST, _rewrite(data=np.full((N, 46), np.inf)), "NaN or infinite"),
    "label 0": (TRAIN, _rewrite(label=np.zeros(2 * N, np.int64)), r"1\.\.24"),
    "label 25": (TEST, _rewrite(label=np.full(N, 25)), r"1\.\.24"),
    "one label short": (TEST, _rewrite(label=np.ones(N - 1, np.int64)), "7 labels for 8 series"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_give_one_line_errors_naming_the_file(copy, case):
    name, damage, message = BAD_FILES[case]
    damage(copy / name)
    dm = SatelliteDataModule(root=str(copy), split="final")
    with pytest.raises(DataError, match=message) as err:
        dm.setup("fit")
    assert str(copy / name) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match=message):
        dm.verify()


def test_verify_checks_both_files(root):
    lines = SatelliteDataModule(root=str(root)).verify()
    assert len(lines) == 2 and all(line.startswith("ok") for line in lines)
    assert "float64 (16, 46)" in lines[0] and "float64 (8, 46)" in lines[1]
