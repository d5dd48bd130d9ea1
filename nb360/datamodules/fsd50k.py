"""FSD50K (2-D point, multi-label, 200 classes): 1-s log-mel chunks of sound clips -> clip-level tags.

Reference protocol (NB ``backbone/data_utils/load_data.py``, ``audio_dataset.py`` and
``backbone/model_audio.py``): ``audio.zip`` holds manifests ``chunks/{tr,val,eval}.csv``
(columns ``files,labels,ext``: a 1-s 22,050 Hz wav chunk, its clip's comma-separated
label names, its clip id), ``chunks/lbl_map.json`` (label name -> index) and background
noise wavs ``noise_22050/*.wav``. One training sample is one random chunk of a clip
(one epoch = one pass over the clips) as a 96 x 101 log-mel spectrogram, augmented
(PadToSize, SpecAugment, RandomCrop, background noise mix; see
:mod:`nb360.datamodules.fsd50k_features`), with the clip's 200-label multi-hot target.
Evaluation scores every chunk of every clip and averages the logits over a clip's
chunks (the ``one_minus_map`` metric, through the ``clip`` key). Search split:
``tr`` -> ``val``; final split: ``tr`` -> ``eval`` (val is never merged into training).
The log-mel features of every chunk do not depend on the epoch (the augmentations come
after them), so they are computed once and cached in ``.npy`` files next to the manifests
(``chunks/features_<part>_<key>.npy``, memory-mapped when read, ``--data.feature_cache``);
the train-time augmentations then run on the cached tensors.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import sys
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.io.wavfile
import torch
from torch import Tensor
from torch.utils.data import Dataset

from nb360.datamodules.base import TaskDataModule
from nb360.datamodules.fsd50k_features import (
    CHUNK_SAMPLES,
    FEATURE_PARAMS,
    FRAMES,
    N_MELS,
    SAMPLE_RATE,
    BackgroundMix,
    LogMel,
    TrainAugment,
    pad_to_size,
    read_wav,
)
from nb360.datamodules.sources import RemoteFile
from nb360.errors import DataError
from nb360.io import atomic_open, atomic_path
from nb360.tasks import Reference, TaskSpec, register_task

__all__ = [
    "FSD50KDataModule",
    "Manifest",
    "read_manifest",
    "read_label_map",
    "noise_features",
    "TrainClips",
    "EvalChunks",
    "ARCHIVE",
    "feature_cache_path",
    "cached_features",
]

ARCHIVE = "audio.zip"
PARTS = ("tr", "val", "eval")
COLUMNS = ("files", "labels", "ext")
LABEL_MAP = "lbl_map.json"
NOISE_DIR = "noise_22050"
LABEL_DELIMITER = ","
# the archive's folders sit either under data/ (the layout the reference reads) or at its top level
DATA_PREFIXES = ("data/", "")


@dataclass(frozen=True)
class Manifest:
    """One manifest's chunks grouped by clip.

    Chunks are sorted by clip id (stably, so a clip's chunks keep their CSV order); clip
    ``c`` owns chunks ``starts[c] : starts[c] + counts[c]``.

    Attributes:
        paths: resolved wav path of every chunk (bytes, file-system encoding).
        clips: the clip ids (the ``ext`` column), sorted, int64.
        starts, counts: each clip's first chunk and number of chunks.
        targets: multi-hot labels of every clip, uint8 ``(clips, labels)``.
    """

    paths: np.ndarray
    clips: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    targets: np.ndarray

    @property
    def chunk_clip(self) -> np.ndarray:
        """The clip index (into ``clips``) of every chunk."""
        return np.repeat(np.arange(len(self.clips)), self.counts)


def read_label_map(path: Path, num_labels: int) -> dict[str, int]:
    """``lbl_map.json``: a JSON object mapping ``num_labels`` label names to the distinct indices ``0 .. num_labels - 1``."""
    try:
        mapping = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path} is missing (the archive {ARCHIVE} was not unpacked completely?)") from None
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable JSON file: {type(err).__name__}: {err}".splitlines()[0]) from None
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and type(v) is int for k, v in mapping.items()):
        raise DataError(f"{path}: expected a JSON object mapping label names to integer indices")
    if sorted(mapping.values()) != list(range(num_labels)):
        raise DataError(f"{path}: expected {num_labels} labels with the indices 0..{num_labels - 1}, found {len(mapping)} labels")
    return mapping


def _read_columns(path: Path) -> tuple[Sequence[str], Sequence[str], Sequence[str]]:
    """The ``files``, ``labels`` and ``ext`` columns of a manifest, after checking its header (columns in any order)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise DataError(f"{path} is missing (the archive {ARCHIVE} was not unpacked completely?)") from None
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{path}: not a readable CSV file: {type(err).__name__}: {err}".splitlines()[0]) from None
    if not rows or sorted(rows[0]) != sorted(COLUMNS):
        found = ",".join(rows[0]) if rows else "an empty file"
        raise DataError(f"{path}: expected the header {','.join(COLUMNS)}, found {found}")
    order = [rows[0].index(column) for column in COLUMNS]
    body = rows[1:]
    if not body:
        raise DataError(f"{path}: no chunks listed")
    for line, row in enumerate(body, start=2):
        if len(row) != len(COLUMNS):
            raise DataError(f"{path}: line {line} has {len(row)} fields, expected {len(COLUMNS)}")
    columns = list(zip(*body))
    return columns[order[0]], columns[order[1]], columns[order[2]]


def _clip_ids(path: Path, exts: Sequence[str]) -> np.ndarray:
    ids = np.empty(len(exts), dtype=np.int64)
    for row, ext in enumerate(exts):
        try:
            ids[row] = int(ext)
        except (ValueError, OverflowError):
            raise DataError(f"{path}: line {row + 2}: clip id (ext) {ext!r} is not a 64-bit integer") from None
    return ids


def _multi_hot(path: Path, labels: Sequence[str], label_map: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Multi-hot rows of the distinct label strings and each row's index into them."""
    distinct: dict[str, int] = {}
    inverse = np.array([distinct.setdefault(text, len(distinct)) for text in labels], dtype=np.int64)
    hot = np.zeros((len(distinct), len(label_map)), dtype=np.uint8)
    for text, row in distinct.items():
        for name in text.split(LABEL_DELIMITER):
            if name not in label_map:
                line = labels.index(text) + 2
                raise DataError(f"{path}: line {line}: unknown label name {name!r} (not in {LABEL_MAP})")
            hot[row, label_map[name]] = 1
    return hot, inverse


def _path_resolver(path: Path, first: str, bases: Sequence[Path]) -> tuple[Path | None, int]:
    """How the manifest's first wav path resolves: as it is (absolute), or a base folder and how many leading parts to drop.

    A path is tried whole and then without its leading components (so that a prefix from the
    machine that wrote the manifest does not matter), under each base in turn.
    """
    if os.path.isabs(first) and os.path.isfile(first):
        return None, 0
    parts = first.split("/")
    for drop in range(len(parts)):
        tail = parts[drop:]
        if tail[0] == "":
            continue
        for base in bases:
            if base.joinpath(*tail).is_file():
                return base, drop
    raise DataError(f"{path}: wav {first!r} (line 2) not found, neither as it is nor under {', '.join(str(b) for b in bases)}")


def _resolve_paths(path: Path, files: Sequence[str], bases: Sequence[Path]) -> list[str]:
    """Every wav path resolved like the first one; one-line error naming the first wav that is missing."""
    base, drop = _path_resolver(path, files[0], bases)
    if base is None:
        resolved = list(files)
    else:
        prefix = str(base)
        resolved = [os.path.join(prefix, *f.split("/")[drop:]) for f in files]
    listings: dict[str, set[str]] = {}
    for line, (original, full) in enumerate(zip(files, resolved), start=2):
        folder, name = os.path.split(full)
        if folder not in listings:
            try:
                listings[folder] = {entry.name for entry in os.scandir(folder) if entry.is_file()}
            except OSError:
                listings[folder] = set()
        if name not in listings[folder]:
            raise DataError(f"{path}: line {line}: wav {original!r} is missing (looked for {full})")
    return resolved


def read_manifest(path: Path, label_map: Mapping[str, int], bases: Sequence[Path]) -> Manifest:
    """Parse one manifest CSV: labels (names quoted when they hold commas), clip ids, resolved wav paths."""
    files, labels, exts = _read_columns(path)
    clip_of_row = _clip_ids(path, exts)
    hot, label_row = _multi_hot(path, labels, label_map)
    order = np.argsort(clip_of_row, kind="stable")
    clips, starts, counts = np.unique(clip_of_row[order], return_index=True, return_counts=True)
    label_sorted = label_row[order]
    differs = label_sorted != np.repeat(label_sorted[starts], counts)
    if differs.any():
        clip = clip_of_row[order][int(np.argmax(differs))]
        raise DataError(f"{path}: the chunks of clip {clip} carry different labels")
    resolved = _resolve_paths(path, files, bases)
    paths = np.array([os.fsencode(resolved[i]) for i in order])
    targets = hot[label_sorted[starts]]
    return Manifest(paths=paths, clips=clips, starts=starts.astype(np.int64), counts=counts.astype(np.int64), targets=targets)


def noise_features(folder: Path) -> list[Tensor]:
    """Log-mel features of every background-noise wav (whole files, tiled to at least 1 s), in file-name order."""
    files = sorted(folder.glob("*.wav"))
    if not files:
        raise DataError(f"{folder}: no background-noise wav files (the training set mixes them in)")
    logmel = LogMel()
    return [logmel(torch.from_numpy(read_wav(f))) for f in files]


def chunk_features(path: str, logmel: LogMel) -> Tensor:
    """One chunk's wav -> its ``(96, 101)`` log-mel features."""
    audio = read_wav(path)
    if audio.size > CHUNK_SAMPLES:
        raise DataError(f"{path}: {audio.size} samples, expected a 1-s chunk of at most {CHUNK_SAMPLES}")
    return logmel(torch.from_numpy(audio))


def feature_cache_path(manifest: Manifest, folder: Path, part: str, params: Mapping[str, Any] | None = None) -> Path:
    """``folder/features_<part>_<key>.npy``: ``key`` hashes the feature parameters and every chunk's wav (path, size, mtime).

    A changed parameter, a rewritten, added, removed or reordered wav gives another key, hence a fresh cache.
    (The wav files' sizes and modification times stand for their checksums: hashing every wav at each
    start would cost as much as computing the features.)
    """
    digest = hashlib.sha256(json.dumps(dict(FEATURE_PARAMS if params is None else params), sort_keys=True).encode())
    for raw in manifest.paths:
        stat = os.stat(raw)
        digest.update(raw + b"\0" + f"{stat.st_size}:{stat.st_mtime_ns}".encode() + b"\0")
    return folder / f"features_{part}_{digest.hexdigest()[:16]}.npy"


def cached_features(manifest: Manifest, folder: Path, part: str) -> np.ndarray | None:
    """The features of every chunk of ``manifest``, ``(chunks, 96, 101)`` float32, memory-mapped from their cache.

    A missing or stale cache is (re)computed chunk by chunk, exactly as the datasets compute a chunk on the fly,
    written to a temporary file and renamed into place (so a half-written cache never looks complete);
    older caches of the same part are removed. Where the folder is not writable: ``None``, after one note.
    """
    path = feature_cache_path(manifest, folder, part)
    expected = (len(manifest.paths), N_MELS, FRAMES)
    if path.is_file():
        try:
            cache = np.load(path, mmap_mode="r", allow_pickle=False)
            if cache.shape == expected and cache.dtype == np.float32:
                return cache
        except (OSError, ValueError):
            pass  # unreadable: computed again below
    logmel = LogMel()
    try:
        with atomic_path(path) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=expected)
            for chunk, raw in enumerate(manifest.paths):
                out[chunk] = chunk_features(os.fsdecode(raw), logmel).numpy()
            out.flush()
            del out
    except OSError as err:
        reason = err.strerror or str(err)
        print(f"nb360: cannot write the FSD50K feature cache {path} ({reason}): features computed on the fly", file=sys.stderr)
        return None
    for old in folder.glob(f"features_{part}_*.npy"):
        if old != path:
            old.unlink(missing_ok=True)
    return np.load(path, mmap_mode="r", allow_pickle=False)


class _ChunkFeatures(Dataset):
    """Shared by the training and evaluation datasets: a chunk's (96, frames) log-mel features, from the cache or its wav."""

    def __init__(self, manifest: Manifest, cache: np.ndarray | None = None) -> None:
        self.manifest = manifest
        self.cache = cache
        self.logmel = LogMel()

    def features(self, chunk: int) -> Tensor:
        if self.cache is not None:
            return torch.from_numpy(np.array(self.cache[chunk]))
        return chunk_features(os.fsdecode(self.manifest.paths[chunk]), self.logmel)

    def target(self, clip: int) -> Tensor:
        return torch.from_numpy(self.manifest.targets[clip].astype(np.float32))


class TrainClips(_ChunkFeatures):
    """One item per clip: a uniformly drawn chunk of it, augmented, with the clip's multi-hot target."""

    def __init__(
        self,
        manifest: Manifest,
        noises: Sequence[Tensor],
        augment: TrainAugment = TrainAugment(),
        mix: BackgroundMix = BackgroundMix(),
        cache: np.ndarray | None = None,
    ) -> None:
        super().__init__(manifest, cache)
        self.noises, self.augment, self.mix = list(noises), augment, mix

    def __len__(self) -> int:
        return len(self.manifest.clips)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        chunk = int(self.manifest.starts[index]) + int(torch.randint(int(self.manifest.counts[index]), ()).item())
        x = self.mix(self.augment(self.features(chunk)), self.noises, self.augment)
        return {"x": x[None].contiguous(), "y": self.target(index), "clip": torch.tensor(self.manifest.clips[index])}


class EvalChunks(_ChunkFeatures):
    """One item per chunk of every clip, constant-padded to 101 frames, never cropped or augmented."""

    def __init__(self, manifest: Manifest, cache: np.ndarray | None = None) -> None:
        super().__init__(manifest, cache)
        self.chunk_clip = manifest.chunk_clip

    def __len__(self) -> int:
        return len(self.manifest.paths)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        clip = int(self.chunk_clip[index])
        x = pad_to_size(self.features(index), FRAMES, "constant")
        return {"x": x[None].contiguous(), "y": self.target(clip), "clip": torch.tensor(self.manifest.clips[clip])}


class FSD50KDataModule(TaskDataModule):
    """FSD50K chunks from the reference ``audio.zip``, with log-mel features computed once (cached) or on the fly.

    The archive is unpacked into the data root. Its folders ``chunks/`` and
    ``noise_22050/`` are looked for under ``<root>/data`` and then ``<root>``. A wav path
    in a manifest is resolved against the data root, then ``<root>/data``, then the
    manifest's folder, dropping leading components until it exists (the first row decides
    for all rows).

    Args:
        drop_last: drop the last incomplete training batch, as the reference's train loader does.
        feature_cache: compute every chunk's log-mel features once, into ``chunks/features_<part>_<key>.npy``
            (about as large as the wavs: 38.8 kB a chunk), instead of at every epoch; ``false``: on the fly.
        **kwargs: the common options of :class:`~nb360.datamodules.base.TaskDataModule`.
    """

    task = "fsd50k"
    files = (RemoteFile(ARCHIVE, s3_key=f"audio/{ARCHIVE}", unpack=True),)

    def __init__(self, drop_last: bool = True, feature_cache: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.drop_last = drop_last
        self.feature_cache = feature_cache

    def prepare_data(self) -> None:
        """Fetch and unpack the archive, then (rank 0 only, before the other processes set up) fill the feature caches."""
        super().prepare_data()
        if self.feature_cache:
            self.load()

    def data_dir(self) -> Path:
        """The folder that holds ``chunks/`` and ``noise_22050/`` after unpacking."""
        for prefix in DATA_PREFIXES:
            folder = self.root / prefix
            if (folder / "chunks" / LABEL_MAP).is_file():
                return folder
        raise DataError(
            f"{self.root / 'data' / 'chunks' / LABEL_MAP} is missing; fetch and unpack {ARCHIVE} with "
            f"`python -m nb360.data download --task fsd50k --root {self.root}`"
        )

    def load(self) -> Mapping[str, Dataset]:
        folder = self.data_dir()
        chunks = folder / "chunks"
        label_map = read_label_map(chunks / LABEL_MAP, self.spec.num_outputs)
        bases = list(dict.fromkeys([self.root, folder, chunks]))

        def manifest(part: str) -> tuple[Manifest, np.ndarray | None]:
            read = read_manifest(chunks / f"{part}.csv", label_map, bases)
            return read, cached_features(read, chunks, part) if self.feature_cache else None

        train_manifest, train_cache = manifest("tr")
        train = TrainClips(train_manifest, noise_features(folder / NOISE_DIR), cache=train_cache)
        if self.split == "search":
            return {"train": train, "val": EvalChunks(*manifest("val"))}
        return {"train": train, "test": EvalChunks(*manifest("eval"))}

    def describe_file(self, path: Path) -> str:
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                prefix = next((p for p in DATA_PREFIXES if f"{p}chunks/{LABEL_MAP}" in names), None)
                if prefix is None:
                    raise DataError(f"{path}: no chunks/{LABEL_MAP} (nor data/chunks/{LABEL_MAP}) in the archive")
                missing = [f"{prefix}chunks/{part}.csv" for part in PARTS if f"{prefix}chunks/{part}.csv" not in names]
                if missing:
                    raise DataError(f"{path}: the archive lacks {', '.join(missing)}")
                mapping = json.loads(archive.read(f"{prefix}chunks/{LABEL_MAP}").decode("utf-8"))
                headers = {part: _first_line(archive, f"{prefix}chunks/{part}.csv") for part in PARTS}
        except DataError:
            raise
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
            reason = f"{type(err).__name__}: {err}".splitlines()[0]
            raise DataError(f"{path}: not a readable zip archive (truncated or corrupt?): {reason}") from None
        if not isinstance(mapping, dict) or len(mapping) != self.spec.num_outputs:
            raise DataError(f"{path}: {prefix}chunks/{LABEL_MAP} must map {self.spec.num_outputs} label names to indices")
        bad = {part: header for part, header in headers.items() if sorted(header.split(",")) != sorted(COLUMNS)}
        if bad:
            raise DataError(f"{path}: manifest headers must be {','.join(COLUMNS)}, found {bad}")
        wavs = sum(name.endswith(".wav") for name in names)
        noise = sum(name.startswith(f"{prefix}{NOISE_DIR}/") and name.endswith(".wav") for name in names)
        return (
            f"zip, {len(names)} members: manifests {', '.join(PARTS)}, {len(mapping)} labels, "
            f"{wavs - noise} chunk wavs, {noise} noise wavs"
        )

    @classmethod
    def write_fixture(cls, root: Path, n: int, seed: int = 0) -> list[Path]:
        """``audio.zip`` with ``data/chunks/{tr,val,eval}.csv``, a 200-label ``lbl_map.json``, 1-s int16 wavs and one noise wav.

        Each part has ``max(2, n // 4)`` clips of 2 or 3 chunks (tones plus noise); every part
        has a clip with two labels (a quoted ``"a,b"`` field); the training manifest's rows
        are shuffled, as the reference's are. The noise wav lasts 1.5 s, so its spectrogram
        is cropped like a longer recording.
        """
        rng = np.random.default_rng(seed)
        names = [f"Label_{i:03d}" for i in range(200)]
        members: dict[str, bytes] = {"data/chunks/lbl_map.json": json.dumps({name: i for i, name in enumerate(names)}).encode()}
        clips_per_part = max(2, n // 4)
        ids = rng.choice(np.arange(10_000, 1_000_000), size=len(PARTS) * clips_per_part, replace=False)
        for p, part in enumerate(PARTS):
            folder = "data/eval_chunks" if part == "eval" else "data/dev_chunks"
            rows = []
            for c, clip in enumerate(ids[p * clips_per_part : (p + 1) * clips_per_part]):
                chosen = rng.choice(len(names), size=2 if c == 0 else int(rng.integers(1, 3)), replace=False)
                labels = LABEL_DELIMITER.join(names[i] for i in chosen)
                for k in range(2 + c % 2):
                    name = f"{folder}/{clip}_{k:04d}.wav"
                    members[name] = _fixture_wav(rng, CHUNK_SAMPLES)
                    rows.append([name, labels, str(clip)])
            if part == "tr":
                rows = [rows[i] for i in rng.permutation(len(rows))]
            members[f"data/chunks/{part}.csv"] = _csv_bytes([list(COLUMNS), *rows])
        members[f"data/{NOISE_DIR}/n0.wav"] = _fixture_wav(rng, CHUNK_SAMPLES * 3 // 2)
        path = Path(root) / ARCHIVE
        with atomic_open(path, "wb") as f, zipfile.ZipFile(f, "w") as archive:
            for name, data in members.items():
                info = zipfile.ZipInfo(name, date_time=(2021, 1, 1, 0, 0, 0))  # fixed, so that a seed gives the same bytes
                info.external_attr = 0o644 << 16
                archive.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
        return [path]

    @classmethod
    def fixture_args(cls, n: int) -> dict[str, Any]:
        """Batches of 2 clips, so that the reference's ``drop_last`` keeps a training batch of the fixture's clips."""
        return {"batch_size": 2}


def _first_line(archive: zipfile.ZipFile, name: str) -> str:
    with archive.open(name) as f:
        return f.readline().decode("utf-8-sig").strip()


def _fixture_wav(rng: np.random.Generator, samples: int) -> bytes:
    """Mono 22,050 Hz int16 PCM: two random tones and white noise."""
    t = np.arange(samples) / SAMPLE_RATE
    tones = sum(rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * (rng.uniform(100, 8000) * t + rng.uniform())) for _ in range(2))
    audio = tones + 0.02 * rng.standard_normal(samples)
    buffer = io.BytesIO()
    scipy.io.wavfile.write(buffer, SAMPLE_RATE, np.round(audio * 32767).astype(np.int16))
    return buffer.getvalue()


def _csv_bytes(rows: Sequence[Sequence[str]]) -> bytes:
    """Rows as CSV text with ``\\n`` line ends (pandas' ``to_csv``), quoting fields that hold commas."""
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue().encode("utf-8")


SPEC = register_task(
    TaskSpec(
        name="fsd50k",
        title="FSD50K",
        dims=2,
        kind="point",
        input_shape=(1, 96, 101),
        num_outputs=200,
        loss="bce_with_logits",
        metric="one_minus_map",
        reference=Reference(lr=0.1, batch_size=256),
        aliases=("audio",),
        datamodule=FSD50KDataModule,
    )
)
