"""PSICOV (2-D dense regression): inter-residue C-beta distances of a protein from 57 pairwise feature maps.

Reference protocol (NB ``backbone/data_utils/protein_io.py``, ``protein_gen.py``,
``backbone/model_grid_original.py``, ``backbone/utils_grid.py``): ``protein.zip`` holds
the DeepCov training proteins and the 150 PSICOV test proteins, each a pickled feature
dict and a pickled distance map. The 1-D features are broadcast along rows and columns
and joined by three pairwise maps (57 channels); the distance map is cleaned (values
below 1 A raised to 1, the diagonal filled from its neighbours). A protein is padded
(``pad // 2`` before it, the rest after it); training takes a random ``crop`` x ``crop`` window of it (or
places it top-left when it is smaller) with distances clipped at 16 A; evaluation places
it top-left on a ``canvas`` x ``canvas`` input, predicts non-overlapping ``tile`` x
``tile`` windows, removes the padding shift and scores MAE_8 on the true length.

Proteins are read from their files when a sample is drawn, as the reference does, so
the ~3,500 proteins (up to ~500 residues, several GB as 57-channel maps) are never all
in memory.
"""

from __future__ import annotations

import io
import math
import pickle
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from nb360.datamodules.base import TaskDataModule
from nb360.safe_pickle import load_npy, load_pickle
from nb360.datamodules.sources import RemoteFile
from nb360.errors import DataError, UsageError
from nb360.io import atomic_path
from nb360.tasks import Reference, TaskSpec, register_task

__all__ = [
    "PsicovDataModule",
    "Protein",
    "ProteinFiles",
    "load_protein",
    "read_list",
    "read_distance_record",
    "clean_distances",
    "feature_canvas",
    "distance_canvas",
]

CHANNELS = 57
PROFILE_ROWS = 27  # ss 3 + pssm 22 + sa 1 + entropy 1, each broadcast along rows and along columns
PAIRWISE = ("ccmpred", "freecon", "potential")
FEATURE_LIMIT = 100.0  # the reference asserts -100 < X < 100
MIN_DISTANCE, MAX_DISTANCE = 1.0, 500.0
FILL_DISTANCE = 100.0  # target value of padding and canvas outside the protein
SETS = ("deepcov", "psicov")


def read_list(path: Path) -> list[str]:
    """Protein ids of a ``.lst`` file: the first word of every non-blank line, in file order."""
    if not path.is_file():
        raise DataError(f"{path} is missing; unpack protein.zip with `python -m nb360.data download --task psicov`")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class ProteinFiles:
    """Where one protein's features (``<set>/features/<id>.pkl``) and distances (``<set>/distance/<id>-cb.npy``) live."""

    id: str
    features: Path
    distances: Path

    @classmethod
    def of(cls, root: Path, protein_set: str, protein_id: str) -> ProteinFiles:
        folder = root / protein_set
        return cls(protein_id, folder / "features" / f"{protein_id}.pkl", folder / "distance" / f"{protein_id}-cb.npy")


@dataclass(frozen=True)
class Protein:
    """One protein's inputs and cleaned target.

    Attributes:
        profile: (27, L) float64, the 1-D features in channel order: ss rows, pssm columns, sa, entropy.
        pairwise: (3, L, L) float64, ccmpred, freecon and potential.
        distances: (L, L) float32 cleaned C-beta distances in A.
    """

    profile: np.ndarray
    pairwise: np.ndarray
    distances: np.ndarray

    @property
    def length(self) -> int:
        return self.distances.shape[0]


