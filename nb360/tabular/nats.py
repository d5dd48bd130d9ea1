"""NATS-Bench files: ``NATS-{tss,sss}-v1_0-*.pickle.pbz2`` and the ``fast_mode`` directories, read and imported.

A NATS file is a bz2-compressed pickle (protocol 4) of plain containers::

    {"meta_archs": [arch strings], "total_archs": n,
     "arch2infos": {index: {hp: ArchResults-state}}, "evaluated_indexes": {indexes}}

and the ``fast_mode`` layout is a directory holding ``meta.pickle.pbz2`` (the same dict
with ``arch2infos`` None and ``evaluated_indexes`` empty) plus one
``{index:06d}.pickle.pbz2`` per architecture holding ``{hp: ArchResults-state}``. An
``ArchResults`` state is ``{arch_index, arch_str, all_results: {(dataset, seed):
ResultsCount-state}, dataset_seed: {dataset: [seeds]}, clear_net_done}``; a
``ResultsCount`` state holds one run (see :func:`nb360.tabular.nats_export.results_count_state`).

:func:`load_nats_pickle` reads them through :mod:`nb360.safe_pickle`'s restricted
unpickler, which resolves only builtin containers and scalars, ``OrderedDict`` and numpy
scalars and arrays (the real files store some floats as ``numpy.float64``): a pickle
naming anything else stops with a one-line :class:`~nb360.errors.DataError` before
anything is called.
:func:`import_nats` converts a file or directory to an ``nb360-tabular`` store;
:func:`nb360.tabular.nats_export.export_nats` writes a store back in either layout, and
:func:`nb360.tabular.fixture.write_fixture` a tiny file for tests.
"""

from __future__ import annotations

import bz2
import os
import pickle
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nb360.errors import DataError
from nb360.io import atomic_path
from nb360.safe_pickle import load_pickle
from nb360.tabular.builder import StoreBuilder
from nb360.tabular.schema import NAN, VERSION, RunRecord, ScoreRule

__all__ = [
    "default_store_path",
    "ensure_store",
    "import_nats",
    "load_nats_pickle",
    "read_nats",
    "save_nats_pickle",
    "source_matches",
]

PICKLE_EXT = ".pickle.pbz2"


