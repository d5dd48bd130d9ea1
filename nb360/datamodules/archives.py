"""Unpacking downloaded archives (zip, tar, tar.gz) into a task's data root, atomically and safely.

An archive is unpacked into a temporary folder beside its destination, checked member
by member (no absolute paths, no ``..``, no links leaving the folder), and only then
moved into place; a marker file records which archive (by its checksum) was unpacked,
so a later run skips the work and a replaced archive is unpacked again. A truncated or
corrupt archive stops with one line and leaves nothing half-unpacked.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from filelock import FileLock

from nb360.datamodules.sources import checksum_path
from nb360.errors import DataError
from nb360.io import atomic_open, sha256_file

__all__ = ["extract"]


def _check_name(archive: Path, name: str) -> None:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise DataError(f"{archive}: member {name!r} would be written outside the data folder; refusing to unpack")


def _unpack(archive: Path, into: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                _check_name(archive, name)
            bad = zf.testzip()
            if bad is not None:
                raise DataError(f"{archive}: member {bad!r} is corrupt (CRC mismatch); delete the archive to fetch it again")
            zf.extractall(into)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            for member in tf.getmembers():
                _check_name(archive, member.name)
            tf.extractall(into, filter="data")
    else:
        raise DataError(f"{archive} is neither a zip nor a tar archive (truncated or corrupt?)")


def extract(archive: Path, destination: Path) -> Path:
    """Unpack ``archive`` into ``destination`` once per archive content; return ``destination``."""
    destination.mkdir(parents=True, exist_ok=True)
    marker = destination / f".unpacked-{archive.name}"
    with FileLock(str(destination / f".{archive.name}.unpack.lock")):
        sidecar = checksum_path(archive)
        digest = sidecar.read_text().split()[0] if sidecar.exists() else sha256_file(archive)
        if marker.exists() and marker.read_text().strip() == digest:
            return destination
        staging = Path(tempfile.mkdtemp(prefix=f".unpacking-{archive.name}-", dir=destination))
        try:
            try:
                _unpack(archive, staging)
            except DataError:
                raise
            except (OSError, EOFError, zipfile.BadZipFile, tarfile.TarError) as err:
                raise DataError(f"{archive} is truncated or corrupt: {type(err).__name__}: {err}".splitlines()[0]) from None
            for item in staging.iterdir():
                target = destination / item.name
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                elif target.exists() or target.is_symlink():
                    target.unlink()
                item.replace(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        with atomic_open(marker, "w") as f:
            f.write(digest + "\n")
    return destination
