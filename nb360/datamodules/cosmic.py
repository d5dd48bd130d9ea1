"""Cosmic (2-D dense, per-pixel binary): cosmic-ray masks of Hubble ACS/WFC images (deepCR).

Reference protocol (NB ``backbone/data_utils/cosmic_dataset.py`` and
``backbone/model_grid_original.py``): the two deepCR tars unpack to
``npy_{train,test}/<filter>/<prop_id>/<visit>/<k>_*.npy``; only filter ``f435w`` and
visits whose field type is ``GAL`` in deepCR's hard-coded table are used (4,830 train
files, 420 test files). The search split fits on the first 90 % of the training files
and validates on the last 10 %; the final split fits on all of them and tests on the
test files. Every sample is cropped to ``[64:192, 64:192]`` and its image gets the sky
augmentation ``image + sky[k - 1] * U(-0.9, 3)`` in every split. Files are read lazily,
one sample at a time (4,830 x 3 x 256 x 256 float32 is 3.8 GB).
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, Any, cast

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from nb360.datamodules.base import TaskDataModule
from nb360.datamodules.sources import RemoteFile
from nb360.errors import DataError, UsageError
from nb360.io import atomic_open
from nb360.tasks import Reference, TaskSpec, register_task

__all__ = ["CosmicDataModule", "CosmicDataset", "FIELD_TYPES", "TRAIN_TAR", "TEST_TAR"]

TRAIN_TAR = "deepCR.ACS-WFC.train.tar"
TEST_TAR = "deepCR.ACS-WFC.test.tar"
PART_DIRS = {TRAIN_TAR: "npy_train", TEST_TAR: "npy_test"}
FILTER = "f435w"
FIELD = "GAL"
SKY_FILE = "sky.npy"

# Field type of every ACS/WFC visit "<prop_id>_<visit>" of the deepCR data: GC (globular
# cluster), EX (extragalactic field) or GAL (resolved galaxy). Data copied from the
# ``field_type`` table of NB backbone/data_utils/cosmic_dataset.py (itself from deepCR).
FIELD_TYPES: Mapping[str, str] = {
    "10595_2": "GC", "10595_7": "GC", "9442_1": "GC", "9442_3": "GC", "9442_5": "GC",
    "10760_2": "GAL", "10760_4": "GAL", "10631_3": "EX", "10631_1": "EX", "10631_4": "EX",
    "12103_a3": "EX", "13498_b1": "EX", "13737_2": "GAL", "13737_3": "GAL", "9490_a3": "GAL",
    "10349_30": "GC", "10005_10": "GC", "10120_3": "GC", "12513_2": "GAL", "12513_3": "GAL",
    "14164_9": "EX", "13718_6": "EX", "10524_7": "GC", "10182_pb": "GAL", "10182_pd": "GAL",
    "9425_2": "EX", "9425_4": "EX", "9583_99": "EX", "10584_13": "GAL", "9978_5e": "EX",
    "15100_2": "EX", "15647_13": "EX", "11340_11": "GC", "13389_10": "EX", "9694_6": "EX",
    "10342_3": "GAL", "14343_1": "GAL", "10536_13": "EX", "13057_1": "GAL", "10260_7": "GAL",
    "10260_5": "GAL", "10407_3": "GAL", "13375_4": "EX", "13375_7": "EX", "13364_95": "GAL",
    "10190_28": "GAL", "10190_13": "GAL", "10146_4": "GC", "10146_3": "GC", "10775_ab": "GC",
    "11586_5": "GC", "12438_1": "EX", "13671_35": "EX", "14164_1": "GC", "9490_a2": "GAL",
    "9405_6d": "EX", "9405_4b": "EX", "9450_14": "EX", "10092_1": "EX", "13691_11": "GAL",
    "12058_12": "GAL", "12058_16": "GAL", "12058_1": "GAL", "9450_16": "EX", "10775_52": "GC",
    "12602_1": "GC", "12602_2": "GC", "10775_29": "GC", "10775_ad": "GC", "12058_6": "GAL",
    "14704_1": "GAL", "13804_6": "GAL",
}


def is_sample_name(name: str) -> bool:
    """A sample file of a visit directory: any ``.npy`` file except the visit's ``sky.npy``."""
    return name.endswith(".npy") and name != SKY_FILE


def visit_selected(prop_id: str, visit: str, where: object) -> bool:
    """Whether a visit's samples are used: its field type must be ``GAL``; unknown visits are an error."""
    key = f"{prop_id}_{visit}"
    if key not in FIELD_TYPES:
        raise DataError(f"{where}: visit {key} of filter {FILTER} is not in deepCR's field-type table; unexpected data layout")
    return FIELD_TYPES[key] == FIELD


