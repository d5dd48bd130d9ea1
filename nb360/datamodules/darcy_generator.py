"""Darcy Flow data from scratch: the PDE problem of the FNO paper, solved by finite differences.

    -div(a(x) grad u(x)) = 1  on the unit square,   u = 0 on its boundary,

with a piecewise-constant permeability a = 12 where a Gaussian random field is
non-negative and 3 where it is negative. The field is drawn from N(0, (-Laplace + 9 I)^-2)
with zero Neumann boundary conditions, through its Karhunen-Loeve expansion in the
Neumann eigenfunctions cos(pi k1 x) cos(pi k2 y) with the mean mode removed. Only the
field's sign matters, so its overall scale is irrelevant.

The solver is the standard 5-point scheme on the node grid x_i = i / (n - 1), with the
permeability on cell faces taken as the mean of its two nodes (as the FNO data
generator does), assembled as a sparse symmetric matrix and solved by a direct sparse
LU factorisation. For smooth coefficients it is second-order accurate.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
from tqdm.auto import tqdm

from nb360.datamodules.matfile import write_mat

__all__ = ["gaussian_random_field", "piecewise_permeability", "darcy_matrix", "solve_darcy", "generate", "GenerationReport"]

HIGH, LOW = 12.0, 3.0


def gaussian_random_field(rng: np.random.Generator, n: int, alpha: float = 2.0, tau: float = 3.0, modes: int | None = None) -> np.ndarray:
    """A sample of N(0, (-Laplace + tau^2 I)^-alpha) (Neumann) on the n x n node grid of the unit square.

    ``modes`` (default ``n``) cosine modes per axis are kept. Draw the same ``rng`` state
    with a larger ``n`` and the same ``modes`` to evaluate one realisation on a finer grid.
    """
    modes = n if modes is None else modes
    k = np.arange(modes)
    sqrt_eig = (np.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2) + tau**2) ** (-alpha / 2)
    coeff = sqrt_eig * rng.standard_normal((modes, modes))
    coeff[0, 0] = 0.0
    x = np.linspace(0.0, 1.0, n)
    basis = np.cos(np.pi * k[:, None] * x[None, :]) * np.where(k == 0, 1.0, np.sqrt(2.0))[:, None]
    return basis.T @ coeff @ basis


def piecewise_permeability(field: np.ndarray) -> np.ndarray:
    return np.where(field >= 0, HIGH, LOW)


def darcy_matrix(a: np.ndarray) -> scipy.sparse.csc_matrix:
    """The 5-point matrix of -div(a grad .) on the interior nodes (row-major), with u = 0 on the boundary."""
    n = a.shape[0]
    m = n - 2
    h2 = (1.0 / (n - 1)) ** 2
    ax = (a[1:, :] + a[:-1, :]) / 2  # face between nodes (i, j) and (i + 1, j)
    ay = (a[:, 1:] + a[:, :-1]) / 2  # face between nodes (i, j) and (i, j + 1)
    main = (ax[:-1, 1:-1] + ax[1:, 1:-1] + ay[1:-1, :-1] + ay[1:-1, 1:]).ravel()
    east = -ay[1:-1, 1:-1].copy()  # (i, j) - (i, j + 1) for j = 1..m-1, then a zero at the row end
    east = np.concatenate([east, np.zeros((m, 1))], axis=1).ravel()[:-1]
    south = -ax[1:-1, 1:-1].ravel()  # (i, j) - (i + 1, j) for i = 1..m-1
    diagonals = [main, east, east, south, south]
    return (scipy.sparse.diags(diagonals, [0, 1, -1, m, -m], shape=(m * m, m * m)) / h2).tocsc()


def solve_darcy(a: np.ndarray, f: float | np.ndarray = 1.0) -> tuple[np.ndarray, float]:
    """Solve the Darcy problem for node permeabilities ``a`` (n x n); return u (n x n) and the relative residual.

    The residual is ``max|A u - f| / max|f|`` over the interior nodes.
    """
    n = a.shape[0]
    if a.ndim != 2 or a.shape[1] != n or n < 3:
        raise ValueError(f"permeability must be a square grid of at least 3 x 3 nodes, got shape {a.shape}")
    matrix = darcy_matrix(a)
    rhs = np.broadcast_to(np.asarray(f, dtype=np.float64), (n, n))[1:-1, 1:-1].ravel().copy()
    interior = scipy.sparse.linalg.splu(matrix, permc_spec="MMD_AT_PLUS_A").solve(rhs)
    residual = np.abs(matrix @ interior - rhs).max() / np.abs(rhs).max()
    u = np.zeros((n, n))
    u[1:-1, 1:-1] = interior.reshape(n - 2, n - 2)
    return u, float(residual)


def _sample(args: tuple[np.random.SeedSequence, int, float, float]) -> tuple[np.ndarray, np.ndarray, float]:
    seed, n, alpha, tau = args
    a = piecewise_permeability(gaussian_random_field(np.random.default_rng(seed), n, alpha, tau))
    u, residual = solve_darcy(a)
    return a, u, residual


@dataclass(frozen=True)
class GenerationReport:
    path: Path
    samples: int
    resolution: int
    max_residual: float
    seconds: float


def generate(
    path: Path,
    samples: int,
    resolution: int,
    seed: int | Sequence[int] = 0,
    workers: int | None = None,
    version: str = "v5",
    alpha: float = 2.0,
    tau: float = 3.0,
    progress: bool = True,
) -> GenerationReport:
    """Write ``samples`` Darcy problems at ``resolution`` x ``resolution`` to ``path`` (fields ``coeff``, ``sol``).

    Sample ``i`` depends only on ``(seed, i)``, so the file is the same whatever ``workers`` is.
    """
    start = time.perf_counter()
    seeds = np.random.SeedSequence(seed).spawn(samples)
    jobs = [(s, resolution, alpha, tau) for s in seeds]
    coeff = np.empty((samples, resolution, resolution))
    sol = np.empty((samples, resolution, resolution))
    residuals = np.empty(samples)
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=samples, desc=f"solving {path.name}", unit="sample", disable=None if progress else True)
    if workers == 1 or samples < 2:
        results = map(_sample, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=min(workers, samples))
        results = pool.map(_sample, jobs, chunksize=max(1, samples // (8 * workers)))
    try:
        for i, (a, u, res) in enumerate(results):
            coeff[i], sol[i], residuals[i] = a, u, res
            bar.update()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    write_mat(path, {"coeff": coeff, "sol": sol}, version)
    return GenerationReport(path, samples, resolution, float(residuals.max()), time.perf_counter() - start)


def preview(path: Path, coeff: np.ndarray, sol: np.ndarray, count: int = 4) -> Path:
    """Save a PNG of the first ``count`` samples: permeability above, solution below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nb360.io import atomic_path

    count = min(count, len(coeff))
    fig, axes = plt.subplots(2, count, figsize=(2.6 * count, 5.2), squeeze=False, constrained_layout=True)
    for i in range(count):
        for row, (field, cmap, label) in enumerate(((coeff[i], "cividis", "a(x)"), (sol[i], "magma", "u(x)"))):
            image = axes[row, i].imshow(field, cmap=cmap, origin="lower", extent=(0, 1, 0, 1))
            axes[row, i].set_title(f"{label}, sample {i}", fontsize=9)
            axes[row, i].set_xticks([])
            axes[row, i].set_yticks([])
            fig.colorbar(image, ax=axes[row, i], shrink=0.8)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
