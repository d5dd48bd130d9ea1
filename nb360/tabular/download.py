"""The NB360 NAS-Bench-201 benchmark files: fetch, convert to a store, verify.

``python -m nb360.data download --benchmark nb201-ninapro --root DIR`` fetches the NATS
file (mirrors in order: the NB360 S3 bucket, its https form, the file's own Google Drive
copy), records its SHA-256 beside it, converts it once to an ``nb360-tabular`` store
(``<stem>.nb360/``) and verifies the store. ``--data.source``, ``--data.s3_endpoint`` and
``--data.https_base`` choose or redirect the mirrors (see
:class:`nb360.datamodules.sources.Sources`).

The fetching machinery lives in :mod:`nb360.datamodules.sources`; it is imported only
when a download runs, so querying a store never needs it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nb360.errors import DataError, UsageError
from nb360.tabular.nats import default_store_path, ensure_store, source_matches
from nb360.tabular.store import Store

__all__ = ["BENCHMARKS", "BenchmarkFile", "download_benchmark", "get_benchmark", "verify_benchmark"]


@dataclass(frozen=True)
class BenchmarkFile:
    """One downloadable NATS-format benchmark file.

    ``file`` is its name and its key in the NB360 bucket; ``gdrive_id`` the id of its
    Google Drive copy; ``dataset`` the training-set key inside it; ``hp`` the protocol it
    is believed to hold (inferred from the NB360 scripts, reported by ``verify``, not enforced).
    """

    name: str
    file: str
    gdrive_id: str | None
    dataset: str
    hp: str | None
    space: str = "tss"
    description: str = ""
    sha256: str | None = None


BENCHMARKS: dict[str, BenchmarkFile] = {
    "nb201-ninapro": BenchmarkFile(
        "nb201-ninapro",
        "NATS-tss-v1_0-daa55.pickle.pbz2",
        "1y_Y3TbIE5rVhJ42hwIq6alUeMqlFr-bv",
        "ninapro",
        "200",
        description="NB360 NAS-Bench-201 precompute on NinaPro (15,625 cells, seed 777, test set stored as ori-test)",
    ),
    "nb201-darcy": BenchmarkFile(
        "nb201-darcy",
        "NATS-tss-v1_0-48858.pickle.pbz2",
        "1PXYdAjtuBz9aR4MMzbjYbVzojTQrfliU",
        "darcyflow",
        "200",
        description="NB360 NAS-Bench-201 precompute on Darcy Flow (score: relative l2, lower is better)",
    ),
}


def get_benchmark(name: str) -> BenchmarkFile:
    if name not in BENCHMARKS:
        raise UsageError(f"unknown benchmark {name!r}; choose one of: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def _gdrive_by_id(entry: BenchmarkFile, path: Path) -> None:
    """Download ``entry``'s Google Drive copy to ``path`` (through ``<name>.gdrive``, renamed when complete)."""
    import gdown
    from filelock import FileLock

    from nb360.datamodules.sources import lock_path, verify_file

    if entry.gdrive_id is None:
        raise FileNotFoundError("no Google Drive copy known")
    with FileLock(str(lock_path(path))):
        if path.exists():
            verify_file(path, entry.sha256)
            return
        output = path.with_name(path.name + ".gdrive")
        gdown.download(id=entry.gdrive_id, output=str(output), quiet=False, resume=True)
        if not output.is_file():
            raise OSError(f"gdown did not write {output.name}")
        os.replace(output, path)
        verify_file(path, entry.sha256)


