"""Fetching and caching task files: local directory, the NB360 S3 bucket (anonymous), https, Google Drive.

With ``source="auto"`` a missing file is looked for in this order: the local data root,
the S3 bucket ``pde-xd`` (unsigned boto3), its https form, then the Google Drive folder
the NB360 README points to since late 2022 (through ``gdown``). Each source that fails
is reported in the final one-line error.

Every file lives under the task's data root. A download goes to ``<name>.part`` and
resumes from there after an interruption (HTTP/S3 range requests); only a complete
download is renamed to ``<name>``. The SHA-256 of each file is recorded beside it in
``<name>.sha256`` (``sha256sum -c`` format) when nb360 first gets it, and checked on
every later use, so a file changed or truncated later is caught. A lock file per data
file keeps concurrent runs on one cache from fetching or checking it at the same time.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from filelock import FileLock
from tqdm.auto import tqdm

from nb360.errors import DataError
from nb360.io import atomic_open, file_digest, sha256_file

__all__ = [
    "RemoteFile",
    "Sources",
    "SourceName",
    "fetch_files",
    "verify_file",
    "record_checksum",
    "checksum_path",
    "lock_path",
]

SourceName = Literal["auto", "local", "s3", "https", "gdrive"]
NB360_DRIVE_FOLDER = "1OOp6UrCiP79mTIkCrUdjjHWDo8K0bJUw"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """A file a task needs.

    Attributes:
        name: its path under the task's data root.
        s3_key: its key in the NB360 bucket (also its path under ``https_base`` and its
            file name in the Google Drive folder); ``None`` if the bucket does not hold it.
        url: a direct https URL for files that live elsewhere (e.g. the official CIFAR-100
            archive); tried by the ``https`` source instead of ``https_base``.
        sha256: a published SHA-256, if there is one (otherwise it is recorded on first use).
        md5: a published MD5 (e.g. CIFAR-100's), checked after a download, before the SHA-256 is recorded.
        unpack: the file is an archive to unpack into the data root after fetching it.
    """

    name: str
    s3_key: str | None = None
    url: str | None = None
    sha256: str | None = None
    md5: str | None = None
    unpack: bool = False


@dataclass(frozen=True)
class Sources:
    """Where task files come from. ``auto`` tries the local root, then S3, then https, then Google Drive.

    ``s3_endpoint`` points boto3 at another S3 server (a mirror or a local test server);
    ``https_base`` is the URL prefix of an https mirror (default: the bucket's own https form);
    ``gdrive_folder`` is the id of a Google Drive folder holding the files (matched by file name).
    """

    source: SourceName = "auto"
    s3_bucket: str = "pde-xd"
    s3_endpoint: str | None = None
    https_base: str = "https://pde-xd.s3.amazonaws.com"
    gdrive_folder: str = NB360_DRIVE_FOLDER

    def order(self) -> list[str]:
        return ["s3", "https", "gdrive"] if self.source == "auto" else ([] if self.source == "local" else [self.source])

    def describe(self) -> str:
        endpoint = f" at {self.s3_endpoint}" if self.s3_endpoint else ""
        return f"s3://{self.s3_bucket}/{endpoint}, {self.https_base.rstrip('/')}/ or Google Drive folder {self.gdrive_folder}"


def lock_path(path: Path) -> Path:
    """The lock file that serialises fetching, generating or unpacking ``path`` (hidden, beside it)."""
    return path.with_name(f".{path.name}.lock")


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def record_checksum(path: Path) -> str:
    digest = sha256_file(path)
    with atomic_open(checksum_path(path), "w", encoding="utf-8") as f:
        f.write(f"{digest}  {path.name}\n")
    return digest


def verify_file(path: Path, expected: str | None = None) -> str:
    """Check ``path`` against its recorded (or a published) SHA-256; record it on first use."""
    sidecar = checksum_path(path)
    if sidecar.exists():
        recorded = sidecar.read_text(encoding="utf-8").split()[0] if sidecar.stat().st_size else ""
        expected = expected or recorded
    if expected is None:
        return record_checksum(path)
    actual = sha256_file(path)
    if actual != expected:
        raise DataError(
            f"checksum mismatch for {path}: expected sha256 {expected[:16]}..., found {actual[:16]}...; "
            f"the file is corrupt or was replaced; delete it and {sidecar.name} to fetch it again"
        )
    if not sidecar.exists():
        record_checksum(path)
    return actual


def _published_mismatch(part: Path, file: RemoteFile) -> str | None:
    """Why a finished download does not match the checksums published for it, if it does not."""
    for algorithm, published in (("sha256", file.sha256), ("md5", file.md5)):
        if published is not None and (found := file_digest(part, algorithm)) != published:
            return f"the download's {algorithm} is {found}, not the published {published}"
    return None


def _progress(name: str, total: int | None, initial: int) -> tqdm:
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name, leave=False)


def _download_s3(sources: Sources, file: RemoteFile, part: Path) -> None:
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    config = Config(signature_version=UNSIGNED, connect_timeout=15, read_timeout=60, retries={"max_attempts": 3})
    client = boto3.client("s3", endpoint_url=sources.s3_endpoint, config=config)
    if file.s3_key is None:
        raise FileNotFoundError("not in the NB360 bucket")
    key = file.s3_key
    total = int(client.head_object(Bucket=sources.s3_bucket, Key=key)["ContentLength"])
    offset = part.stat().st_size if part.exists() else 0
    if offset > total:
        part.unlink()
        offset = 0
    with open(part, "ab") as out, _progress(part.name[: -len(".part")], total, offset) as bar:
        if offset < total:
            body = client.get_object(Bucket=sources.s3_bucket, Key=key, Range=f"bytes={offset}-")["Body"]
            for block in body.iter_chunks(_CHUNK):
                out.write(block)
                bar.update(len(block))
    if part.stat().st_size != total:
        raise OSError(f"incomplete download ({part.stat().st_size} of {total} bytes)")


def _download_https(sources: Sources, file: RemoteFile, part: Path) -> None:
    if file.url is None and file.s3_key is None:
        raise FileNotFoundError("no https location known")
    url = file.url or f"{sources.https_base.rstrip('/')}/{file.s3_key}"
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=30)
    except urllib.error.HTTPError as err:
        if err.code != 416:  # 416: the partial file already holds everything
            raise
        return
    with response:
        if offset and response.status != 206:  # the server ignored the range: start over
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with open(part, "ab" if offset else "wb") as out, _progress(part.name[: -len(".part")], total, offset) as bar:
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                bar.update(len(block))
    if total is not None and part.stat().st_size != total:
        raise OSError(f"incomplete download ({part.stat().st_size} of {total} bytes)")


def _download_gdrive(sources: Sources, file: RemoteFile, part: Path) -> None:
    """Find ``key``'s file name in the Drive folder listing and download it with gdown (which resumes itself).

    gdown writes its own partial files and treats an existing output as complete, so it
    writes to ``<name>.gdrive``, which becomes the ``.part`` file only when gdown is done.
    """
    import gdown

    listing = gdown.download_folder(id=sources.gdrive_folder, skip_download=True, quiet=True, timeout=30)
    wanted = PurePosixPath(file.s3_key or file.name).name
    matches = [entry for entry in listing or [] if PurePosixPath(entry.path).name == wanted]
    if not matches:
        raise FileNotFoundError(f"no file named {wanted} in Google Drive folder {sources.gdrive_folder}")
    output = part.with_name(part.name[: -len(".part")] + ".gdrive")
    gdown.download(id=matches[0].id, output=str(output), quiet=False, resume=True, timeout=60)
    if not output.is_file():
        raise OSError(f"gdown did not write {output.name}")
    os.replace(output, part)


_DOWNLOADERS = {"s3": _download_s3, "https": _download_https, "gdrive": _download_gdrive}


def _fetch_one(file: RemoteFile, root: Path, sources: Sources) -> tuple[Path, list[str]]:
    path = root / file.name
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path(path))):
        if path.exists():  # already fetched, or put there by the user
            verify_file(path, file.sha256)
            return path, []
        failures = []
        part = path.with_name(path.name + ".part")
        for name in sources.order():
            try:
                _DOWNLOADERS[name](sources, file, part)
            except Exception as err:  # each source's failure is reported, then the next is tried
                failures.append(f"{name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
                continue
            problem = _published_mismatch(part, file)
            if problem is not None:  # a wrong file never takes the final name
                part.unlink()
                failures.append(f"{name}: ChecksumMismatch: {problem}")
                continue
            os.replace(part, path)
            verify_file(path, file.sha256)
            return path, []
        return path, failures


def fetch_files(files: Sequence[RemoteFile], root: Path, sources: Sources, task: str, hint: str = "") -> list[Path]:
    """Make every file of ``files`` present and verified under ``root``; one-line :class:`DataError` otherwise."""
    root.mkdir(parents=True, exist_ok=True)
    paths, missing, reasons = [], [], {}
    for file in files:
        path, failures = _fetch_one(file, root, sources)
        paths.append(path)
        if not path.exists():
            missing.append(file.name)
            for failure in failures:
                reasons.setdefault(failure.split(":", 1)[0], failure)
    if missing:
        tried = f"; download failed: {'; '.join(reasons.values())}" if reasons else "; source=local: nothing downloaded"
        raise DataError(
            f"task {task}: missing {', '.join(missing)} in {root.resolve()}; fetch them with "
            f"`python -m nb360.data download --task {task} --root {root}` (from {sources.describe()}) "
            f"or put them in that directory{hint}{tried}"
        )
    return paths
