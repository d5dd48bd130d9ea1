"""Darcy Flow (2-D dense regression): permeability a(x) -> pressure u(x) on an 85 x 85 grid.

Reference protocol (NB ``backbone/model_grid_original.py``): the 421 x 421 fields of
``piececonst_r421_N1024_smooth{1,2}.mat`` are subsampled with stride 5 to 85 x 85;
search split = smooth1[0:900] -> smooth1[900:1000], final split = smooth1[0:1000] ->
smooth2[0:100]. Inputs are normalised pointwise (mean and std over the training
samples at each grid point) and get two grid-coordinate channels; targets stay in
physical units and the network's output is decoded with the training targets'
pointwise statistics before the loss and the metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import h5py
import scipy.io
import torch
from filelock import FileLock
from torch import Tensor, nn

from nb360.datamodules import darcy_generator
from nb360.datamodules.base import TaskDataModule, TensorDictDataset
from nb360.datamodules.matfile import read_fields
from nb360.datamodules.sources import RemoteFile, Sources, fetch_files, lock_path, record_checksum
from nb360.errors import DataError
from nb360.tasks import Reference, TaskSpec, register_task

__all__ = ["PointwiseGaussian", "DarcyDataModule", "file_name"]


def file_name(resolution: int, samples: int, part: int) -> str:
    """``piececonst_r{resolution}_N{samples}_smooth{part}.mat``, the reference naming (part 1: train/val, 2: test)."""
    return f"piececonst_r{resolution}_N{samples}_smooth{part}.mat"


class PointwiseGaussian(nn.Module):
    """The reference ``UnitGaussianNormalizer``: mean and (unbiased) std over samples at every grid point."""

    def __init__(self, mean: Tensor, std: Tensor, eps: float = 1e-5) -> None:
        super().__init__()
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.eps = eps

    @classmethod
    def fit(cls, x: Tensor, eps: float = 1e-5) -> PointwiseGaussian:
        return cls(x.mean(dim=0), x.std(dim=0), eps)

    def encode(self, x: Tensor) -> Tensor:
        return (x - self.mean) / (self.std + self.eps)

    def forward(self, x: Tensor) -> Tensor:
        """Decode: ``x * (std + eps) + mean``."""
        return x * (self.std + self.eps) + self.mean


def grid_channels(s: int) -> Tensor:
    """Two (s, s) channels: the x coordinate (varying along the width) and the y coordinate (along the height)."""
    line = torch.linspace(0, 1, s)
    return torch.stack([line.expand(s, s), line[:, None].expand(s, s)])


class DarcyDataModule(TaskDataModule):
    """Darcy Flow data from the reference ``.mat`` files or from nb360's own solver.

    Args:
        sub: subsampling stride of the grid (reference 5: 421 -> 85 points per side).
        resolution: grid points per side in the files (reference 421).
        samples: samples per file (reference 1024); with ``resolution`` it names the files.
        n_train: samples of the first file used for training in the final split (reference 1000).
        n_val: the last ``n_val`` of those form the validation set of the search split (reference 100).
        n_test: samples of the second file in the test set (reference 100).
        source: as for every task, plus ``generate``: missing files are produced by the solver.
        generate_seed: seed of generated files (file k uses the seed sequence ``(generate_seed, k)``).
        generate_workers: processes for generation (default: all cores).
        **kwargs: the common options of :class:`~nb360.datamodules.base.TaskDataModule`.
    """

    task = "darcy"

    def __init__(
        self,
        sub: int = 5,
        resolution: int = 421,
        samples: int = 1024,
        n_train: int = 1000,
        n_val: int = 100,
        n_test: int = 100,
        source: Literal["auto", "local", "s3", "https", "generate"] = "auto",
        generate_seed: int = 0,
        generate_workers: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.generate = source == "generate"
        super().__init__(source="local" if self.generate else source, **kwargs)
        self.sub, self.resolution, self.samples = sub, resolution, samples
        self.n_train, self.n_val, self.n_test = n_train, n_val, n_test
        self.generate_seed, self.generate_workers = generate_seed, generate_workers
        self._decoder: PointwiseGaussian | None = None

    @property
    def size(self) -> int:
        """Grid points per side after subsampling: ``(resolution - 1) // sub + 1`` (85 for the reference)."""
        return (self.resolution - 1) // self.sub + 1

    def _parts(self) -> tuple[int, ...]:
        return (1,) if self.split == "search" else (1, 2)

    def required_files(self) -> tuple[RemoteFile, ...]:
        names = [file_name(self.resolution, self.samples, part) for part in self._parts()]
        return tuple(RemoteFile(name, s3_key=name) for name in names)

    def missing_hint(self) -> str:
        return (
            f", or generate them with `python -m nb360.data generate --task darcy --root {self.root} "
            f"--n {self.samples} --resolution {self.resolution}` (or pass --data.source generate)"
        )

    @classmethod
    def generate_files(
        cls, root: Path, samples: int, resolution: int, seed: int = 0, workers: int | None = None, version: str = "v5", progress: bool = True
    ) -> list[darcy_generator.GenerationReport]:
        """Write the train/val file (part 1) and the test file (part 2) with the solver, unless present."""
        root.mkdir(parents=True, exist_ok=True)
        reports = []
        for part in (1, 2):
            path = root / file_name(resolution, samples, part)
            with FileLock(str(lock_path(path))):
                if not path.exists():
                    reports.append(darcy_generator.generate(path, samples, resolution, [seed, part], workers, version, progress=progress))
                    record_checksum(path)
        return reports

    def prepare_data(self) -> None:
        if self.generate:
            self.generate_files(self.root, self.samples, self.resolution, self.generate_seed, self.generate_workers)
            fetch_files(self.required_files(), self.root, Sources("local"), self.spec.name)
        else:
            super().prepare_data()

    def _read(self, part: int, count: int) -> tuple[Tensor, Tensor]:
        path = self.root / file_name(self.resolution, self.samples, part)
        fields = read_fields(path, ("coeff", "sol"), rows=slice(0, count), stride=self.sub)
        a, u = (torch.from_numpy(fields[k][:, : self.size, : self.size]) for k in ("coeff", "sol"))
        expected = (count, self.size, self.size)
        if a.shape != expected or u.shape != expected:
            raise DataError(
                f"{path}: expected coeff and sol of at least {count} samples on a {self.resolution} x {self.resolution} grid "
                f"(subsampled {expected}), found coeff {tuple(a.shape)} and sol {tuple(u.shape)}"
            )
        if not (torch.isfinite(a).all() and torch.isfinite(u).all()):
            raise DataError(f"{path}: coeff or sol contains NaN or infinite values")
        return a, u

    def load(self) -> Mapping[str, TensorDictDataset]:
        if not 0 < self.n_val < self.n_train <= self.samples or not 0 < self.n_test <= self.samples:
            raise DataError(
                f"darcy: need 0 < n_val < n_train <= samples and 0 < n_test <= samples, got n_val={self.n_val}, "
                f"n_train={self.n_train}, n_test={self.n_test}, samples={self.samples}"
            )
        a, u = self._read(1, self.n_train)
        n_fit = self.n_train - self.n_val if self.split == "search" else self.n_train
        x_norm = PointwiseGaussian.fit(a[:n_fit])
        self._decoder = PointwiseGaussian.fit(u[:n_fit])
        grid = grid_channels(self.size)

        def dataset(coeff: Tensor, sol: Tensor) -> TensorDictDataset:
            x = torch.cat([x_norm.encode(coeff)[:, None], grid.expand(len(coeff), -1, -1, -1)], dim=1)
            return TensorDictDataset(x=x.contiguous(), y=sol[:, None].contiguous())

        if self.split == "search":
            return {"train": dataset(a[:n_fit], u[:n_fit]), "val": dataset(a[n_fit:], u[n_fit:])}
        return {"train": dataset(a, u), "test": dataset(*self._read(2, self.n_test))}

    def output_decoder(self) -> nn.Module:
        if self._decoder is None:
            raise RuntimeError("DarcyDataModule.setup() must run before output_decoder()")
        return self._decoder

    def describe_file(self, path: Path) -> str:
        try:
            if h5py.is_hdf5(path):
                with h5py.File(path, "r") as f:
                    shapes = {k: tuple(reversed(f[k].shape)) for k in ("coeff", "sol") if k in f}
                kind = "MATLAB v7.3"
            else:
                shapes = {name: shape for name, shape, _ in scipy.io.whosmat(str(path)) if name in ("coeff", "sol")}
                kind = "MATLAB v5"
        except Exception as err:
            raise DataError(f"{path}: not a readable .mat file: {type(err).__name__}: {err}") from None
        want = (self.samples, self.resolution, self.resolution)
        if shapes.get("coeff") != want or shapes.get("sol") != want:
            raise DataError(f"{path}: expected coeff and sol of shape {want}, found {shapes or 'neither field'}")
        return f"{kind}, coeff and sol {want}"

    @classmethod
    def write_fixture(cls, root: Path, n: int, seed: int = 0) -> list[Path]:
        """Two solver-made files on a 21 x 21 grid (5 x 5 after subsampling): part 1 as MATLAB v5, part 2 as v7.3."""
        paths = []
        for part, version in ((1, "v5"), (2, "v7.3")):
            path = Path(root) / file_name(21, n, part)
            darcy_generator.generate(path, n, 21, seed=[seed, part], workers=1, version=version, progress=False)
            paths.append(path)
        return paths

    @classmethod
    def fixture_args(cls, n: int) -> dict[str, Any]:
        """The ``--data.*`` options that make this DataModule read a fixture written by :meth:`write_fixture`."""
        return {"resolution": 21, "samples": n, "n_train": n, "n_val": max(1, n // 4), "n_test": n}


SPEC = register_task(
    TaskSpec(
        name="darcy",
        title="Darcy Flow",
        dims=2,
        kind="dense",
        input_shape=(3, 85, 85),
        num_outputs=1,
        loss="relative_l2_sum",
        metric="relative_l2",
        reference=Reference(lr=0.001, batch_size=8),
        aliases=("pde", "darcy_flow", "darcyflow"),
        datamodule=DarcyDataModule,
    )
)
