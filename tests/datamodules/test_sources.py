"""Fetching task files: anonymous S3 (a local moto server), https with resume, atomicity, checksums, locking."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import S3_PAYLOAD as PAYLOAD
from nb360.datamodules.darcy import DarcyDataModule
from nb360.datamodules.sources import RemoteFile, Sources, checksum_path, fetch_files
from nb360.errors import DataError


class _Files(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=K-`` unless told not to; can cut a response short."""

    def do_GET(self):  # noqa: N802
        server = self.server
        body = server.files.get(self.path.lstrip("/"))
        server.requests.append((self.path, self.headers.get("Range")))
        if body is None:
            self.send_error(404)
            return
        start = 0
        header = self.headers.get("Range")
        if header and server.ranges:
            start = int(header.split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        chunk = body[start:]
        if server.cut_after is not None:
            chunk = chunk[: server.cut_after]
        self.wfile.write(chunk)

    def log_message(self, *args):
        pass


@pytest.fixture
def https_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    server.files, server.requests, server.ranges, server.cut_after = {"task/blob.bin": PAYLOAD}, [], True, None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


BLOB = RemoteFile("blob.bin", "task/blob.bin")


def test_s3_download_is_anonymous_and_records_a_checksum(tmp_path, s3_server, monkeypatch):
    url, _ = s3_server
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    (path,) = fetch_files([BLOB], tmp_path, Sources("s3", s3_endpoint=url), "t")
    assert path.read_bytes() == PAYLOAD
    assert checksum_path(path).read_text() == f"{hashlib.sha256(PAYLOAD).hexdigest()}  blob.bin\n"
    assert not list(tmp_path.glob("*.part"))


def test_s3_download_resumes_a_partial_file(tmp_path, s3_server):
    url, _ = s3_server
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD[:300_000])
    (path,) = fetch_files([BLOB], tmp_path, Sources("s3", s3_endpoint=url), "t")
    assert path.read_bytes() == PAYLOAD


def test_darcy_files_through_the_real_s3_path(tmp_path, s3_server, darcy_root):
    url, client = s3_server
    for part in (1, 2):
        name = f"piececonst_r21_N8_smooth{part}.mat"
        client.put_object(Bucket="pde-xd", Key=name, Body=(darcy_root / name).read_bytes(), ACL="public-read")
    dm = DarcyDataModule(root=str(tmp_path), resolution=21, samples=8, n_train=8, n_val=2, n_test=8, source="s3", s3_endpoint=url)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.datasets["test"].tensors["x"].shape == (8, 3, 5, 5)
    assert all(line.startswith("ok") for line in dm.verify())


def test_https_download_resumes_with_a_range_request(tmp_path, https_server):
    server, url = https_server
    (tmp_path / "blob.bin.part").write_bytes(PAYLOAD[:123_456])
    (path,) = fetch_files([BLOB], tmp_path, Sources("https", https_base=url), "t")
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("/task/blob.bin", "bytes=123456-")]


def test_a_server_ignoring_ranges_restarts_the_download(tmp_path, https_server):
    server, url = https_server
    server.ranges = False
    (tmp_path / "blob.bin.part").write_bytes(b"stale bytes")
    (path,) = fetch_files([BLOB], tmp_path, Sources("https", https_base=url), "t")
    assert path.read_bytes() == PAYLOAD


def test_an_interrupted_download_never_looks_complete_and_resumes_later(tmp_path, https_server):
    server, url = https_server
    server.cut_after = 200_000
    with pytest.raises(DataError) as err:
        fetch_files([BLOB], tmp_path, Sources("https", https_base=url), "t")
    assert "blob.bin" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "blob.bin").exists() and not checksum_path(tmp_path / "blob.bin").exists()
    assert (tmp_path / "blob.bin.part").stat().st_size == 200_000
    server.cut_after = None
    (path,) = fetch_files([BLOB], tmp_path, Sources("https", https_base=url), "t")
    assert path.read_bytes() == PAYLOAD
    assert server.requests[-1] == ("/task/blob.bin", "bytes=200000-")


def test_concurrent_fetches_download_once(tmp_path, https_server):
    server, url = https_server
    errors = []

    def fetch():
        try:
            fetch_files([BLOB], tmp_path, Sources("https", https_base=url), "t")
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(server.requests) == 1
    assert (tmp_path / "blob.bin").read_bytes() == PAYLOAD


def test_every_failing_source_is_reported_in_one_line(tmp_path, https_server):
    server, url = https_server
    missing = RemoteFile("gone.bin", "task/gone.bin")
    with pytest.raises(DataError) as err:
        fetch_files([missing], tmp_path, Sources("https", https_base=url), "t")
    message = str(err.value)
    assert "gone.bin" in message and "https: HTTPError" in message and "\n" not in message
    assert not list(Path(tmp_path).glob("gone.bin*"))


def test_a_download_that_does_not_match_its_published_md5_is_rejected(tmp_path, https_server):
    import hashlib

    server, url = https_server
    good = RemoteFile("blob.bin", "task/blob.bin", md5=hashlib.md5(PAYLOAD).hexdigest())
    (path,) = fetch_files([good], tmp_path / "ok", Sources("https", https_base=url), "t")
    assert path.read_bytes() == PAYLOAD
    wrong = RemoteFile("blob.bin", "task/blob.bin", md5="0" * 32)
    with pytest.raises(DataError, match="https: ChecksumMismatch: the download's md5 is .*, not the published 0000"):
        fetch_files([wrong], tmp_path / "bad", Sources("https", https_base=url), "t")
    assert not list((tmp_path / "bad").glob("blob.bin*"))  # neither the final name nor a partial file is left