def check_header(shape: tuple[int, ...], dtype: np.dtype, min_size: int, where: object) -> None:
    """A sample is a float (3, H, W) [image, CR mask, ignore mask] or (2, H, W) array, with H, W >= ``min_size``."""
    if len(shape) != 3 or shape[0] not in (2, 3) or dtype.kind != "f":
        raise DataError(f"{where}: expected a float array of shape (3, H, W) or (2, H, W), found {dtype} {shape}")
    if min(shape[1:]) < min_size:
        raise DataError(f"{where}: image {shape[1]} x {shape[2]} is smaller than the crop, which needs {min_size} x {min_size}")


def exposure_index(path: Path, sky_length: int) -> int:
    """The exposure number ``k`` (the file-name prefix before ``_``); the sample's sky level is ``sky[k - 1]``."""
    try:
        k = int(path.name.split("_")[0])
    except ValueError:
        raise DataError(f"{path}: file name does not start with an integer exposure number followed by '_'") from None
    if not 1 <= k <= sky_length:
        raise DataError(f"{path}: exposure number {k} has no entry in {path.parent / SKY_FILE} (length {sky_length})")
    return k


def read_sky(visit_dir: Path) -> np.ndarray | None:
    """A visit's sky levels, or ``None`` when it has no ``sky.npy`` (the reference then adds no sky)."""
    path = visit_dir / SKY_FILE
    if not path.is_file():
        return None
    try:
        sky = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"{path} is not a readable .npy file: {type(err).__name__}: {err}".splitlines()[0]) from None
    if sky.ndim != 1 or sky.dtype.kind not in "fiu":
        raise DataError(f"{path}: expected a 1-D numeric array of sky levels, found {sky.dtype} {sky.shape}")
    return sky.astype(np.float64)


def subdirectories(path: Path) -> list[Path]:
    with os.scandir(path) as entries:
        return [Path(entry.path) for entry in entries if entry.is_dir()]


def scan_part(part_dir: Path) -> tuple[list[str], np.ndarray]:
    """The selected sample files of ``npy_train`` or ``npy_test``, sorted by path, and each one's sky level."""
    filter_dir = part_dir / FILTER
    if not filter_dir.is_dir():
        raise DataError(f"{filter_dir} is missing; are the deepCR archives unpacked into {part_dir.parent}?")
    found: list[tuple[str, float]] = []
    for prop_dir in subdirectories(filter_dir):
        for visit_dir in subdirectories(prop_dir):
            with os.scandir(visit_dir) as entries:
                names = [entry.name for entry in entries if is_sample_name(entry.name)]
            if not names or not visit_selected(prop_dir.name, visit_dir.name, visit_dir):
                continue
            sky = read_sky(visit_dir)
            for name in names:
                path = visit_dir / name
                level = 0.0 if sky is None else float(sky[exposure_index(path, len(sky)) - 1])
                found.append((str(path), level))
    if not found:
        raise DataError(f"{filter_dir}: no sample files in visits of field type {FIELD}")
    found.sort(key=lambda item: item[0])
    return [path for path, _ in found], np.array([level for _, level in found], dtype=np.float64)


class CosmicDataset(Dataset):
    """Samples read lazily from their ``.npy`` files: crop, then add a random multiple of the sky level.

    ``eval_seed=None`` draws the sky factor from torch's RNG (fresh values every epoch;
    workers are seeded by the DataLoader); an integer draws it from a generator seeded
    with ``(eval_seed, index)``, so evaluation sees the same images every time.
    ``sky_range=None`` adds no sky.
    """

    def __init__(
        self,
        paths: Sequence[str],
        sky: np.ndarray,
        crop_offset: int,
        crop_size: int,
        sky_range: tuple[float, float] | None,
        eval_seed: int | None = None,
    ) -> None:
        self.paths, self.sky = list(paths), sky
        self.crop = slice(crop_offset, crop_offset + crop_size)
        self.sky_range, self.eval_seed = sky_range, eval_seed

    def __len__(self) -> int:
        return len(self.paths)

    def sky_factor(self, index: int) -> float:
        if self.sky_range is None:
            return 0.0
        low, high = self.sky_range
        if self.eval_seed is None:
            return low + (high - low) * torch.rand((), dtype=torch.float64).item()
        return float(np.random.default_rng((self.eval_seed, index)).uniform(low, high))

    def read(self, index: int) -> np.ndarray:
        """The cropped (3, S, S) float32 [image, CR mask, ignore mask] of a sample (zero ignore if absent)."""
        path = self.paths[index]
        try:
            data = np.load(path, mmap_mode="r", allow_pickle=False)
            check_header(data.shape, data.dtype, self.crop.stop, path)
            window = np.array(data[:, self.crop, self.crop], dtype=np.float32)
        except (OSError, ValueError, EOFError) as err:
            raise DataError(f"{path} is not a readable .npy file: {type(err).__name__}: {err}".splitlines()[0]) from None
        if len(window) == 2:
            window = np.concatenate([window, np.zeros_like(window[:1])])
        masks = window[1:]
        if not ((masks == 0) | (masks == 1)).all():
            raise DataError(f"{path}: the CR and ignore masks must hold only 0 and 1")
        return window

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        window = self.read(index)
        window[0] += np.float32(self.sky[index] * self.sky_factor(index))
        x, y, ignore = torch.from_numpy(window)[:, None]
        return {"x": x, "y": y, "ignore": ignore}


