"""Spherical CIFAR-100: the gzip pickle format, the reference splits and casts, compact storage, errors."""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nb360.safe_pickle import load_pickle
from nb360.datamodules.spherical import SphericalDataModule
from nb360.errors import DataError
from nb360.tasks import get_task

FILE = "s2_cifar100.gz"


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("spherical")
    SphericalDataModule.write_fixture(root, 8, seed=0)
    return root


def fixture_content(root: Path) -> dict:
    with gzip.open(root / FILE, "rb") as f:
        return load_pickle(f)


def datamodule(root: Path, split: str, **kwargs) -> SphericalDataModule:
    dm = SphericalDataModule(root=str(root), split=split, source="local", **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def everything(dataset) -> dict[str, torch.Tensor]:
    return dataset.__getitems__(list(range(len(dataset))))


def test_fixture_is_a_gzip_pickle_of_the_reference_layout(fixture_root):
    assert (fixture_root / FILE).read_bytes()[:2] == b"\x1f\x8b"
    content = fixture_content(fixture_root)
    assert set(content) == {"train", "test"}
    for part, size in (("train", 10), ("test", 4)):
        assert set(content[part]) == {"images", "labels"}
        images, labels = content[part]["images"], content[part]["labels"]
        assert images.dtype == np.float32 and images.shape == (size, 3, 60, 60)
        assert labels.dtype == np.int64 and labels.shape == (size,) and 0 <= labels.min() and labels.max() < 100
    assert (fixture_root / FILE).stat().st_size < 1_000_000


def test_fixture_bytes_depend_only_on_the_seed(fixture_root, tmp_path):
    (same,) = SphericalDataModule.write_fixture(tmp_path / "same", 8, seed=0)
    (other,) = SphericalDataModule.write_fixture(tmp_path / "other", 8, seed=1)
    assert same.read_bytes() == (fixture_root / FILE).read_bytes() != other.read_bytes()


def test_search_split_is_first_80_percent_then_the_rest_unnormalised(fixture_root):
    dm = datamodule(fixture_root, "search")
    train = fixture_content(fixture_root)["train"]
    n_fit = int((1 - 0.2) * len(train["labels"]))  # the reference's ntrain
    assert set(dm.datasets) == {"train", "val"} and n_fit == 8
    for name, rows in (("train", slice(0, n_fit)), ("val", slice(n_fit, None))):
        batch = everything(dm.datasets[name])
        assert batch["x"].dtype == torch.float32 and batch["y"].dtype == torch.int64
        np.testing.assert_array_equal(batch["x"].numpy(), train["images"][rows])
        np.testing.assert_array_equal(batch["y"].numpy(), train["labels"][rows])


def test_final_split_trains_on_all_and_tests_on_the_test_part(fixture_root):
    dm = datamodule(fixture_root, "final", batch_size=4)
    content = fixture_content(fixture_root)
    assert set(dm.datasets) == {"train", "test"}
    for name, part in (("train", "train"), ("test", "test")):
        batch = everything(dm.datasets[name])
        np.testing.assert_array_equal(batch["x"].numpy(), content[part]["images"])
        np.testing.assert_array_equal(batch["y"].numpy(), content[part]["labels"])
    sample = dm.datasets["test"][3]
    assert sample["x"].shape == (3, 60, 60) and sample["x"].dtype == torch.float32 and sample["y"] == content["test"]["labels"][3]
    torch.manual_seed(0)
    batches = list(dm.train_dataloader())
    assert [len(b["y"]) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat([b["y"] for b in batches]).tolist()) == sorted(content["train"]["labels"])


def write_file(path: Path, content) -> None:
    with gzip.open(path, "wb") as f:
        pickle.dump(content, f)


def parts(rng, images_dtype=np.float32, train: int = 10, test: int = 5) -> dict:
    return {
        name: {"images": (rng.random((size, 3, 60, 60)) * 255).astype(images_dtype), "labels": rng.integers(0, 100, size)}
        for name, size in (("train", train), ("test", test))
    }


def test_uint8_images_stay_compact_and_are_cast_per_batch(tmp_path):
    content = parts(np.random.default_rng(1), np.uint8)
    write_file(tmp_path / FILE, content)
    dm = datamodule(tmp_path, "final")
    assert dm.datasets["train"].tensors["x"].dtype == torch.uint8
    batch = everything(dm.datasets["test"])
    assert batch["x"].dtype == torch.float32
    np.testing.assert_array_equal(batch["x"].numpy(), content["test"]["images"].astype(np.float32))  # 0..255, as the reference


def test_float64_images_and_float_labels_are_cast_like_the_reference(tmp_path):
    content = parts(np.random.default_rng(2), np.float64)
    content["train"]["labels"] = content["train"]["labels"].astype(np.float64)
    write_file(tmp_path / FILE, content)
    dm = datamodule(tmp_path, "search")
    val = everything(dm.datasets["val"])
    np.testing.assert_array_equal(val["x"].numpy(), content["train"]["images"][8:].astype(np.float32))
    np.testing.assert_array_equal(val["y"].numpy(), content["train"]["labels"][8:].astype(np.int64))
    assert dm.datasets["train"].tensors["x"].dtype == torch.float32


def test_verify_summarises_the_file(fixture_root):
    (line,) = SphericalDataModule(root=str(fixture_root)).verify()
    assert line.startswith("ok") and "train 10 images 3x60x60 float32" in line and "test 4 images" in line


def test_spec_keeps_the_reference_top_left_pooling():
    assert dict(get_task("scifar100").network_options["wrn"]) == {"pool": 8}


def _bad_contents():
    rng = np.random.default_rng(3)
    good = parts(rng)
    yield {"train": good["train"]}, "expected a pickled dict with 'train' and 'test'"
    yield {**good, "test": {"images": good["test"]["images"]}}, "'test' must be a dict with 'images' and 'labels'"
    small = good["train"]["images"][:, :, :32, :32]
    yield {**good, "train": {**good["train"], "images": small}}, r"train images must be a numeric array \(N, 3, 60, 60\)"
    yield {**good, "train": {**good["train"], "images": np.full((10, 3, 60, 60), None)}}, "found object"
    short = good["train"]["labels"][:3]
    yield {**good, "train": {**good["train"], "labels": short}}, r"train labels must be a numeric array \(10,\)"
    too_big = np.array([0, 1, 2, 3, 100])
    yield {**good, "test": {**good["test"], "labels": too_big}}, r"test labels must be whole numbers in 0\.\.99, found .*100"
    yield {**good, "test": {**good["test"], "labels": np.array([0, 1, 2.5, 3, 4])}}, "whole numbers"


@pytest.mark.parametrize("content, message", list(_bad_contents()))
def test_malformed_contents_are_one_line_errors_naming_the_file(tmp_path, content, message):
    write_file(tmp_path / FILE, content)
    dm = SphericalDataModule(root=str(tmp_path), source="local")
    for action in (lambda: dm.setup("fit"), dm.verify):
        with pytest.raises(DataError, match=message) as err:
            action()
        assert str(tmp_path / FILE) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("damage", ["truncate", "not_gzip"])
def test_truncated_or_foreign_files_are_one_line_errors(fixture_root, tmp_path, damage):
    data = (fixture_root / FILE).read_bytes()
    (tmp_path / FILE).write_bytes(data[: len(data) // 2] if damage == "truncate" else pickle.dumps({"train": 1}))
    with pytest.raises(DataError, match="s2_cifar100.gz is not a readable pickle") as err:
        SphericalDataModule(root=str(tmp_path), source="local").setup("fit")
    assert "\n" not in str(err.value)


def test_missing_file_is_reported(tmp_path):
    dm = SphericalDataModule(root=str(tmp_path), source="local")
    with pytest.raises(DataError, match="missing s2_cifar100.gz"):
        dm.prepare_data()
    with pytest.raises(DataError, match="s2_cifar100.gz is missing"):
        dm.setup("fit")


class _Exploit:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_file_that_would_run_code_is_refused(tmp_path):
    target = tmp_path / "pwned"
    write_file(tmp_path / FILE, {**parts(np.random.default_rng(4)), "note": _Exploit(target)})
    with pytest.raises(DataError, match="refuses to load"):
        SphericalDataModule(root=str(tmp_path), source="local").setup("fit")
    assert not target.exists()

