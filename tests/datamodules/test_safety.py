"""Restricted unpickling, archive unpacking and the Google Drive source."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from nb360.datamodules.archives import extract
from nb360.safe_pickle import load_npy, load_pickle, loads_pickle
from nb360.datamodules.sources import RemoteFile, Sources, fetch_files
from nb360.errors import DataError


class _Exploit:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    target = tmp_path / "pwned"
    payload = pickle.dumps({"data": [1, 2], "evil": _Exploit(target)})
    assert not target.exists()
    with pytest.raises(DataError, match=r"refuses to load") as err:
        loads_pickle(payload, source="challenge2017.pkl")
    assert "posix.system" in str(err.value) or "os.system" in str(err.value)
    assert "challenge2017.pkl" in str(err.value) and "\n" not in str(err.value)
    assert not target.exists()
    pickle.loads(payload)  # the same bytes really do run code when loaded without restriction
    assert target.exists()


def test_an_npy_with_a_malicious_object_payload_is_refused(tmp_path):
    target = tmp_path / "pwned"
    path = tmp_path / "satellite_train.npy"
    np.save(path, np.array([_Exploit(target)], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="refuses to load"):
        load_npy(path)
    assert not target.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_containers_and_numpy_arrays_load(tmp_path, protocol):
    rng = np.random.default_rng(0)
    value = {
        "images": rng.random((3, 3, 4, 4)).astype(np.float32),
        "labels": np.arange(3, dtype=np.int64),
        "seq": "ACDE",
        "nested": [(1, 2.5, b"x"), {"k": np.float64(3.0)}],
        "objects": np.array([np.arange(3), np.arange(5)], dtype=object),
    }
    loaded = loads_pickle(pickle.dumps(value, protocol=protocol))
    np.testing.assert_array_equal(loaded["images"], value["images"])
    assert loaded["images"].dtype == np.float32 and loaded["seq"] == "ACDE" and loaded["nested"][1]["k"] == 3.0
    assert [list(a) for a in loaded["objects"]] == [[0, 1, 2], [0, 1, 2, 3, 4]]
    path = tmp_path / "s2.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(value, f, protocol=protocol)
    with gzip.open(path, "rb") as f:
        np.testing.assert_array_equal(load_pickle(f)["labels"], value["labels"])


def test_npy_files_plain_and_with_objects(tmp_path):
    plain = np.arange(12, dtype=np.float32).reshape(3, 4)
    np.save(tmp_path / "plain.npy", plain)
    np.testing.assert_array_equal(load_npy(tmp_path / "plain.npy"), plain)
    np.testing.assert_array_equal(load_npy(tmp_path / "plain.npy", mmap=True), plain)
    record = {"data": np.ones((2, 46)), "label": np.array([1, 24])}
    np.save(tmp_path / "dict.npy", record, allow_pickle=True)  # a 0-d object array, as Satellite's files
    loaded = load_npy(tmp_path / "dict.npy")
    np.testing.assert_array_equal(loaded["label"], [1, 24])
    triple = np.array((5, "ACDEF", np.eye(5)), dtype=object)  # PSICOV's (L, seq, cb_map)
    np.save(tmp_path / "x-cb.npy", triple, allow_pickle=True)
    length, seq, cb = load_npy(tmp_path / "x-cb.npy")
    assert (length, seq) == (5, "ACDEF") and cb.shape == (5, 5)


def test_truncated_pickles_are_one_line_errors(tmp_path):
    data = pickle.dumps({"a": np.arange(100)})
    with pytest.raises(DataError, match="not a readable pickle") as err:
        loads_pickle(data[: len(data) // 2], source="x.pkl")
    assert "\n" not in str(err.value)
    (tmp_path / "t.npy").write_bytes(b"\x93NUMPY\x01\x00garbage")
    with pytest.raises(DataError, match="not a readable .npy"):
        load_npy(tmp_path / "t.npy")


# ---------------------------------------------------------------- archives
def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz" if path.suffix == ".gz" else "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("maker, name", [(make_zip, "a.zip"), (make_tar, "a.tar"), (make_tar, "a.tar.gz")])
def test_archives_unpack_once(tmp_path, maker, name):
    archive = maker(tmp_path / name, {"data/x.txt": b"hello", "data/sub/y.bin": b"\x00\x01"})
    dest = tmp_path / "root"
    extract(archive, dest)
    assert (dest / "data" / "x.txt").read_bytes() == b"hello" and (dest / "data" / "sub" / "y.bin").read_bytes() == b"\x00\x01"
    (dest / "data" / "x.txt").write_bytes(b"edited")
    extract(archive, dest)  # same archive: not unpacked again
    assert (dest / "data" / "x.txt").read_bytes() == b"edited"
    maker(archive, {"data/x.txt": b"new content"})
    extract(archive, dest)  # a different archive: unpacked again
    assert (dest / "data" / "x.txt").read_bytes() == b"new content"
    assert not [p for p in dest.iterdir() if p.name.startswith(".unpacking")]


def test_members_escaping_the_folder_are_refused(tmp_path):
    archive = make_tar(tmp_path / "evil.tar", {"../escape.txt": b"x"})
    with pytest.raises(DataError, match="outside the data folder"):
        extract(archive, tmp_path / "root")
    assert not (tmp_path / "escape.txt").exists()


def test_a_truncated_archive_leaves_nothing_half_unpacked(tmp_path):
    archive = make_zip(tmp_path / "protein.zip", {f"deepcov/features/p{i}.pkl": os.urandom(5000) for i in range(5)})
    archive.write_bytes(archive.read_bytes()[:12000])
    dest = tmp_path / "root"
    with pytest.raises(DataError, match="protein.zip") as err:
        extract(archive, dest)
    assert "\n" not in str(err.value)
    assert [p.name for p in dest.iterdir() if not p.name.endswith(".lock")] == []


# ---------------------------------------------------------------- Google Drive (gdown), without a network
def test_google_drive_source_matches_files_by_name(tmp_path, monkeypatch):
    import gdown

    calls = []

    def fake_folder(id, skip_download, quiet, timeout):
        calls.append(("list", id))
        return [SimpleNamespace(id="f1", path="ECG/challenge2017.pkl"), SimpleNamespace(id="f2", path="other.bin")]

    def fake_download(id, output, quiet, resume, timeout):
        calls.append(("get", id))
        Path(output).write_bytes(b"ecg bytes")
        return output

    monkeypatch.setattr(gdown, "download_folder", fake_folder)
    monkeypatch.setattr(gdown, "download", fake_download)
    (path,) = fetch_files([RemoteFile("challenge2017.pkl", "ECG/challenge2017.pkl")], tmp_path, Sources("gdrive", gdrive_folder="FOLDER"), "ecg")
    assert path.read_bytes() == b"ecg bytes" and calls == [("list", "FOLDER"), ("get", "f1")]
    with pytest.raises(DataError, match="gdrive: FileNotFoundError: no file named missing.npz"):
        fetch_files([RemoteFile("missing.npz", "x/missing.npz")], tmp_path, Sources("gdrive", gdrive_folder="FOLDER"), "t")
