"""Darcy Flow: the PDE generator, the .mat readers, and the DataModule's reference protocol."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch

from nb360.datamodules import darcy_generator as gen
from nb360.datamodules.darcy import DarcyDataModule, file_name
from nb360.datamodules.matfile import read_fields, write_mat
from nb360.errors import DataError
from helpers import darcy_reference, pointwise_encode


# ---------------------------------------------------------------- solver
def explicit_operator(a: np.ndarray, u: np.ndarray) -> np.ndarray:
    """-div(a grad u) at every interior node, by the 5-point formula written out point by point."""
    n = a.shape[0]
    h2 = (1 / (n - 1)) ** 2
    out = np.zeros((n - 2, n - 2))
    for i in range(1, n - 1):
        for j in range(1, n - 1):
            flux = 0.0
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                face = (a[i, j] + a[i + di, j + dj]) / 2
                flux += face * (u[i, j] - u[i + di, j + dj])
            out[i - 1, j - 1] = flux / h2
    return out


def test_solution_satisfies_the_discrete_equation_and_boundary_conditions():
    a = gen.piecewise_permeability(gen.gaussian_random_field(np.random.default_rng(5), 13))
    u, residual = gen.solve_darcy(a)
    assert residual < 1e-10
    np.testing.assert_allclose(explicit_operator(a, u), np.ones((11, 11)), rtol=1e-9)
    assert np.all(u[0] == 0) and np.all(u[-1] == 0) and np.all(u[:, 0] == 0) and np.all(u[:, -1] == 0)
    assert np.all(u[1:-1, 1:-1] > 0)


def test_second_order_convergence_on_a_manufactured_solution():
    def max_error(n: int) -> float:
        x = np.linspace(0, 1, n)
        X, Y = np.meshgrid(x, x, indexing="ij")
        a = 1 + X + 2 * Y
        exact = np.sin(np.pi * X) * np.sin(np.pi * Y)
        ux = np.pi * np.cos(np.pi * X) * np.sin(np.pi * Y)
        uy = np.pi * np.sin(np.pi * X) * np.cos(np.pi * Y)
        f = -(ux + 2 * uy) + 2 * np.pi**2 * a * exact  # -div(a grad u) for a = 1 + x + 2y
        return float(np.abs(gen.solve_darcy(a, f)[0] - exact).max())

    errors = [max_error(n) for n in (17, 33, 65)]
    rates = [np.log2(errors[i] / errors[i + 1]) for i in range(2)]
    assert all(rate == pytest.approx(2.0, abs=0.1) for rate in rates)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_refining_the_grid_converges_for_piecewise_permeability(seed):
    def solve(n: int) -> np.ndarray:
        field = gen.gaussian_random_field(np.random.default_rng(seed), n, modes=12)
        return gen.solve_darcy(gen.piecewise_permeability(field))[0]

    fine = solve(321)
    errors = [np.abs(solve(n) - fine[:: 320 // (n - 1), :: 320 // (n - 1)]).max() / fine.max() for n in (21, 41, 81, 161)]
    assert all(later < earlier for earlier, later in zip(errors, errors[1:]))
    assert errors[-1] < 0.01


def test_random_field_statistics():
    rng = np.random.default_rng(0)
    fields = np.stack([gen.gaussian_random_field(rng, 33) for _ in range(300)])
    assert abs(fields.mean()) < 0.1 * fields.std()
    # the variance at a point is sum_k eig_k phi_k(x, y)^2 with phi_k = c cos(pi k1 x) c cos(pi k2 y), c^2 = 1 (k = 0) or 2
    k = np.arange(33)
    eig = (np.pi**2 * (k[:, None] ** 2 + k[None, :] ** 2) + 9.0) ** -2.0
    eig[0, 0] = 0
    weight = np.where(k == 0, 1.0, 2.0) * np.cos(np.pi * k * 0.5) ** 2
    centre_variance = np.sum(eig * np.outer(weight, weight))
    assert fields[:, 16, 16].var() == pytest.approx(centre_variance, rel=0.2)
    a = gen.piecewise_permeability(fields)
    assert set(np.unique(a)) == {3.0, 12.0}
    assert 0.4 < (a == 12).mean() < 0.6


def test_generated_files_do_not_depend_on_the_number_of_workers(tmp_path):
    one = gen.generate(tmp_path / "one.mat", 4, 15, seed=3, workers=1, progress=False)
    two = gen.generate(tmp_path / "two.mat", 4, 15, seed=3, workers=2, progress=False)
    assert one.max_residual < 1e-10
    a, b = scipy.io.loadmat(str(one.path)), scipy.io.loadmat(str(two.path))
    np.testing.assert_array_equal(a["coeff"], b["coeff"])
    np.testing.assert_array_equal(a["sol"], b["sol"])
    assert a["coeff"].shape == (4, 15, 15) and a["coeff"].dtype == np.float64


# ---------------------------------------------------------------- .mat files
def test_v5_and_v73_files_read_identically(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"coeff": rng.random((5, 11, 11)), "sol": rng.random((5, 11, 11))}
    write_mat(tmp_path / "a.mat", arrays, "v5")
    write_mat(tmp_path / "b.mat", arrays, "v7.3")
    with pytest.raises(NotImplementedError):
        scipy.io.loadmat(str(tmp_path / "b.mat"))  # really a v7.3 (HDF5) file
    with h5py.File(tmp_path / "b.mat") as f:
        assert f["coeff"].shape == (11, 11, 5)  # MATLAB's column-major layout
    assert (tmp_path / "b.mat").read_bytes()[:10] == b"MATLAB 7.3"
    for path in ("a.mat", "b.mat"):
        fields = read_fields(tmp_path / path, ("coeff", "sol"), rows=slice(1, 4), stride=5)
        for key in arrays:
            np.testing.assert_array_equal(fields[key], arrays[key][1:4, ::5, ::5].astype(np.float32))
            assert fields[key].dtype == np.float32


def test_corrupt_and_incomplete_mat_files_give_one_line_errors(tmp_path):
    (tmp_path / "junk.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(DataError, match="cannot read .*junk.mat") as err:
        read_fields(tmp_path / "junk.mat", ("coeff",))
    assert "\n" not in str(err.value)
    write_mat(tmp_path / "partial.mat", {"coeff": np.zeros((2, 3, 3))}, "v7.3")
    with pytest.raises(DataError, match="no field.*sol"):
        read_fields(tmp_path / "partial.mat", ("coeff", "sol"))


# ---------------------------------------------------------------- DataModule protocol
def datamodule(root: Path, split: str, **kwargs) -> DarcyDataModule:
    dm = DarcyDataModule(root=str(root), split=split, resolution=21, samples=8, n_train=8, n_val=2, n_test=8, source="local", **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("split", ["search", "final"])
def test_splits_normalisation_and_grid_follow_the_reference(darcy_root, split):
    dm = datamodule(darcy_root, split)
    a, u = darcy_reference(darcy_root, 1, 8)
    fit = slice(0, 6) if split == "search" else slice(0, 8)
    train = dm.datasets["train"].tensors
    assert train["x"].shape == (len(range(8)[fit]), 3, 5, 5)
    np.testing.assert_allclose(train["x"][:, 0].numpy(), pointwise_encode(a[fit], a[fit]), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(train["y"][:, 0].numpy(), u[fit])
    evaluated = dm.datasets["val" if split == "search" else "test"].tensors
    if split == "search":
        other_a, other_u = a[6:8], u[6:8]
    else:
        other_a, other_u = darcy_reference(darcy_root, 2, 8)
    np.testing.assert_allclose(evaluated["x"][:, 0].numpy(), pointwise_encode(other_a, a[fit]), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(evaluated["y"][:, 0].numpy(), other_u)
    grid = np.linspace(0, 1, 5)
    np.testing.assert_allclose(evaluated["x"][0, 1].numpy(), np.tile(grid, (5, 1)))  # x varies along the width
    np.testing.assert_allclose(evaluated["x"][0, 2].numpy(), np.tile(grid[:, None], (1, 5)))
    decoded = dm.output_decoder()(torch.zeros(1, 1, 5, 5))
    np.testing.assert_allclose(decoded[0, 0].numpy(), u[fit].mean(0), rtol=1e-5)
    ones = dm.output_decoder()(torch.ones(1, 1, 5, 5))
    np.testing.assert_allclose((ones - decoded)[0, 0].numpy(), u[fit].std(0, ddof=1) + 1e-5, rtol=1e-4)
    assert dm.has_validation == (split == "search")
    assert dm.eval_split == ("val" if split == "search" else "test")


def test_loader_batches_are_dicts_and_training_order_is_a_function_of_the_epoch(darcy_root):
    dm = datamodule(darcy_root, "final", batch_size=3)
    torch.manual_seed(11)
    loader = dm.train_dataloader()
    first = [b["y"].clone() for b in loader]
    assert [len(b) for b in first] == [3, 3, 2] and set(next(iter(loader))) == {"x", "y"}
    again = [b["y"].clone() for b in loader]
    assert all(torch.equal(p, q) for p, q in zip(first, again))
    loader.sampler.set_epoch(1)
    assert not all(torch.equal(p, q["y"]) for p, q in zip(first, loader))


def test_missing_files_offline_name_the_files_the_source_and_the_directory(tmp_path):
    dm = DarcyDataModule(root=str(tmp_path / "empty"), source="local")
    with pytest.raises(DataError) as err:
        dm.prepare_data()
    message = str(err.value)
    assert "\n" not in message
    for part in ("piececonst_r421_N1024_smooth1.mat", "piececonst_r421_N1024_smooth2.mat", str(tmp_path / "empty"), "s3://pde-xd/", "generate"):
        assert part in message


def test_changed_file_fails_its_checksum(tmp_path, darcy_root):
    root = tmp_path / "copy"
    root.mkdir()
    for path in darcy_root.glob("*.mat"):
        (root / path.name).write_bytes(path.read_bytes())
    datamodule(root, "final")  # records checksums on first use
    assert (root / (file_name(21, 8, 1) + ".sha256")).exists()
    target = root / file_name(21, 8, 1)
    target.write_bytes(target.read_bytes()[:-100])
    with pytest.raises(DataError, match="checksum mismatch .*smooth1.mat"):
        datamodule(root, "final")


def test_too_few_samples_in_a_file_is_a_clear_error(darcy_root):
    dm = DarcyDataModule(root=str(darcy_root), resolution=21, samples=8, n_train=8, n_val=2, n_test=9, source="local")
    with pytest.raises(DataError, match="n_test"):
        dm.setup("fit")


def test_generate_source_writes_the_files_with_the_solver(tmp_path):
    dm = DarcyDataModule(root=str(tmp_path), resolution=11, samples=5, n_train=4, n_val=1, n_test=3, source="generate")
    dm.prepare_data()
    dm.setup("fit")
    assert sorted(p.name for p in tmp_path.glob("*.mat")) == [file_name(11, 5, 1), file_name(11, 5, 2)]
    assert dm.datasets["train"].tensors["x"].shape == (4, 3, 3, 3)
    lines = dm.verify()
    assert len(lines) == 2 and all(line.startswith("ok") and "(5, 11, 11)" in line for line in lines)