def load_nats_pickle(path: str | os.PathLike[str]) -> Any:
    """Read a ``.pickle.pbz2`` file through the restricted unpickler; a bad or missing file is a one-line DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    with bz2.BZ2File(path, "rb") as f:
        return load_pickle(f, source=str(path))


def save_nats_pickle(obj: Any, path: str | os.PathLike[str], compresslevel: int = 9) -> Path:
    """Write ``obj`` as NATS does (bz2, pickle protocol 4), atomically."""
    path = Path(path)
    with atomic_path(path) as tmp, bz2.BZ2File(tmp, "wb", compresslevel=compresslevel) as f:
        pickle.dump(obj, f, protocol=4)
    return path


# ---------------------------------------------------------------------------------------- reading
def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="arch", disable=not enabled, leave=False)


def read_nats(path: str | os.PathLike[str]) -> tuple[dict[str, Any], Iterator[tuple[int, Mapping[str, Any]]], int]:
    """``(meta, (index, {hp: ArchResults-state}) iterator, count)`` of a NATS file or fast-mode directory.

    The iterator of a single file hands out (and drops) its architectures one by one, so
    the converted arrays replace the pickled dicts as it goes.
    """
    path = Path(path)
    if path.is_dir():
        meta = load_nats_pickle(path / f"meta{PICKLE_EXT}")
        files: dict[int, Path] = {}
        for file in path.iterdir():
            match = re.fullmatch(r"(\d+)" + re.escape(PICKLE_EXT), file.name)
            if match:
                files.setdefault(int(match.group(1)), file)
        _check_meta(meta, path)

        def from_dir() -> Iterator[tuple[int, Mapping[str, Any]]]:
            for index in sorted(files):
                yield index, load_nats_pickle(files[index])

        return meta, from_dir(), len(files)
    data = load_nats_pickle(path)
    _check_meta(data, path)
    infos = data.get("arch2infos")
    if not isinstance(infos, dict):
        raise DataError(f"{path}: arch2infos is {type(infos).__name__}, not a dict (a fast-mode meta file? pass its directory)")
    data["arch2infos"] = None

    def from_file() -> Iterator[tuple[int, Mapping[str, Any]]]:
        for index in sorted(infos):
            yield index, infos.pop(index)

    return data, from_file(), len(infos)


def _check_meta(meta: Any, path: Path) -> None:
    if not isinstance(meta, dict) or not isinstance(meta.get("meta_archs"), (list, tuple)):
        raise DataError(f"{path}: not a NATS-Bench benchmark (no meta_archs list)")


def _detect_space(meta: Mapping[str, Any], path: Path, space: str | None) -> Any:
    from nb360.spaces import get_space

    if space is not None:
        return get_space(space)
    name = path.name
    if "-tss-" in name:
        return get_space("tss")
    if "-sss-" in name:
        return get_space("sss")
    first = meta["meta_archs"][0] if meta["meta_archs"] else ""
    return get_space("sss" if re.fullmatch(r"\d+(:\d+){4}", str(first)) else "tss")


_KEYS: dict[tuple[str, int], list[str]] = {}


def _eval_keys(name: str, epochs: int) -> list[str]:
    keys = _KEYS.get((name, epochs))
    if keys is None:
        keys = _KEYS[(name, epochs)] = [f"{name}@{e}" for e in range(epochs)]
    return keys


def _float(value: Any) -> float:
    return NAN if value is None else float(value)


def _series(values: Any, keys: Sequence[Any], what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """``(values[key] for every key as float64, mask of NaNs recorded as values or None)``.

    Absent keys and None values become NaN ("not recorded"); ``values`` None gives all NaN.
    """
    if values is None:
        return np.full(len(keys), NAN), None
    if not isinstance(values, dict):
        raise DataError(f"{what} is a {type(values).__name__}, not a dict")
    try:
        try:
            arr = np.fromiter(map(values.__getitem__, keys), dtype=np.float64, count=len(keys))
        except (KeyError, TypeError):  # some epochs absent or None
            arr = np.array([_float(values.get(k)) for k in keys], dtype=np.float64)
            recorded = np.array([k in values and values[k] is not None for k in keys]) & np.isnan(arr)
            return arr, (recorded if recorded.any() else None)
    except (ValueError, TypeError) as err:
        raise DataError(f"{what}: non-numeric value ({type(err).__name__}: {err})") from None
    nan = np.isnan(arr)
    return arr, (nan if nan.any() else None)


_RC_FIELDS = ("epochs", "train_acc1es", "train_losses", "eval_names", "eval_acc1es", "eval_losses", "params", "flop")


def _runs_from_state(state: Any, index: int, hp: str, arch: str, where: str) -> Iterator[RunRecord]:
    if not isinstance(state, dict) or not isinstance(state.get("all_results"), dict):
        raise DataError(f"{where}: architecture {index}, hp {hp!r}: not an ArchResults state (no all_results dict)")
    if state.get("arch_str", arch) != arch:
        raise DataError(f"{where}: architecture {index} is {state.get('arch_str')!r} in its record but {arch!r} in meta_archs")
    for key, rc in state["all_results"].items():
        run = f"{where}: architecture {index}, hp {hp!r}, run {key!r}"
        if not (isinstance(key, tuple) and len(key) == 2) or not isinstance(rc, dict):
            raise DataError(f"{run}: all_results must map (dataset, seed) to a ResultsCount state")
        missing = [f for f in _RC_FIELDS if f not in rc]
        if missing:
            raise DataError(f"{run}: the ResultsCount state lacks {', '.join(missing)}")
        dataset, seed = key
        epochs = int(rc["epochs"])
        steps = range(epochs)
        train: dict[str, np.ndarray] = {}
        nan_values: dict[str, np.ndarray] = {}
        for column, field in (
            ("loss", "train_losses"),
            ("acc1", "train_acc1es"),
            ("acc5", "train_acc5es"),
            ("time", "train_times"),
        ):
            train[column], recorded = _series(rc.get(field), steps, f"{run} {field}")
            if recorded is not None:
                nan_values[f"train.{column}"] = recorded
        evals: dict[str, dict[str, np.ndarray]] = {}
        for name in rc["eval_names"]:
            keys = _eval_keys(name, epochs)
            evals[name] = {}
            for column, field in (("loss", "eval_losses"), ("acc1", "eval_acc1es"), ("time", "eval_times")):
                evals[name][column], recorded = _series(rc.get(field), keys, f"{run} {field}")
                if recorded is not None:
                    nan_values[f"{name}.{column}"] = recorded
        latency = rc.get("latency")
        yield RunRecord(
            arch_index=index,
            dataset=str(dataset),
            hp=str(hp),
            seed=int(seed),
            epochs=epochs,
            train=train,
            evals=evals,
            params=_float(rc["params"]),
            flops=_float(rc["flop"]),
            latency=None if latency is None else [_float(v) for v in latency],
            arch_config=rc.get("arch_config"),
            seed_label=rc.get("seed", int(seed)),
            nan_values=nan_values or None,
        )


def default_store_path(path: str | os.PathLike[str]) -> Path:
    """Where :func:`import_nats` puts the store of a NATS file or directory: beside it, ``<stem>.nb360``."""
    path = Path(path)
    name = path.name.removesuffix(PICKLE_EXT)
    return path.with_name(f"{name}.nb360")


def source_matches(store: str | os.PathLike[str], path: str | os.PathLike[str]) -> bool:
    """Whether the store at ``store`` was imported from ``path`` as it is now (same name, and same SHA-256 for a file)."""
    import json

    path = Path(path)
    try:
        source = json.loads((Path(store) / "meta.json").read_text(encoding="utf-8")).get("source") or {}
    except (OSError, ValueError):
        return False
    if source.get("file") != path.name:
        return False
    if path.is_dir():
        return source.get("layout") == "fast_mode"
    from nb360.io import file_digest

    return source.get("sha256") == file_digest(path)


def _store_version(store: Path) -> Any:
    import json

    try:
        return json.loads((store / "meta.json").read_text(encoding="utf-8")).get("version")
    except (OSError, ValueError, AttributeError):
        return None


def ensure_store(path: str | os.PathLike[str], *, space: str | None = None, progress: bool = True) -> tuple[Path, bool]:
    """``(store, converted)``: the store of the NATS file or directory ``path``, converted first if it is missing or stale.

    Stale: converted from another file, or written in another store format version.

    A lock file beside the store keeps concurrent processes from converting it twice.
    """
    from filelock import FileLock

    path = Path(path)
    target = default_store_path(path)
    with FileLock(str(target.with_name(f".{target.name}.lock"))):
        if (target / "meta.json").is_file() and _store_version(target) == VERSION and source_matches(target, path):
            return target, False
        import_nats(path, target, space=space, overwrite=True, progress=progress)
        return target, True


def import_nats(
    path: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    space: str | None = None,
    score: Mapping[str, ScoreRule | Mapping[str, Any]] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Convert a NATS file or fast-mode directory into a store at ``out`` (default :func:`default_store_path`)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist")
    out = Path(out) if out is not None else default_store_path(path)
    meta, states, count = read_nats(path)
    search_space = _detect_space(meta, path, space)
    archs = list(meta["meta_archs"])
    if archs != list(search_space.archs):
        raise DataError(
            f"{path}: meta_archs ({len(archs)} architectures) differs from the index order of space {search_space.name} "
            f"({len(search_space)}); the file belongs to another ordering or space"
        )
    builder = StoreBuilder(search_space.name, score=score)
    clear: dict[str, bool] = {}
    with _progress(count, f"import {path.name}", progress) as bar:
        for index, hp2state in states:
            if not 0 <= index < len(archs):
                raise DataError(f"{path}: architecture index {index} out of range 0..{len(archs) - 1}")
            if not isinstance(hp2state, dict):
                raise DataError(f"{path}: architecture {index} holds a {type(hp2state).__name__}, not {{hp: ArchResults}}")
            for hp, state in hp2state.items():
                for run in _runs_from_state(state, index, str(hp), archs[index], str(path)):
                    builder.add(run)
                clear.setdefault(str(hp), bool(state.get("clear_net_done", True)))
            bar.update(1)
    if not len(builder):
        raise DataError(f"{path}: no evaluated architecture found")
    groups = {key for key in builder._groups}
    nats = {(d, h): {"clear_net_done": clear.get(h, True), "layout": "fast_mode" if path.is_dir() else "file"} for d, h in groups}
    source: dict[str, Any] | Path = path
    if path.is_dir():
        source = {"file": path.name, "sha256": None, "layout": "fast_mode", "files": count}
    return builder.write(out, source=source, overwrite=overwrite, nats=nats)
