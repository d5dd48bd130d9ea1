"""Independent re-implementations used as references by several test modules."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import scipy.io
from lightning.pytorch.callbacks import Callback


def darcy_reference(root: Path, part: int, count: int, resolution: int = 21, samples: int = 8, sub: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Read a Darcy file the way the reference MatReader does (scipy, else h5py transposed), then subsample."""
    path = root / f"piececonst_r{resolution}_N{samples}_smooth{part}.mat"
    if h5py.is_hdf5(path):
        with h5py.File(path) as f:
            a, u = (np.transpose(f[k][()], (2, 1, 0)) for k in ("coeff", "sol"))
    else:
        data = scipy.io.loadmat(str(path))
        a, u = data["coeff"], data["sol"]
    s = (resolution - 1) // sub + 1
    return tuple(x.astype(np.float32)[:count, ::sub, ::sub][:, :s, :s] for x in (a, u))


def pointwise_encode(x: np.ndarray, fit: np.ndarray) -> np.ndarray:
    """The reference UnitGaussianNormalizer.encode: per-point mean and unbiased std of ``fit``, eps 1e-5."""
    return (x - fit.mean(0)) / (fit.std(0, ddof=1) + 1e-5)


def read_results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


class KillAfterEpoch(Callback):
    """Simulates a run killed at the end of epoch ``epoch`` (before that epoch's checkpoint)."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            raise RuntimeError("simulated kill")
