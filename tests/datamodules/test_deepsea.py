"""DeepSEA: the fixture's format, the reference layout and splits recomputed with numpy, compact storage,
one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from nb360.datamodules.deepsea import DeepSEADataModule
from nb360.errors import DataError

N = 8
FILE = "deepsea_filtered.npz"
PARTS = ("train", "val", "test")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("deepsea")
    DeepSEADataModule.write_fixture(root, N, seed=7)
    return root


@pytest.fixture(scope="module")
def arrays(root: Path) -> dict[str, np.ndarray]:
    with np.load(root / FILE, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def loaded(root: Path, split: str, **kwargs) -> DeepSEADataModule:
    dm = DeepSEADataModule(root=str(root), split=split, source="local", **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def rewrite(tmp_path: Path, arrays: dict[str, np.ndarray], **changes) -> Path:
    """A copy of the fixture with some arrays replaced (None drops one); returns its folder."""
    record = {k: v for k, v in dict(arrays, **changes).items() if v is not None}
    np.savez(tmp_path / FILE, **record)
    return tmp_path


def expected_items(arrays: dict[str, np.ndarray], part: str) -> tuple[np.ndarray, np.ndarray]:
    """The reference's steps: float32, permute (0, 2, 1); labels as float for BCE."""
    return np.transpose(arrays[f"x_{part}"].astype(np.float32), (0, 2, 1)), arrays[f"y_{part}"].astype(np.float32)


def collect(loader) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(loader)
    return torch.cat([b["x"] for b in batches]), torch.cat([b["y"] for b in batches])


def test_fixture_has_the_bucket_format(arrays):
    assert sorted(arrays) == sorted(f"{k}_{p}" for p in PARTS for k in ("x", "y"))
    for part in PARTS:
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        assert x.dtype == np.uint8 and x.shape == (N, 1000, 4) and (x.sum(axis=2) == 1).all()  # one base per position
        assert y.shape == (N, 36) and set(np.unique(y)) == {0, 1}
        assert (y.sum(axis=0) > 0).all() and (y.sum(axis=0) < N).all()  # both classes for every label: AUROC defined


@pytest.mark.parametrize("split", ["search", "final"])
def test_layout_and_splits_follow_the_reference(root, arrays, split):
    dm = loaded(root, split, batch_size=3, eval_batch_size=5)
    evaluated = "val" if split == "search" else "test"
    assert set(dm.datasets) == {"train", evaluated}
    assert len(dm.datasets["train"]) == N  # the final split trains on x_train only: val is never merged
    x, y = collect(dm.test_dataloader())
    want_x, want_y = expected_items(arrays, evaluated)
    assert x.dtype == torch.float32 and x.shape == (N, 4, 1000) and x.is_contiguous() and y.dtype == torch.float32
    np.testing.assert_array_equal(x.numpy(), want_x)
    np.testing.assert_array_equal(y.numpy(), want_y)
    x, y = collect(dm.train_dataloader())  # shuffled: compare as sets of (sequence, labels) rows
    want_x, want_y = expected_items(arrays, "train")
    rows = sorted(np.concatenate([x.flatten(1).numpy(), y.numpy()], axis=1).tolist())
    assert rows == sorted(np.concatenate([want_x.reshape(N, -1), want_y], axis=1).tolist())
    item = dm.datasets["train"][2]
    np.testing.assert_array_equal(item["x"].numpy(), want_x[2])
    assert item["x"][arrays["x_train"][2, 17].argmax(), 17] == 1  # base 17's channel


def test_sequences_stay_compact_in_memory(root):
    dm = loaded(root, "final")
    assert dm.datasets["train"].tensors["x"].dtype == torch.uint8 and dm.datasets["test"].tensors["y"].dtype == torch.uint8


@pytest.mark.parametrize("x_dtype", [np.bool_, np.int64, np.float64])
def test_other_stored_dtypes_give_the_same_items(tmp_path, arrays, x_dtype):
    changed = {f"x_{p}": arrays[f"x_{p}"].astype(x_dtype) for p in PARTS} | {"y_val": arrays["y_val"].astype(np.float64)}
    if x_dtype == np.float64:
        changed["x_val"][3, 500] = 0.25  # an unknown base spread over the four channels survives
    dm = loaded(rewrite(tmp_path, arrays, **changed), "search")
    for part in ("train", "val"):
        batch = dm.datasets[part].__getitems__(list(range(N)))
        want_x, want_y = expected_items(arrays | changed, part)
        np.testing.assert_array_equal(batch["x"].numpy(), want_x)
        np.testing.assert_array_equal(batch["y"].numpy(), want_y)


def test_verify_reads_the_layout(root):
    lines = DeepSEADataModule(root=str(root)).verify()
    assert len(lines) == 1 and lines[0].startswith("ok") and "train 8, val 8, test 8 sequences, x uint8, y uint8" in lines[0]


# name: (changes to the arrays, expected message, caught by `verify` too: a layout problem)
BAD_ARRAYS = {
    "no x_test": ({"x_test": None}, "expected arrays x_test and y_test", True),
    "channels first": ({"x_train": np.zeros((N, 4, 1000), np.uint8)}, r"x_train must be .*\(N, 1000, 4\)", True),
    "35 labels": ({"y_val": np.zeros((N, 35), np.uint8)}, r"y_val must be numeric labels \(8, 36\)", True),
    "one label row short": ({"y_test": np.zeros((N - 1, 36), np.uint8)}, r"\(8, 36\)", True),
    "pickled objects": ({"y_train": np.array([None] * N, dtype=object)}, "y_train must be numeric", True),
    "label 2": ({"y_val": np.full((N, 36), 2, np.uint8)}, "y_val holds values other than 0 and 1", False),
    "base value 3": ({"x_train": np.full((N, 1000, 4), 3, np.uint8)}, r"x_train holds values outside \[0, 1\]", False),
}


@pytest.mark.parametrize("case", BAD_ARRAYS)
def test_bad_arrays_give_one_line_errors_naming_the_file(tmp_path, arrays, case):
    changes, message, in_verify = BAD_ARRAYS[case]
    folder = rewrite(tmp_path, arrays, **changes)
    dm = DeepSEADataModule(root=str(folder), split="search")
    with pytest.raises(DataError, match=message) as err:
        dm.setup("fit")
    assert str(folder / FILE) in str(err.value) and "\n" not in str(err.value)
    if in_verify:
        with pytest.raises(DataError, match=message):
            dm.verify()


@pytest.mark.parametrize("cut", [1000, 60_000])
def test_truncated_file_gives_a_one_line_error(tmp_path, root, cut):
    (tmp_path / FILE).write_bytes((root / FILE).read_bytes()[:-cut])
    dm = DeepSEADataModule(root=str(tmp_path), split="final")
    with pytest.raises(DataError, match="not a readable .npz") as err:
        dm.setup("fit")
    assert str(tmp_path / FILE) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match="not a readable .npz"):
        dm.verify()


def test_a_changed_byte_fails_the_member_checksum(tmp_path, root):
    data = bytearray((root / FILE).read_bytes())
    data[5000] ^= 0xFF  # inside x_train's values: the zip member's CRC-32 no longer matches
    (tmp_path / FILE).write_bytes(bytes(data))
    with pytest.raises(DataError, match="Bad CRC-32 for file 'x_train.npy'") as err:
        DeepSEADataModule(root=str(tmp_path), split="final").setup("fit")
    assert str(tmp_path / FILE) in str(err.value) and "\n" not in str(err.value)