def fetch_benchmark_file(entry: BenchmarkFile, root: Path, sources: Any = None) -> Path:
    """The NATS file of ``entry`` under ``root``, fetched if missing (S3, https, then its Drive id)."""
    from nb360.datamodules.sources import RemoteFile, Sources, fetch_files, verify_file

    sources = sources if sources is not None else Sources()
    root.mkdir(parents=True, exist_ok=True)
    path = root / entry.file
    if path.exists():
        verify_file(path, entry.sha256)
        return path
    order = {"auto": ["s3", "https", "gdrive"], "local": []}.get(sources.source, [sources.source])
    remote = RemoteFile(entry.file, s3_key=entry.file, sha256=entry.sha256)
    failures = []
    for source in order:
        try:
            if source == "gdrive":
                _gdrive_by_id(entry, path)
            else:
                fetch_files([remote], root, replace(sources, source=source), task=entry.name)
            return path
        except DataError as err:
            failures.append(f"{source}: {str(err).rsplit('download failed: ', 1)[-1]}")
        except Exception as err:  # noqa: BLE001 - every mirror's failure is reported, then the next is tried
            failures.append(f"{source}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}")
    tried = "; ".join(failures) if failures else "source=local: nothing downloaded"
    drive = f" (Google Drive id {entry.gdrive_id})" if entry.gdrive_id else ""
    raise DataError(f"benchmark {entry.name}: {entry.file} is not in {root.resolve()} and could not be fetched{drive}: {tried}")


def download_benchmark(
    name: str, root: str | os.PathLike[str], *, sources: Any = None, convert: bool = True, progress: bool = True
) -> list[str]:
    """Fetch benchmark ``name`` into ``root``, convert it to a store beside the file (unless ``convert`` is False), verify it."""
    entry = get_benchmark(name)
    root = Path(root)
    path = fetch_benchmark_file(entry, root, sources)
    lines = [f"ok {path}: fetched, sha256 recorded in {path.name}.sha256"]
    if convert:
        store, converted = ensure_store(path, space=entry.space, progress=progress)
        lines.append(f"ok {store}: {'converted to an nb360-tabular store' if converted else 'already converted from this file'}")
        lines += verify_benchmark(name, root)
    return lines


def verify_benchmark(name: str, root: str | os.PathLike[str]) -> list[str]:
    """Check the file's checksum and the converted store (columns, architecture order, the expected dataset)."""
    from nb360.datamodules.sources import verify_file

    entry = get_benchmark(name)
    root = Path(root)
    path, store_path = root / entry.file, default_store_path(root / entry.file)
    lines = []
    if path.exists():
        lines.append(f"ok {path}: sha256 {verify_file(path, entry.sha256)[:16]}...")
    if not (store_path / "meta.json").is_file():
        if not path.exists():
            raise DataError(
                f"benchmark {name}: neither {entry.file} nor its store is in {root}; fetch it with "
                f"`python -m nb360.data download --benchmark {name} --root {root}`"
            )
        raise DataError(f"benchmark {name}: {entry.file} is not converted yet; run the download command again to convert it")
    if path.exists() and not source_matches(store_path, path):
        raise DataError(
            f"{store_path} was not converted from the {entry.file} now in {root}; delete the store and download again"
        )
    store = Store.open(store_path)
    if store.space.name != _space_name(entry.space):
        raise DataError(f"{store_path}: space {store.space.name}, expected {entry.space}")
    if entry.dataset not in store.datasets:
        raise DataError(f"{store_path}: no {entry.dataset!r} results (datasets: {', '.join(store.datasets)})")
    lines += store.verify()
    hps = [h for d, h in store.groups if d == entry.dataset]
    if entry.hp is not None and entry.hp not in hps:
        lines.append(f"note {store_path}: {entry.dataset} holds hp {hps}, not the expected {entry.hp!r}")
    return lines


def _space_name(space: str) -> str:
    from nb360.spaces import get_space

    return get_space(space).name


def sources_from_options(options: Mapping[str, Any]) -> Any:
    """:class:`~nb360.datamodules.sources.Sources` from ``--data.KEY VALUE`` options (``source``, ``s3_endpoint``, ...)."""
    from dataclasses import fields

    from nb360.datamodules.sources import Sources

    known = {f.name for f in fields(Sources)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(
            f"unknown option(s) {', '.join('--data.' + k for k in unknown)} for a benchmark; known: {', '.join(sorted(known))}"
        )
    if "source" in options and options["source"] not in ("auto", "local", "s3", "https", "gdrive"):
        raise UsageError(f"--data.source is one of auto, local, s3, https, gdrive; not {options['source']!r}")
    return Sources(**dict(options))
