"""NinaPro DB5: the fixture's format, the reference splits and layout recomputed with numpy, one-line errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from nb360.datamodules.ninapro import NinaProDataModule
from nb360.errors import DataError

N = 8
PARTS = ("train", "val", "test")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ninapro")
    NinaProDataModule.write_fixture(root, N, seed=3)
    return root


@pytest.fixture
def copy(root: Path, tmp_path: Path) -> Path:
    """A checksum-free copy of the fixture that a test may damage."""
    target = tmp_path / "copy"
    target.mkdir()
    for path in root.glob("*.npy"):
        shutil.copy(path, target / path.name)
    return target


def loaded(root: Path, split: str, **kwargs) -> NinaProDataModule:
    dm = NinaProDataModule(root=str(root), split=split, source="local", **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def reference_part(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """The reference's steps: (N, 52, 16) -> transpose (0, 2, 1) -> add axis 1 -> float32; labels int64."""
    data = np.load(root / f"ninapro_{part}.npy", allow_pickle=False)
    labels = np.load(root / f"label_{part}.npy", allow_pickle=False)
    return np.transpose(data, (0, 2, 1))[:, None, :, :].astype(np.float32), labels.astype(np.int64)


def test_fixture_has_the_bucket_format(root):
    assert sorted(p.name for p in root.glob("*.npy")) == sorted(f"{k}_{p}.npy" for p in PARTS for k in ("ninapro", "label"))
    for part in PARTS:
        data = np.load(root / f"ninapro_{part}.npy", allow_pickle=False)
        labels = np.load(root / f"label_{part}.npy", allow_pickle=False)
        assert data.dtype == np.float32 and data.shape == (N, 52, 16)
        assert labels.dtype == np.int64 and labels.shape == (N,) and 0 <= labels.min() and labels.max() <= 17


@pytest.mark.parametrize("split", ["search", "final"])
def test_splits_and_layout_follow_the_reference(root, split):
    dm = loaded(root, split)
    parts = {part: reference_part(root, part) for part in PARTS}
    if split == "search":
        expected = {"train": parts["train"], "val": parts["val"]}
    else:  # train then val, as the reference's ConcatDataset
        expected = {"train": tuple(np.concatenate([a, b]) for a, b in zip(parts["train"], parts["val"])), "test": parts["test"]}
    assert set(dm.datasets) == set(expected)
    for name, (x, y) in expected.items():
        got = dm.datasets[name].tensors
        assert got["x"].dtype == torch.float32 and got["y"].dtype == torch.int64
        np.testing.assert_array_equal(got["x"].numpy(), x)
        np.testing.assert_array_equal(got["y"].numpy(), y)
    raw = np.load(root / "ninapro_train.npy")
    assert dm.datasets["train"].tensors["x"][3, 0, 5, 40] == raw[3, 40, 5]  # channel 5 at time step 40
    assert dm.eval_split == ("val" if split == "search" else "test")


def test_batches_are_dicts_and_evaluation_keeps_the_file_order(root):
    dm = loaded(root, "final", batch_size=5, eval_batch_size=3)
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"x", "y"} and batch["x"].shape == (5, 1, 16, 52) and batch["y"].shape == (5,)
    x, y = reference_part(root, "test")
    batches = list(dm.test_dataloader())
    np.testing.assert_array_equal(torch.cat([b["x"] for b in batches]).numpy(), x)
    np.testing.assert_array_equal(torch.cat([b["y"] for b in batches]).numpy(), y)


def test_whole_float_labels_are_read_as_classes(copy):
    labels = np.load(copy / "label_val.npy")
    np.save(copy / "label_val.npy", labels.astype(np.float64))
    dm = NinaProDataModule(root=str(copy), split="search")
    dm.setup("fit")
    np.testing.assert_array_equal(dm.datasets["val"].tensors["y"].numpy(), labels)


def test_verify_checks_every_file(root):
    lines = NinaProDataModule(root=str(root)).verify()
    assert len(lines) == 6 and all(line.startswith("ok") for line in lines)
    assert any("ninapro_test.npy" in line and "float32 (8, 52, 16)" in line for line in lines)
    assert any("label_val.npy" in line and "8 labels" in line for line in lines)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-200])


# name: (file, damage, expected message, caught by `verify` too: format problems within one file)
BAD_FILES = {
    "truncated windows": ("ninapro_train.npy", _truncate, "not a readable", True),
    "channels and time swapped": ("ninapro_val.npy", lambda p: np.save(p, np.zeros((N, 16, 52))), r"\(N, 52, 16\)", True),
    "pickled object": ("ninapro_train.npy", lambda p: np.save(p, {"data": np.zeros((N, 52, 16))}), "numeric windows", True),
    "non-finite windows": ("ninapro_val.npy", lambda p: np.save(p, np.full((N, 52, 16), np.nan, np.float32)), "NaN", False),
    "label 18": ("label_train.npy", lambda p: np.save(p, np.full(N, 18)), r"0\.\.17", True),
    "negative label": ("label_val.npy", lambda p: np.save(p, np.full(N, -1)), r"0\.\.17", True),
    "fractional labels": ("label_train.npy", lambda p: np.save(p, np.full(N, 2.5)), "whole numbers", True),
    "labels of two columns": ("label_train.npy", lambda p: np.save(p, np.zeros((N, 2), np.int64)), "1-D array", True),
    "one label short": ("label_val.npy", lambda p: np.save(p, np.zeros(N - 1, np.int64)), "7 labels for the 8 windows", False),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_give_one_line_errors_naming_the_file(copy, case):
    name, damage, message, in_verify = BAD_FILES[case]
    damage(copy / name)
    dm = NinaProDataModule(root=str(copy), split="search")
    with pytest.raises(DataError, match=message) as err:
        dm.setup("fit")
    assert str(copy / name) in str(err.value) and "\n" not in str(err.value)
    if in_verify:
        with pytest.raises(DataError, match=message):
            dm.verify()


def test_missing_file_names_it(copy):
    (copy / "label_test.npy").unlink()
    with pytest.raises(DataError, match="missing label_test.npy") as err:
        NinaProDataModule(root=str(copy), source="local").prepare_data()
    assert "\n" not in str(err.value)