def read_npy_header(stream: IO[bytes], where: object) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(stream)
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    if version not in readers:
        raise DataError(f"{where}: unsupported .npy format version {version}")
    shape, _, dtype = readers[version](stream)
    return shape, dtype


class CosmicDataModule(TaskDataModule):
    """deepCR ACS/WFC F435W galaxy fields: image -> per-pixel cosmic-ray mask.

    Args:
        crop_offset: first row and column of the fixed crop (reference 64).
        crop_size: side of the crop (reference 128: ``[64:192, 64:192]``).
        val_fraction: share of the (sorted) training files validated on in the search split
            (reference 0.1: the first ``int(0.9 n)`` files train, the rest validate).
        sky_range: the sky augmentation adds ``sky * U(low, high)`` to the image (reference (-0.9, 3)).
        augment_eval: apply the sky augmentation to validation and test samples too, as the
            reference does; its factor is then seeded per sample, so evaluation is deterministic.
        eval_seed: seed of those per-sample evaluation factors.
        **kwargs: the common options of :class:`~nb360.datamodules.base.TaskDataModule`.
    """

    task = "cosmic"
    files = (
        RemoteFile(TRAIN_TAR, s3_key=f"cosmic/{TRAIN_TAR}", unpack=True),
        RemoteFile(TEST_TAR, s3_key=f"cosmic/{TEST_TAR}", unpack=True),
    )

    def __init__(
        self,
        crop_offset: int = 64,
        crop_size: int = 128,
        val_fraction: float = 0.1,
        sky_range: tuple[float, float] = (-0.9, 3.0),
        augment_eval: bool = True,
        eval_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        if crop_offset < 0 or crop_size < 1:
            raise UsageError(f"cosmic: need crop_offset >= 0 and crop_size >= 1, got {crop_offset} and {crop_size}")
        if not 0 < val_fraction < 1:
            raise UsageError(f"cosmic: val_fraction must lie in (0, 1), got {val_fraction}")
        if len(sky_range) != 2 or sky_range[0] > sky_range[1]:
            raise UsageError(f"cosmic: sky_range must be (low, high) with low <= high, got {sky_range}")
        self.crop_offset, self.crop_size, self.val_fraction = crop_offset, crop_size, val_fraction
        self.sky_range = (float(sky_range[0]), float(sky_range[1]))
        self.augment_eval, self.eval_seed = augment_eval, eval_seed
        super().__init__(**kwargs)

    def required_files(self) -> tuple[RemoteFile, ...]:
        """The search split never reads the test archive."""
        return self.files[:1] if self.split == "search" else self.files

    def dataset(self, paths: Sequence[str], sky: np.ndarray, train: bool) -> CosmicDataset:
        sky_range = self.sky_range if train or self.augment_eval else None
        return CosmicDataset(paths, sky, self.crop_offset, self.crop_size, sky_range, None if train else self.eval_seed)

    def load(self) -> Mapping[str, CosmicDataset]:
        paths, sky = scan_part(self.root / PART_DIRS[TRAIN_TAR])
        if self.split == "final":
            test_paths, test_sky = scan_part(self.root / PART_DIRS[TEST_TAR])
            return {"train": self.dataset(paths, sky, train=True), "test": self.dataset(test_paths, test_sky, train=False)}
        n_fit = int(len(paths) * (1 - self.val_fraction))
        if not 0 < n_fit < len(paths):
            part_dir = self.root / PART_DIRS[TRAIN_TAR]
            raise DataError(f"{part_dir}: {len(paths)} sample files are too few to split with val_fraction={self.val_fraction}")
        return {
            "train": self.dataset(paths[:n_fit], sky[:n_fit], train=True),
            "val": self.dataset(paths[n_fit:], sky[n_fit:], train=False),
        }

    def describe_file(self, path: Path) -> str:
        top = PART_DIRS.get(path.name)
        if top is None:
            raise DataError(f"{path}: not one of the Cosmic archives {', '.join(PART_DIRS)}")
        try:
            with tarfile.open(path) as archive:
                members = [m for m in archive.getmembers() if m.isfile()]
                selected = [m for m in members if self._member_selected(m.name, top, path)]
                if not selected:
                    raise DataError(f"{path}: no {top}/{FILTER} sample files in visits of field type {FIELD}")
                stream = cast(IO[bytes], archive.extractfile(selected[0]))  # a regular file: never None
                shape, dtype = read_npy_header(stream, f"{path}:{selected[0].name}")
        except (tarfile.TarError, OSError, EOFError, ValueError) as err:
            reason = f"{type(err).__name__}: {err}".splitlines()[0]
            raise DataError(f"{path} is not a readable deepCR archive (truncated or corrupt?): {reason}") from None
        check_header(shape, dtype, self.crop_offset + self.crop_size, f"{path}:{selected[0].name}")
        return f"tar, {len(members)} files, {len(selected)} {FILTER} {FIELD} samples, first {dtype} {shape}"

    @staticmethod
    def _member_selected(name: str, top: str, archive: Path) -> bool:
        parts = [p for p in PurePosixPath(name).parts if p != "."]
        if len(parts) != 5 or parts[0] != top or parts[1] != FILTER or not is_sample_name(parts[4]):
            return False
        return visit_selected(parts[2], parts[3], archive)

    @classmethod
    def write_fixture(cls, root: Path, n: int, seed: int = 0) -> list[Path]:
        """Both archives with (3 or 2, 24, 24) float32 samples, distractor visits and filters, and sky files.

        The training archive holds ``n + 4`` selected samples in two GAL visits (one of
        them without an ignore channel), a GC visit and an ``f606w`` visit; the test
        archive holds ``n`` selected samples and the same kinds of distractors.
        """
        rng = np.random.default_rng(seed)
        layout = {  # (filter, prop_id, visit, files): two GAL visits of f435w, a GC visit, a GAL visit of another filter
            TRAIN_TAR: [(FILTER, "10760", "2", (n + 5) // 2), (FILTER, "12513", "2", (n + 4) // 2)],
            TEST_TAR: [(FILTER, "10760", "2", (n + 1) // 2), (FILTER, "13737", "3", n // 2)],
        }
        layout[TRAIN_TAR] += [(FILTER, "10595", "2", 2), ("f606w", "10760", "2", 2)]
        layout[TEST_TAR] += [(FILTER, "9442", "1", 1), ("f814w", "13737", "3", 1)]
        paths = []
        for tar_name, visits in layout.items():
            members: dict[str, bytes] = {}
            for filter_name, prop_id, visit, count in visits:
                if count:
                    directory = f"{PART_DIRS[tar_name]}/{filter_name}/{prop_id}/{visit}"
                    members.update(_fixture_visit(rng, directory, count, two_channel_first=prop_id == "12513"))
            paths.append(_write_tar(Path(root) / tar_name, members))
        return paths

    @classmethod
    def fixture_args(cls, n: int) -> dict[str, Any]:
        """A 16 x 16 crop at offset 4 fits the fixture's 24 x 24 samples (and keeps a CPU epoch short)."""
        return {"crop_offset": 4, "crop_size": 16}


_FIXTURE_SIDE = 24


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _fixture_visit(rng: np.random.Generator, directory: str, count: int, two_channel_first: bool) -> dict[str, bytes]:
    """``count`` samples named ``<k>_<j>.npy`` (two per exposure k = 1, 6, 11, ...) and the visit's ``sky.npy``."""
    exposures = [1 + 5 * (j // 2) for j in range(count)]
    files = {f"{directory}/{SKY_FILE}": _npy_bytes(rng.uniform(20.0, 200.0, size=max(exposures) + 1))}
    for j, k in enumerate(exposures):
        shape = (_FIXTURE_SIDE, _FIXTURE_SIDE)
        image = rng.normal(100.0, 15.0, size=shape)
        mask = rng.random(shape) < 0.15
        ignore = rng.random(shape) < 0.1
        channels = [image, mask, ignore][: 2 if two_channel_first and j == 0 else 3]
        files[f"{directory}/{k}_{j % 2}.npy"] = _npy_bytes(np.stack(channels).astype(np.float32))
    return files


def _write_tar(path: Path, members: Mapping[str, bytes]) -> Path:
    """An uncompressed tar with a directory entry for every folder, written atomically."""
    folders = sorted({str(parent) for name in members for parent in PurePosixPath(name).parents if str(parent) != "."})
    with atomic_open(path, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            archive.addfile(info)
        for name in sorted(members):
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(members[name]), 0o644
            archive.addfile(info, io.BytesIO(members[name]))
    return path


SPEC = register_task(
    TaskSpec(
        name="cosmic",
        title="Cosmic",
        dims=2,
        kind="dense",
        input_shape=(1, 128, 128),
        num_outputs=1,
        loss="masked_bce_with_logits",
        metric="one_minus_auroc_thresholded",
        reference=Reference(lr=0.001, batch_size=8),
        aliases=("deepcr", "cosmic_rays"),
        extra_metrics=("fnr",),
        datamodule=CosmicDataModule,
    )
)