def _array(features: dict, key: str, shape: tuple[int, ...], path: Path) -> np.ndarray:
    if key not in features:
        raise DataError(f"{path}: feature {key!r} is missing")
    try:
        value = np.asarray(features[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: feature {key!r} is not numeric") from None
    if value.shape != shape:
        raise DataError(f"{path}: feature {key!r} has shape {value.shape}, expected {shape}")
    if not np.all(np.abs(value) < FEATURE_LIMIT):
        raise DataError(f"{path}: feature {key!r} has values outside (-100, 100) or NaN (the reference asserts |X| < 100)")
    return value


def _read_features(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """The (27, L) profile and (3, L, L) pairwise maps of a feature pickle, with the reference's shape and range checks."""
    features = load_pickle(path)
    if not isinstance(features, dict) or not isinstance(features.get("seq"), (str, bytes)):
        raise DataError(f"{path}: expected a pickled dict with a 'seq' string ({type(features).__name__} found)")
    n = len(features["seq"])
    if n < 2:
        raise DataError(f"{path}: sequence of length {n}; at least 2 residues are needed")
    profile = np.concatenate(
        [
            _array(features, "ss", (3, n), path),
            _array(features, "pssm", (n, 22), path).T,
            _array(features, "sa", (n,), path)[None],
            _array(features, "entropy", (n,), path)[None],
        ]
    )
    pairwise = np.stack([_array(features, key, (n, n), path) for key in PAIRWISE])
    return profile, pairwise


def read_distance_record(path: Path) -> tuple[int, np.ndarray]:
    """The ``(L, seq, cb_map)`` object array of a ``-cb.npy`` file: its length and (L, L) map as float64."""
    record = load_npy(path)
    if not (isinstance(record, np.ndarray) and record.dtype == object and record.shape == (3,)):
        found = f"{type(record).__name__} {getattr(record, 'shape', '')}".strip()
        raise DataError(f"{path}: expected an object array (L, seq, cb_map), found {found}")
    length, _, cb = record
    try:
        length, cb = int(length), np.asarray(cb, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{path}: L is not an integer or cb_map is not numeric") from None
    if cb.shape != (length, length):
        raise DataError(f"{path}: cb_map has shape {cb.shape}, expected ({length}, {length}) for L = {length}")
    return length, cb


def clean_distances(cb: np.ndarray, path: Path) -> np.ndarray:
    """The reference ``get_map``: values below 1 A become 1; the diagonal is the mean of its row neighbours.

    The first and last diagonal entries take their single neighbour; NaN and values
    above 500 A are refused (the reference asserts both for DeepCov and PSICOV).
    """
    if np.isnan(cb).any():
        raise DataError(f"{path}: cb_map contains NaN distances")
    y = np.where(cb < MIN_DISTANCE, MIN_DISTANCE, cb)
    n = len(y)
    inner = np.arange(1, n - 1)
    diagonal = np.concatenate([[y[0, 1]], (y[inner, inner - 1] + y[inner, inner + 1]) / 2, [y[n - 1, n - 2]]])
    y[np.arange(n), np.arange(n)] = diagonal
    if not np.all(y <= MAX_DISTANCE):
        raise DataError(f"{path}: cb_map has distances above {MAX_DISTANCE:g} A (the reference asserts 1 <= Y <= 500)")
    return y.astype(np.float32)


def load_protein(files: ProteinFiles) -> Protein:
    """Read and check one protein; every problem is a one-line :class:`DataError` naming the file."""
    profile, pairwise = _read_features(files.features)
    length, cb = read_distance_record(files.distances)
    if length != profile.shape[1]:
        residues = profile.shape[1]
        raise DataError(f"{files.distances}: L = {length}, but the sequence in {files.features.name} has {residues} residues")
    return Protein(profile, pairwise, clean_distances(cb, files.distances))


def _overlap(length: int, size: int, offset: int) -> tuple[slice, slice]:
    """Canvas and protein index ranges that meet when residue 0 sits at canvas index ``offset``."""
    start, stop = max(0, -offset), min(length, size - offset)
    stop = max(start, stop)
    return slice(start + offset, stop + offset), slice(start, stop)


def feature_canvas(protein: Protein, size: int, row_offset: int, col_offset: int) -> np.ndarray:
    """(57, size, size) float32 input with residue (0, 0) at ``(row_offset, col_offset)``; zero elsewhere.

    Channel 2k holds 1-D feature k along the columns and channel 2k + 1 along the rows,
    followed by the three pairwise maps, as the reference's ``get_feature``.
    """
    rows, p_rows = _overlap(protein.length, size, row_offset)
    cols, p_cols = _overlap(protein.length, size, col_offset)
    x = np.zeros((CHANNELS, size, size), dtype=np.float32)
    x[0 : 2 * PROFILE_ROWS : 2, rows, cols] = protein.profile[:, None, p_cols]
    x[1 : 2 * PROFILE_ROWS : 2, rows, cols] = protein.profile[:, p_rows, None]
    x[2 * PROFILE_ROWS :, rows, cols] = protein.pairwise[:, p_rows, p_cols]
    return x


def distance_canvas(protein: Protein, size: int, row_offset: int, col_offset: int) -> np.ndarray:
    """(1, size, size) float32 target placed like :func:`feature_canvas`; 100 A elsewhere (padding and canvas)."""
    rows, p_rows = _overlap(protein.length, size, row_offset)
    cols, p_cols = _overlap(protein.length, size, col_offset)
    y = np.full((1, size, size), FILL_DISTANCE, dtype=np.float32)
    y[0, rows, cols] = protein.distances[p_rows, p_cols]
    return y


class ProteinCrops(Dataset):
    """Training samples: the padded protein cropped at a random position (or placed top-left when it is smaller).

    Rows and columns get independent crop offsets, drawn from torch's generator (seeded
    per DataLoader worker by Lightning), as the reference draws them from ``random``.
    """

    def __init__(self, proteins: Sequence[ProteinFiles], crop: int, pad: int, label_clip: float) -> None:
        self.proteins, self.crop, self.pad, self.label_clip = list(proteins), crop, pad, label_clip

    def __len__(self) -> int:
        return len(self.proteins)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        protein = load_protein(self.proteins[index])
        padded = protein.length + self.pad
        row, col = torch.randint(0, padded - self.crop + 1, (2,)).tolist() if padded > self.crop else (0, 0)
        shift = self.pad // 2
        x = feature_canvas(protein, self.crop, shift - row, shift - col)
        y = distance_canvas(protein, self.crop, shift - row, shift - col)
        return {"x": torch.from_numpy(x), "y": torch.from_numpy(np.minimum(y, np.float32(self.label_clip)))}


class ProteinCanvases(Dataset):
    """Evaluation samples: the padded protein top-left on a ``canvas``-sized input, its target aligned at (0, 0).

    The target is what the reference scores after removing the padding shift: the
    cleaned, unclipped map at the top-left of a ``canvas - pad`` square of 100 A.
    """

    def __init__(self, proteins: Sequence[ProteinFiles], canvas: int, pad: int) -> None:
        self.proteins, self.canvas, self.pad = list(proteins), canvas, pad

    def __len__(self) -> int:
        return len(self.proteins)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        protein = load_protein(self.proteins[index])
        shift = self.pad // 2
        return {
            "x": torch.from_numpy(feature_canvas(protein, self.canvas, shift, shift)),
            "y": torch.from_numpy(distance_canvas(protein, self.canvas - self.pad, 0, 0)),
            "length": torch.tensor(protein.length, dtype=torch.long),
        }


class PsicovDataModule(TaskDataModule):
    """PSICOV data from ``protein.zip`` (bucket root of ``pde-xd``).

    Splits: search = ``deepcov.lst[n_val:]`` -> ``deepcov.lst[:n_val]``; final = all of
    ``deepcov.lst`` -> ``psicov.lst``. Validation uses the test's windowed MAE_8
    evaluation (the reference validates on random crops with an L1 over the crop).

    Args:
        crop: side of the training crops (reference 128).
        canvas: side of the evaluation input (reference 512); a multiple of ``tile``. A set
            holding a protein longer than ``canvas - pad`` is evaluated on the smallest
            larger multiple of ``tile`` that holds it (the reference would crop it at random).
        tile: side of the non-overlapping prediction windows at evaluation (reference 128).
        pad: total padding around a protein (reference 10: ``pad // 2`` before it).
        label_clip: training targets are clipped at this distance in A (reference 16).
        n_val: the first ``n_val`` DeepCov proteins form the validation set of the search split (reference 100).
        **kwargs: the common options of :class:`~nb360.datamodules.base.TaskDataModule`.
    """

    task = "psicov"
    files = (RemoteFile("protein.zip", s3_key="protein.zip", unpack=True),)

    def __init__(
        self,
        crop: int = 128,
        canvas: int = 512,
        tile: int = 128,
        pad: int = 10,
        label_clip: float = 16.0,
        n_val: int = 100,
        **kwargs: Any,
    ) -> None:
        if min(crop, tile, n_val) < 1 or canvas % tile or not 0 <= pad < canvas or canvas < tile or label_clip <= 0:
            raise UsageError(
                "psicov: need crop, tile, n_val >= 1, canvas a positive multiple of tile, 0 <= pad < canvas and label_clip > 0; "
                f"got crop={crop}, canvas={canvas}, tile={tile}, pad={pad}, label_clip={label_clip}, n_val={n_val}"
            )
        self.crop, self.canvas, self.tile, self.pad = crop, canvas, tile, pad
        self.label_clip, self.n_val = label_clip, n_val
        super().__init__(**kwargs)

    def _proteins(self, protein_set: str) -> list[ProteinFiles]:
        """The proteins listed in ``<set>.lst``, all of whose files must exist."""
        listed = read_list(self.root / f"{protein_set}.lst")
        proteins = [ProteinFiles.of(self.root, protein_set, protein_id) for protein_id in listed]
        missing = [path for p in proteins for path in (p.features, p.distances) if not path.is_file()]
        if missing:
            raise DataError(
                f"{missing[0]} is missing ({len(missing)} files of the proteins listed in {protein_set}.lst are); "
                "the unpacked protein.zip is incomplete"
            )
        return proteins

    def _evaluation(self, proteins: Sequence[ProteinFiles]) -> ProteinCanvases:
        """Evaluation samples on the configured canvas, enlarged (with a warning) if a protein does not fit."""
        longest = max((read_distance_record(p.distances)[0] for p in proteins), default=0)
        canvas = max(self.canvas, math.ceil((longest + self.pad) / self.tile) * self.tile)
        if canvas > self.canvas:
            warnings.warn(
                f"psicov: a protein of length {longest} does not fit the {self.canvas} x {self.canvas} canvas "
                f"with pad {self.pad}; this set is evaluated on a {canvas} x {canvas} canvas"
            )
        return ProteinCanvases(proteins, canvas, self.pad)

    def _training(self, proteins: Sequence[ProteinFiles]) -> ProteinCrops:
        return ProteinCrops(proteins, self.crop, self.pad, self.label_clip)

    def load(self) -> Mapping[str, Dataset]:
        deepcov = self._proteins("deepcov")
        if self.split == "search":
            if self.n_val >= len(deepcov):
                listing = self.root / "deepcov.lst"
                raise DataError(f"{listing} lists {len(deepcov)} proteins; n_val={self.n_val} leaves none for training")
            return {"train": self._training(deepcov[self.n_val :]), "val": self._evaluation(deepcov[: self.n_val])}
        return {"train": self._training(deepcov), "test": self._evaluation(self._proteins("psicov"))}

    def eval_forward(self, forward: Callable[[Tensor], Tensor], batch: dict[str, Tensor]) -> Tensor:
        """The reference's ``forward_window`` on non-overlapping tiles, then the padding shift removed.

        All tiles of the batch go through ``forward`` in one call; the result keeps the
        ``canvas - pad`` square starting at ``pad // 2``, so residue (0, 0) is at (0, 0) as in the target.
        """
        x = batch["x"]
        n, channels, size, width = x.shape
        if size != width or size % self.tile:
            shape = tuple(x.shape)
            raise ValueError(f"psicov: evaluation inputs must be square with sides divisible by tile={self.tile}, got {shape}")
        k, t = size // self.tile, self.tile
        tiles = x.unfold(2, t, t).unfold(3, t, t).permute(0, 2, 3, 1, 4, 5).reshape(n * k * k, channels, t, t)
        out = forward(tiles)
        out = out.reshape(n, k, k, -1, t, t).permute(0, 3, 1, 4, 2, 5).reshape(n, -1, size, size)
        shift, keep = self.pad // 2, size - self.pad
        return out[..., shift : shift + keep, shift : shift + keep]

    def describe_file(self, path: Path) -> str:
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                counts = {s: self._check_members(path, archive, names, s) for s in SETS}
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise DataError(f"{path}: not a readable zip archive: {type(err).__name__}: {err}".splitlines()[0]) from None
        return f"zip archive, {counts['deepcov']} DeepCov and {counts['psicov']} PSICOV proteins (features and distance maps)"

    @staticmethod
    def _check_members(path: Path, archive: zipfile.ZipFile, names: set[str], protein_set: str) -> int:
        listing = f"{protein_set}.lst"
        if listing not in names:
            raise DataError(f"{path}: member {listing} is missing")
        ids = [line.split()[0] for line in archive.read(listing).decode().splitlines() if line.strip()]
        wanted = [m for i in ids for m in (f"{protein_set}/features/{i}.pkl", f"{protein_set}/distance/{i}-cb.npy")]
        missing = [m for m in wanted if m not in names]
        if missing:
            raise DataError(f"{path}: {len(missing)} members of the proteins in {listing} are missing, e.g. {missing[0]}")
        return len(ids)

    @classmethod
    def write_fixture(cls, root: Path, n: int, seed: int = 0) -> list[Path]:
        """``protein.zip`` with ``n`` DeepCov and ``n`` PSICOV proteins of 28, 30 or 32 residues, random features and maps."""
        rng = np.random.default_rng(seed)
        path = Path(root) / "protein.zip"
        with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as archive:
            for protein_set in SETS:
                ids = [f"{k + 1}{protein_set[:2]}{k:02d}A" for k in range(n)]
                _add_member(archive, f"{protein_set}.lst", "".join(f"{i}\n" for i in ids).encode())
                for k, protein_id in enumerate(ids):
                    features, distances = _fixture_protein(rng, 28 + 2 * (k % 3))
                    _add_member(archive, f"{protein_set}/features/{protein_id}.pkl", features)
                    _add_member(archive, f"{protein_set}/distance/{protein_id}-cb.npy", distances)
        return [path]

    @classmethod
    def fixture_args(cls, n: int) -> dict[str, Any]:
        """16 x 16 crops and tiles on a 48 x 48 canvas (proteins of <= 32 residues + padding 10), a quarter for validation."""
        return {"crop": 16, "canvas": 48, "tile": 16, "n_val": max(1, n // 4)}


def _add_member(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    """A deflated member with a fixed timestamp, so that a fixture's bytes depend only on its seed."""
    archive.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)


def _fixture_protein(rng: np.random.Generator, length: int) -> tuple[bytes, bytes]:
    """A feature pickle and a ``(L, seq, cb_map)`` npy of one random protein, as bytes."""
    def pairwise(scale: float) -> np.ndarray:
        m = rng.normal(0, scale, (length, length))
        return (m + m.T) / 2

    features = {
        "seq": "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), length)),
        "ss": rng.dirichlet(np.ones(3), length).T,
        "pssm": rng.random((length, 22)),
        "sa": rng.random(length),
        "entropy": rng.uniform(0, 3, length),
        "ccmpred": pairwise(0.3),
        "freecon": pairwise(0.1),
        "potential": pairwise(2.0),
    }
    cb = rng.uniform(3, 20, (length, length))
    cb = (cb + cb.T) / 2
    cb[0, length - 1] = cb[length - 1, 0] = 6.0  # a long-range contact within 8 A
    np.fill_diagonal(cb, 0.0)
    buffer = io.BytesIO()
    np.save(buffer, np.array((length, features["seq"], cb), dtype=object), allow_pickle=True)
    return pickle.dumps(features, protocol=4), buffer.getvalue()


SPEC = register_task(
    TaskSpec(
        name="psicov",
        title="PSICOV",
        dims=2,
        kind="dense",
        input_shape=(57, 128, 128),
        num_outputs=1,
        loss="mse",
        metric="mae8",
        reference=Reference(lr=0.001, batch_size=8, eval_batch_size=2),
        aliases=("protein",),
        datamodule=PsicovDataModule,
    )
)
