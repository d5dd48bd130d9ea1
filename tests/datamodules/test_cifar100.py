"""CIFAR-100: the official archive format, the reference splits, normalisation and augmentation, downloads, errors."""

from __future__ import annotations

import os
import pickle
import pickletools
import shutil
import tarfile
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from nb360.datamodules.cifar100 import CIFAR100DataModule
from nb360.safe_pickle import loads_pickle
from nb360.errors import DataError

ARCHIVE = "cifar-100-python.tar.gz"
MEAN = np.array([0.5071, 0.4867, 0.4408], dtype=np.float32)[:, None, None]
STD = np.array([0.2675, 0.2565, 0.2761], dtype=np.float32)[:, None, None]


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar100")
    CIFAR100DataModule.write_fixture(root, 8, seed=0)
    return root


def archive_members(root: Path) -> dict[str, bytes]:
    with tarfile.open(root / ARCHIVE, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def fixture_arrays(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    """A part's raw pixels (N, 3072) and fine labels, read from the archive without nb360's loader."""
    record = loads_pickle(archive_members(root)[f"cifar-100-python/{part}"], encoding="bytes")
    return record[b"data"], np.array(record[b"fine_labels"])


def normalised(pixels: np.ndarray) -> np.ndarray:
    """ToTensor + Normalize on rows of the python batch format (1024 R, 1024 G, 1024 B values, row-major)."""
    return (pixels.reshape(-1, 3, 32, 32).astype(np.float32) / np.float32(255) - MEAN) / STD


def datamodule(root: Path, split: str, **kwargs) -> CIFAR100DataModule:
    dm = CIFAR100DataModule(root=str(root), split=split, source="local", **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


# ---------------------------------------------------------------- the fixture's format
def test_fixture_archive_has_the_official_layout_and_python2_pickles(fixture_root):
    members = archive_members(fixture_root)
    assert set(members) == {"cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"}
    for name, data in members.items():
        opcodes = {op.name for op, _, _ in pickletools.genops(data)}
        assert data[:2] == b"\x80\x02" and "BINUNICODE" not in opcodes and "SHORT_BINUNICODE" not in opcodes, name
        record = loads_pickle(data, encoding="bytes")
        assert all(isinstance(key, bytes) for key in record), name
    train = loads_pickle(members["cifar-100-python/train"], encoding="bytes")
    assert list(train) == [b"filenames", b"batch_label", b"fine_labels", b"coarse_labels", b"data"]
    assert train[b"data"].dtype == np.uint8 and train[b"data"].shape == (10, 3072)
    assert isinstance(train[b"fine_labels"], list) and all(0 <= v < 100 for v in train[b"fine_labels"])
    assert b"numpy.core.multiarray\n_reconstruct" in members["cifar-100-python/train"]
    meta = loads_pickle(members["cifar-100-python/meta"], encoding="bytes")
    assert len(meta[b"fine_label_names"]) == 100 and len(meta[b"coarse_label_names"]) == 20
    assert fixture_arrays(fixture_root, "test")[0].shape == (4, 3072)


def test_fixture_bytes_depend_only_on_the_seed(fixture_root, tmp_path):
    (same,) = CIFAR100DataModule.write_fixture(tmp_path / "same", 8, seed=0)
    (other,) = CIFAR100DataModule.write_fixture(tmp_path / "other", 8, seed=1)
    assert same.read_bytes() == (fixture_root / ARCHIVE).read_bytes() != other.read_bytes()


# ---------------------------------------------------------------- protocol
def test_search_split_is_the_first_80_percent_and_validation_is_only_normalised(fixture_root):
    dm = datamodule(fixture_root, "search")
    pixels, labels = fixture_arrays(fixture_root, "train")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert (len(train), len(val)) == (8, 2) and set(dm.datasets) == {"train", "val"}
    batch = val.__getitems__([0, 1])
    assert batch["x"].dtype == torch.float32 and batch["y"].dtype == torch.int64
    np.testing.assert_allclose(batch["x"].numpy(), normalised(pixels[8:10]), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(batch["y"].numpy(), labels[8:10])
    assert torch.equal(val.__getitems__([0, 1])["x"], batch["x"])  # no randomness
    np.testing.assert_array_equal(train.__getitems__(list(range(8)))["y"].numpy(), labels[:8])


def test_final_split_trains_on_all_training_images_and_tests_on_the_test_file(fixture_root):
    dm = datamodule(fixture_root, "final")
    train_labels = fixture_arrays(fixture_root, "train")[1]
    test_pixels, test_labels = fixture_arrays(fixture_root, "test")
    assert set(dm.datasets) == {"train", "test"} and len(dm.datasets["train"]) == 10
    np.testing.assert_array_equal(dm.datasets["train"].__getitems__(list(range(10)))["y"].numpy(), train_labels)
    test = dm.datasets["test"].__getitems__(list(range(4)))
    np.testing.assert_allclose(test["x"].numpy(), normalised(test_pixels), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(test["y"].numpy(), test_labels)
    single = dm.datasets["test"][2]
    assert single["x"].shape == (3, 32, 32) and torch.equal(single["x"], test["x"][2])


def clipped_extent(lo: int, hi: int, length: int = 16, side: int = 32) -> bool:
    """Is [lo, hi) the reference Cutout extent ``clip(c - 8), clip(c + 8)`` for some centre pixel c?"""
    return any((max(c - length // 2, 0), min(c + length // 2, side)) == (lo, hi) for c in range(side))


def explain(out: np.ndarray, pixels: np.ndarray) -> tuple[tuple[int, int, bool], tuple[int, int, int, int]]:
    """The (top, left, flipped) crop and the zeroed rectangle that turn ``pixels`` (3, 32, 32) into ``out``."""
    zero = np.all(out == 0, axis=0)  # a normalised uint8 pixel is never exactly 0 in every channel
    rows, cols = np.flatnonzero(zero.any(1)), np.flatnonzero(zero.any(0))
    box = (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1)
    assert zero[box[0] : box[1], box[2] : box[3]].all() and zero.sum() == (box[1] - box[0]) * (box[3] - box[2])
    padded = np.pad(pixels, ((0, 0), (4, 4), (4, 4)))
    matches = []
    for top in range(9):
        for left in range(9):
            crop = padded[:, top : top + 32, left : left + 32]
            for flipped in (False, True):
                expected = normalised((crop[:, :, ::-1] if flipped else crop).reshape(1, -1))[0]
                if np.allclose(np.where(zero, 0, expected), out, rtol=1e-6, atol=1e-6):
                    matches.append((top, left, flipped))
    assert len(matches) == 1, matches
    return matches[0], box


def test_training_augmentation_is_a_shifted_crop_a_flip_and_one_clipped_16x16_cutout(fixture_root):
    dm = datamodule(fixture_root, "search")
    pixels = fixture_arrays(fixture_root, "train")[0].reshape(-1, 3, 32, 32)
    torch.manual_seed(3)
    crops, sizes = set(), set()
    for _ in range(4):
        batch = dm.datasets["train"].__getitems__(list(range(8)))["x"].numpy()
        for out, image in zip(batch, pixels[:8]):
            crop, (r0, r1, c0, c1) = explain(out, image)
            assert clipped_extent(r0, r1) and clipped_extent(c0, c1)
            crops.add(crop)
            sizes.add((r1 - r0, c1 - c0))
    assert {flipped for _, _, flipped in crops} == {False, True}
    assert len({(top, left) for top, left, _ in crops}) > 10
    assert {0, 8} <= {offset for top, left, _ in crops for offset in (top, left)}  # shifts reach +-4 px
    assert (16, 16) in sizes and any(size != (16, 16) for size in sizes)  # clipped at a border sometimes


def test_augmentation_follows_the_seed_and_the_loader_yields_augmented_batches(fixture_root):
    dm = datamodule(fixture_root, "final", batch_size=4)
    torch.manual_seed(0)
    first = [b["x"].clone() for b in dm.train_dataloader()]
    torch.manual_seed(0)
    again = [b["x"].clone() for b in dm.train_dataloader()]
    assert [len(b) for b in first] == [4, 4, 2] and all(torch.equal(p, q) for p, q in zip(first, again))
    assert all(b.dtype == torch.float32 and b.shape[1:] == (3, 32, 32) and (b == 0).any() for b in first)


def test_cutout_and_crop_can_be_switched_off(fixture_root):
    dm = datamodule(fixture_root, "search", crop_padding=0, cutout=0)
    pixels = fixture_arrays(fixture_root, "train")[0][:8]
    torch.manual_seed(1)
    out = dm.datasets["train"].__getitems__(list(range(8)))["x"].numpy()
    reference = normalised(pixels)
    flipped = np.array([not np.allclose(o, r, atol=1e-6) for o, r in zip(out, reference)])
    np.testing.assert_allclose(np.where(flipped[:, None, None, None], out[..., ::-1], out), reference, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- sources
@pytest.fixture
def http_server(fixture_root):
    handler = partial(SimpleHTTPRequestHandler, directory=str(fixture_root))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_archive_downloads_from_its_url_and_is_unpacked(fixture_root, http_server, tmp_path):
    dm = CIFAR100DataModule(root=str(tmp_path), split="final", source="https", archive_url=f"{http_server}/{ARCHIVE}")
    (file,) = dm.required_files()
    assert file.s3_key is None and file.unpack
    dm.prepare_data()
    assert (tmp_path / ARCHIVE).read_bytes() == (fixture_root / ARCHIVE).read_bytes()
    assert (tmp_path / "cifar-100-python" / "train").is_file() and (tmp_path / (ARCHIVE + ".sha256")).is_file()
    dm.setup("fit")
    assert (len(dm.datasets["train"]), len(dm.datasets["test"])) == (10, 4)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_official_url_is_the_default():
    (file,) = CIFAR100DataModule(root="/nonexistent").required_files()
    assert file.url == "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" and file.name == ARCHIVE


def test_an_unpacked_folder_is_used_without_the_archive(fixture_root, tmp_path):
    with tarfile.open(fixture_root / ARCHIVE) as tar:
        tar.extractall(tmp_path, filter="data")
    dm = datamodule(tmp_path, "final")
    assert [f.name for f in dm.required_files()] == ["cifar-100-python/train", "cifar-100-python/test"]
    assert not (tmp_path / ARCHIVE).exists()
    np.testing.assert_array_equal(dm.datasets["test"].tensors["y"].numpy(), fixture_arrays(fixture_root, "test")[1])
    lines = dm.verify()
    assert len(lines) == 2 and "10 images 3x32x32 uint8" in lines[0] and "4 images" in lines[1]


def test_verify_describes_the_archive(fixture_root):
    (line,) = CIFAR100DataModule(root=str(fixture_root)).verify()
    assert line.startswith("ok") and "cifar-100-python/train" in line and "cifar-100-python/test" in line


# ---------------------------------------------------------------- bad input
def copy_archive(fixture_root: Path, root: Path) -> Path:
    root.mkdir()
    return Path(shutil.copy(fixture_root / ARCHIVE, root / ARCHIVE))


def test_a_truncated_archive_is_a_one_line_error_naming_it(fixture_root, tmp_path):
    archive = copy_archive(fixture_root, tmp_path / "root")
    archive.write_bytes(archive.read_bytes()[:20000])
    dm = CIFAR100DataModule(root=str(archive.parent), source="local")
    for action in (dm.prepare_data, dm.verify):
        with pytest.raises(DataError, match="cifar-100-python.tar.gz") as err:
            action()
        assert "\n" not in str(err.value)
    assert not (archive.parent / "cifar-100-python").exists()


def test_missing_data_is_reported_before_reading(tmp_path):
    dm = CIFAR100DataModule(root=str(tmp_path), source="local")
    with pytest.raises(DataError, match="cifar-100-python.tar.gz"):
        dm.prepare_data()
    with pytest.raises(DataError, match=r"cifar-100-python/train is missing"):
        dm.setup("fit")


def write_folder(root: Path, train: dict) -> None:
    """An unpacked folder whose train file is ``train`` (pickled by Python 3) and whose test file is valid."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    (folder / "train").write_bytes(pickle.dumps(train, protocol=2))
    test = {b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 1]}
    (folder / "test").write_bytes(pickle.dumps(test, protocol=2))


GOOD = {b"data": np.zeros((5, 3072), np.uint8), b"fine_labels": [0, 1, 2, 3, 99]}


@pytest.mark.parametrize(
    "train, message",
    [
        ({b"data": GOOD[b"data"]}, "no key b'fine_labels'"),
        ({**GOOD, b"fine_labels": [0, 1, 2, 3, 100]}, r"fine labels must lie in 0\.\.99, found 0\.\.100"),
        ({**GOOD, b"fine_labels": [0, 1, -1, 3, 4]}, "fine labels must lie in"),
        ({**GOOD, b"fine_labels": [0, 1, 2]}, "expected 5 integer b'fine_labels'"),
        ({**GOOD, b"data": np.zeros((5, 3000), np.uint8)}, r"expected b'data' as uint8 \(N, 3072\)"),
        ({**GOOD, b"data": np.zeros((5, 3072), np.float32)}, "found float32"),
        ([1, 2, 3], "expected a pickled dict"),
    ],
)
def test_malformed_batch_files_are_one_line_errors_naming_the_file(tmp_path, train, message):
    write_folder(tmp_path, train)
    dm = CIFAR100DataModule(root=str(tmp_path), split="search", source="local")
    with pytest.raises(DataError, match=message) as err:
        dm.setup("fit")
    assert str(tmp_path / "cifar-100-python" / "train") in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(DataError, match=message):
        dm.verify()


def test_python3_pickles_with_str_keys_are_read_too(tmp_path):
    write_folder(tmp_path, {"data": GOOD[b"data"], "fine_labels": GOOD[b"fine_labels"]})
    dm = datamodule(tmp_path, "search")
    assert (len(dm.datasets["train"]), len(dm.datasets["val"])) == (4, 1)
    assert dm.datasets["val"].tensors["y"].tolist() == [99]


class _Exploit:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_batch_file_that_would_run_code_is_refused(tmp_path):
    target = tmp_path / "pwned"
    write_folder(tmp_path, {**GOOD, b"batch_label": _Exploit(target)})
    with pytest.raises(DataError, match="refuses to load"):
        CIFAR100DataModule(root=str(tmp_path), source="local").setup("fit")
    assert not target.exists()

