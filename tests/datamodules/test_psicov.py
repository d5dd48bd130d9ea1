"""PSICOV: features, targets, crops and the windowed MAE_8 evaluation against transcriptions of the reference code."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nb360.datamodules.psicov import PsicovDataModule, clean_distances
from nb360.safe_pickle import load_npy, load_pickle
from nb360.errors import DataError, UsageError
from nb360.metrics import ContactMAE

N = 8
ARGS = PsicovDataModule.fixture_args(N)  # crop 16, canvas 48, tile 16, n_val 2
PAD = 10


def make_dm(root: Path, split: str = "final", **options) -> PsicovDataModule:
    """A DataModule on a fresh fixture under ``root``, unpacked and set up."""
    if not (root / "protein.zip").exists():
        PsicovDataModule.write_fixture(root, N, seed=0)
    dm = PsicovDataModule(root=str(root), split=split, source="local", **{**ARGS, **options})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def ids(root: Path, protein_set: str) -> list[str]:
    return (root / f"{protein_set}.lst").read_text().split()


def read_protein(root: Path, protein_set: str, protein_id: str) -> tuple[dict, int, np.ndarray]:
    features = load_pickle(root / protein_set / "features" / f"{protein_id}.pkl")
    length, _, cb = load_npy(root / protein_set / "distance" / f"{protein_id}-cb.npy")
    return features, length, np.array(cb, dtype=np.float64)


# ---------------------------------------------------------------- the reference, transcribed
def ref_features(features: dict) -> np.ndarray:
    """``protein_io.get_feature``: (L, L, 57), each 1-D feature repeated along rows, then its transpose."""
    n = len(features["seq"])
    X = np.full((n, n, 57), 0.0)
    fi = 0
    columns = [features["ss"][j] for j in range(3)] + [features["pssm"][:, j] for j in range(22)]
    for column in columns + [features["sa"], features["entropy"]]:
        a = np.repeat(np.asarray(column).reshape(1, n), n, axis=0)
        X[:, :, fi] = a
        fi += 1
        X[:, :, fi] = a.T
        fi += 1
    for key in ("ccmpred", "freecon", "potential"):
        X[:, :, fi] = features[key]
        fi += 1
    assert fi == 57
    return X


def ref_map(cb: np.ndarray) -> np.ndarray:
    """``protein_io.get_map`` for maps without NaN."""
    Y = cb.copy()
    ly = len(Y)
    Y[Y < 1.0] = 1.0
    Y[0, 0] = Y[0, 1]
    Y[ly - 1, ly - 1] = Y[ly - 1, ly - 2]
    for q in range(1, ly - 1):
        Y[q, q] = (Y[q, q - 1] + Y[q, q + 1]) / 2.0
    return Y


def ref_padded(X: np.ndarray, Y: np.ndarray, pad: int = PAD) -> tuple[np.ndarray, np.ndarray]:
    """``get_input_output_dist``'s Xpadded / Ypadded: the protein at int(pad / 2) in an (L + pad) square."""
    n = len(X)
    s = int(pad / 2)
    Xp = np.zeros((n + pad, n + pad, 57), dtype=np.float32)
    Xp[s : n + s, s : n + s, :] = X
    Yp = np.full((n + pad, n + pad), 100.0, dtype=np.float32)
    Yp[s : n + s, s : n + s] = Y
    return Xp, Yp


def ref_placed(X: np.ndarray, Y: np.ndarray, outl: int) -> tuple[np.ndarray, np.ndarray]:
    """The branch ``l <= OUTL``: the padded protein top-left on an OUTL canvas; channels first as PDNetDataset returns it."""
    Xp, Yp = ref_padded(X, Y)
    n = len(Xp)
    XX = np.full((outl, outl, 57), 0.0)
    YY = np.full((outl, outl, 1), 100.0)
    XX[:n, :n, :] = Xp
    YY[:n, :n, 0] = Yp
    return XX.astype(np.float32).transpose(2, 0, 1), YY.astype(np.float32).transpose(2, 0, 1)


def ref_forward_window(forward, x: torch.Tensor, L: int) -> torch.Tensor:
    """``Backbone.forward_window(x, L)`` with the default stride (the network returns channels first here)."""
    s_length = x.shape[-1]
    stride = L
    assert s_length % L == 0
    y = torch.zeros_like(x)[:, :1, :, :]
    counts = torch.zeros_like(x)[:, :1, :, :]
    for i in range((s_length - L) // stride + 1):
        ip = i * stride
        for j in range((s_length - L) // stride + 1):
            jp = j * stride
            out = forward(x[:, :, ip : ip + L, jp : jp + L])
            y[:, :, ip : ip + L, jp : jp + L] += out
            counts[:, :, ip : ip + L, jp : jp + L] += torch.ones_like(out)
    return y / counts


def ref_mae(P: np.ndarray, Y: np.ndarray, lengths: list[int], pad: int = PAD) -> float:
    """``evaluate_test_protein`` after the forward pass, then ``calculate_mae``'s MAE_8 loops (channels-last arrays)."""
    lmax = P.shape[1]
    for j in range(lmax):
        for k in range(j, lmax):
            P[:, j, k, :] = (P[:, k, j, :] + P[:, j, k, :]) / 2.0
    P[P < 0.01] = 0.01
    s = int(pad / 2)
    P[:, : lmax - pad, : lmax - pad, :] = P[:, s : lmax - s, s : lmax - s, :]
    Y[:, : lmax - pad, : lmax - pad, :] = Y[:, s : lmax - s, s : lmax - s, :]
    maes = np.zeros(len(P))
    for i, L in enumerate(lengths):
        PAVG = np.full((L, L), 100.0)
        for j in range(L):
            for k in range(j, L):
                PAVG[j, k] = (P[i, k, j, 0] + P[i, j, k, 0]) / 2.0
        y, p = np.copy(Y[i, :L, :L, 0]), np.copy(PAVG)
        for a in range(L):
            for b in range(L):
                if b - a < 24 or y[a, b] > 8:
                    y[a, b] = p[a, b] = np.nan
        maes[i] = np.nanmean(np.abs(y - p)) if not np.isnan(np.abs(y - p)).all() else np.nan
    return float(np.nanmean(maes))


def fixed_network(seed: int = 3):
    """A 3 x 3 convolution with zero padding: its output near tile borders depends on the tiling."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(1, 57, 3, 3, generator=g) * 0.5

    def forward(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, weight, padding=1) * 4 + 7

    return forward


# ---------------------------------------------------------------- fixture format
def test_fixture_is_protein_zip_in_the_reference_layout(tmp_path):
    (path,) = PsicovDataModule.write_fixture(tmp_path, N, seed=0)
    assert path == tmp_path / "protein.zip" and path.stat().st_size < 1_000_000
    assert PsicovDataModule.write_fixture(tmp_path / "again", N, seed=0)[0].read_bytes() == path.read_bytes()
    assert PsicovDataModule.write_fixture(tmp_path / "other", N, seed=1)[0].read_bytes() != path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        for protein_set in ("deepcov", "psicov"):
            listed = archive.read(f"{protein_set}.lst").decode().split()
            assert len(listed) == N
            for pid in listed:
                assert {f"{protein_set}/features/{pid}.pkl", f"{protein_set}/distance/{pid}-cb.npy"} <= names
        pid = archive.read("psicov.lst").decode().split()[0]
        features = load_pickle(io.BytesIO(archive.read(f"psicov/features/{pid}.pkl")))
        (tmp_path / "d.npy").write_bytes(archive.read(f"psicov/distance/{pid}-cb.npy"))
    n = len(features["seq"])
    shapes = {k: np.shape(v) for k, v in features.items() if k != "seq"}
    pairwise = dict.fromkeys(("ccmpred", "freecon", "potential"), (n, n))
    assert shapes == {"ss": (3, n), "pssm": (n, 22), "sa": (n,), "entropy": (n,), **pairwise}
    assert all(np.abs(v).max() < 100 for k, v in features.items() if k != "seq")
    with open(tmp_path / "d.npy", "rb") as f:
        assert np.lib.format.read_magic(f) == (1, 0) and np.lib.format.read_array_header_1_0(f)[2] == object
    length, seq, cb = load_npy(tmp_path / "d.npy")
    assert length == n and seq == features["seq"] and np.array_equal(cb, cb.T)
    off = cb[~np.eye(n, dtype=bool)]
    assert off.min() >= 3 and off.max() <= 20
    long_range = np.triu(np.ones((n, n), bool), 24)
    assert (cb[long_range] <= 8).any()


# ---------------------------------------------------------------- inputs and targets
@pytest.mark.parametrize("split, part, protein_set", [("final", "test", "psicov"), ("search", "val", "deepcov")])
def test_evaluation_samples_equal_the_reference_test_dataset(tmp_path, split, part, protein_set):
    dm = make_dm(tmp_path, split)
    listed = ids(tmp_path, protein_set)[: ARGS["n_val"]] if split == "search" else ids(tmp_path, protein_set)
    dataset = dm.datasets[part]
    assert len(dataset) == len(listed)
    keep = 48 - PAD
    for index, pid in enumerate(listed):
        features, length, cb = read_protein(tmp_path, protein_set, pid)
        x_ref, y_ref = ref_placed(ref_features(features), ref_map(cb), 48)  # PDNetDataset(..., 512, 10, label_engineering=None)
        sample = dataset[index]
        assert sample["x"].dtype == torch.float32 and sample["length"].dtype == torch.int64
        np.testing.assert_array_equal(sample["x"].numpy(), x_ref)
        np.testing.assert_array_equal(sample["y"].numpy(), y_ref[:, 5 : 5 + keep, 5 : 5 + keep])  # the padding shift removed
        assert int(sample["length"]) == length


def test_target_cleaning_by_hand():
    cb = np.array([[0.0, 0.5, 9.0], [0.5, 0.0, 6.0], [9.0, 6.0, 0.0]])
    expected = [[1.0, 1.0, 9.0], [1.0, 3.5, 6.0], [9.0, 6.0, 6.0]]  # < 1 -> 1, then diagonal from neighbours
    np.testing.assert_array_equal(clean_distances(cb, Path("x-cb.npy")), expected)


def test_targets_below_one_angstrom_are_raised_before_the_diagonal_is_filled(tmp_path):
    dm = make_dm(tmp_path)
    pid = ids(tmp_path, "psicov")[0]
    features, length, cb = read_protein(tmp_path, "psicov", pid)
    cb[3, 4] = cb[4, 3] = 0.25
    cb[7, 20] = cb[20, 7] = -2.0
    save_distances(tmp_path / "psicov" / "distance" / f"{pid}-cb.npy", length, features["seq"], cb)
    y = dm.datasets["test"][0]["y"][0].numpy()
    np.testing.assert_array_equal(y[:length, :length], ref_map(cb).astype(np.float32))
    assert y[3, 4] == 1.0 and y[4, 4] == pytest.approx((1.0 + cb[4, 5]) / 2)
    assert np.all(y[length:] == 100) and np.all(y[:, length:] == 100)


def test_training_crops_are_random_windows_of_the_padded_protein(tmp_path):
    dm = make_dm(tmp_path)  # crop 16 < L + 10: the random-crop branch
    torch.manual_seed(0)
    dataset, crop = dm.datasets["train"], ARGS["crop"]
    for index, pid in enumerate(ids(tmp_path, "deepcov")[:2]):
        features, length, cb = read_protein(tmp_path, "deepcov", pid)
        Xp, Yp = ref_padded(ref_features(features), ref_map(cb))
        last = length + PAD - crop  # random.randint(0, l - OUTL) includes both ends
        # channels 0 and 1 (one feature along columns and along rows) locate the window
        windows = np.lib.stride_tricks.sliding_window_view(Xp[..., :2].transpose(2, 0, 1), (crop, crop), axis=(1, 2))
        seen_rows, seen_cols, different = set(), set(), False
        for _ in range(150):
            sample = dataset[index]
            x = sample["x"].numpy()
            assert x.shape == (57, crop, crop) and sample["y"].shape == (1, crop, crop)
            ((rx, ry),) = np.argwhere((windows == x[:2, None, None]).all(axis=(0, 3, 4)))
            np.testing.assert_array_equal(x, Xp[rx : rx + crop, ry : ry + crop].transpose(2, 0, 1))
            np.testing.assert_array_equal(sample["y"][0].numpy(), np.minimum(Yp[rx : rx + crop, ry : ry + crop], 16.0))
            seen_rows.add(rx), seen_cols.add(ry)
            different |= rx != ry
        assert seen_rows == set(range(last + 1)) and seen_cols == set(range(last + 1)) and different


def test_training_proteins_smaller_than_the_crop_are_placed_top_left(tmp_path):
    dm = make_dm(tmp_path, crop=48)  # L + 10 <= 48: the placement branch
    dataset = dm.datasets["train"]
    assert len(dataset) == N
    for index, pid in enumerate(ids(tmp_path, "deepcov")):
        features, _, cb = read_protein(tmp_path, "deepcov", pid)
        x_ref, y_ref = ref_placed(ref_features(features), ref_map(cb), 48)
        y_ref[y_ref > 16.0] = 16.0  # label_engineering="16.0", padding included
        sample = dataset[index]
        np.testing.assert_array_equal(sample["x"].numpy(), x_ref)
        np.testing.assert_array_equal(sample["y"].numpy(), y_ref)
    assert (dataset[0]["y"] == 16).float().mean() > 0.3 and dataset[0]["y"].max() == 16


def test_search_split_trains_on_deepcov_after_the_validation_proteins(tmp_path):
    dm = make_dm(tmp_path, "search", crop=48)
    assert set(dm.datasets) == {"train", "val"}
    deepcov = ids(tmp_path, "deepcov")
    train = dm.datasets["train"]
    assert len(train) == N - ARGS["n_val"]
    for index, pid in enumerate(deepcov[ARGS["n_val"] :]):
        features, _, cb = read_protein(tmp_path, "deepcov", pid)
        np.testing.assert_array_equal(train[index]["x"].numpy(), ref_placed(ref_features(features), ref_map(cb), 48)[0])


# ---------------------------------------------------------------- windowed evaluation and MAE_8
@pytest.mark.parametrize("canvas", [48, 64])
def test_eval_forward_equals_an_independent_tiling_with_the_shift_removed(tmp_path, canvas):
    dm = PsicovDataModule(root=str(tmp_path), canvas=canvas, tile=16)
    forward = fixed_network()
    x = torch.randn(3, 57, canvas, canvas, generator=torch.Generator().manual_seed(1))
    got = dm.eval_forward(forward, {"x": x})
    expected = ref_forward_window(forward, x, 16)[:, :, 5 : canvas - 5, 5 : canvas - 5]
    assert got.shape == (3, 1, canvas - PAD, canvas - PAD)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    untiled = forward(x)[:, :, 5 : canvas - 5, 5 : canvas - 5]
    assert not torch.allclose(got, untiled, atol=1e-3)  # tile borders matter: the test would see a wrong tiling


@pytest.mark.parametrize("split, protein_set", [("final", "psicov"), ("search", "deepcov")])
def test_mae8_through_the_loader_equals_the_reference_evaluation(tmp_path, split, protein_set):
    dm = make_dm(tmp_path, split)
    forward = fixed_network()
    metric = ContactMAE()
    for batch in dm.test_dataloader():
        metric.update(dm.eval_forward(forward, batch), batch["y"], length=batch["length"])
    listed = ids(tmp_path, protein_set)[: ARGS["n_val"]] if split == "search" else ids(tmp_path, protein_set)
    xs, ys, lengths = [], [], []
    for pid in listed:
        features, length, cb = read_protein(tmp_path, protein_set, pid)
        x, y = ref_placed(ref_features(features), ref_map(cb), 48)
        xs.append(x), ys.append(y), lengths.append(length)
    P = ref_forward_window(forward, torch.from_numpy(np.stack(xs)), 16).numpy().transpose(0, 2, 3, 1)
    Y = np.full((len(ys), 48, 48, 1), np.nan)
    Y[..., 0] = np.stack(ys)[:, 0]
    expected = ref_mae(P, Y, lengths)
    assert np.isfinite(expected)
    assert float(metric.compute()) == pytest.approx(expected, rel=1e-5)


def test_evaluation_keeps_the_list_order_and_carries_each_length(tmp_path):
    dm = make_dm(tmp_path, eval_batch_size=3)
    listed = ids(tmp_path, "psicov")
    loader = dm.test_dataloader()
    batches = list(loader)
    lengths = torch.cat([b["length"] for b in batches]).tolist()
    assert lengths == [read_protein(tmp_path, "psicov", pid)[1] for pid in listed]
    assert len(set(lengths)) > 1
    targets = torch.cat([b["y"] for b in batches])
    for target, pid, length in zip(targets, listed, lengths):
        expected = ref_map(read_protein(tmp_path, "psicov", pid)[2]).astype(np.float32)
        np.testing.assert_array_equal(target[0, :length, :length].numpy(), expected)
    assert torch.equal(torch.cat([b["length"] for b in loader]), torch.tensor(lengths))  # no shuffling


def test_a_protein_longer_than_the_canvas_enlarges_that_sets_canvas(tmp_path):
    with pytest.warns(UserWarning, match="evaluated on a 48 x 48 canvas"):
        small = make_dm(tmp_path, canvas=32)
    large = make_dm(tmp_path, canvas=48)
    for index in range(N):
        a, b = small.datasets["test"][index], large.datasets["test"][index]
        assert a["x"].shape == (57, 48, 48)
        assert all(torch.equal(a[k], b[k]) for k in ("x", "y", "length"))


@pytest.mark.parametrize(
    "options",
    [
        {"canvas": 40, "tile": 16},
        {"tile": 64, "canvas": 48},
        {"pad": 48},
        {"pad": -1},
        {"crop": 0},
        {"n_val": 0},
        {"label_clip": 0.0},
    ],
)
def test_inconsistent_options_are_refused(tmp_path, options):
    with pytest.raises(UsageError, match="psicov") as err:
        PsicovDataModule(root=str(tmp_path), **{**ARGS, **options})
    assert "\n" not in str(err.value)


def test_n_val_must_leave_training_proteins(tmp_path):
    with pytest.raises(DataError, match=r"deepcov.lst lists 8 proteins; n_val=8"):
        make_dm(tmp_path, "search", n_val=N)


# ---------------------------------------------------------------- bad files
def save_distances(path: Path, length, seq, cb) -> None:
    path.write_bytes(_npy(np.array((length, seq, cb), dtype=object)))


def _set_feature(key, value):
    def mutate(features, length, cb):
        features[key] = value(features, length) if callable(value) else value
        return features, length, cb

    return mutate


def _set_distance(mutate_cb, delta_length=0):
    def mutate(features, length, cb):
        cb = mutate_cb(cb.copy())
        return features, length + delta_length, cb

    return mutate


def _scaled_pssm(features, length):
    pssm = features["pssm"].copy()
    pssm[2, 5] = 100.0
    return pssm


def _nan_ccmpred(features, length):
    m = features["ccmpred"].copy()
    m[1, 2] = np.nan
    return m


def _far(cb):
    cb[2, 9] = 501.0
    return cb


def _nan_distance(cb):
    cb[4, 6] = np.nan
    return cb


def _bigger(cb):
    return np.pad(cb, ((0, 1), (0, 1)), constant_values=10.0)


@pytest.mark.parametrize(
    "mutate, file, match",
    [
        (_set_feature("pssm", _scaled_pssm), "features", r"'pssm' has values outside \(-100, 100\)"),
        (_set_feature("ccmpred", _nan_ccmpred), "features", r"'ccmpred' has values outside .* or NaN"),
        (_set_feature("pssm", lambda f, n: f["pssm"][:, :21]), "features", r"'pssm' has shape \(\d+, 21\), expected \(\d+, 22\)"),
        (_set_feature("sa", lambda f, n: ["x"] * n), "features", "'sa' is not numeric"),
        (_set_distance(_far), "distance", "distances above 500 A"),
        (_set_distance(_nan_distance), "distance", "contains NaN"),
        (_set_distance(_bigger, delta_length=1), "distance", r"L = \d+, but the sequence in .*\.pkl has \d+ residues"),
    ],
)
def test_bad_values_and_shapes_are_one_line_errors_naming_the_file(tmp_path, mutate, file, match):
    dm = make_dm(tmp_path)
    pid = ids(tmp_path, "deepcov")[0]
    features, length, cb = mutate(*read_protein(tmp_path, "deepcov", pid))
    feature_path = tmp_path / "deepcov" / "features" / f"{pid}.pkl"
    distance_path = tmp_path / "deepcov" / "distance" / f"{pid}-cb.npy"
    feature_path.write_bytes(pickle.dumps(features))
    save_distances(distance_path, length, features["seq"], cb)
    with pytest.raises(DataError, match=match) as err:
        dm.datasets["train"][0]
    assert str(feature_path if file == "features" else distance_path) in str(err.value) and "\n" not in str(err.value)
    dm.datasets["train"][1]  # the other proteins are unaffected


@pytest.mark.parametrize(
    "file, content, match",
    [
        ("features", lambda b: b[: len(b) // 2], "not a readable pickle"),
        ("features", lambda b: pickle.dumps([1, 2, 3]), "expected a pickled dict with a 'seq' string"),
        ("distance", lambda b: b[: len(b) // 2], "is not a readable pickle"),
        ("distance", lambda b: _npy(np.array([1.0, 2.0], dtype=object)), r"expected an object array \(L, seq, cb_map\)"),
    ],
)
def test_corrupt_files_are_one_line_errors_naming_the_file(tmp_path, file, content, match):
    dm = make_dm(tmp_path)
    pid = ids(tmp_path, "deepcov")[0]
    folder, name = ("features", f"{pid}.pkl") if file == "features" else ("distance", f"{pid}-cb.npy")
    path = tmp_path / "deepcov" / folder / name
    path.write_bytes(content(path.read_bytes()))
    with pytest.raises(DataError, match=match) as err:
        dm.datasets["train"][0]
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


class _Exploit:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_feature_pickles_go_through_the_restricted_unpickler(tmp_path):
    dm = make_dm(tmp_path)
    pid = ids(tmp_path, "deepcov")[0]
    target = tmp_path / "pwned"
    (tmp_path / "deepcov" / "features" / f"{pid}.pkl").write_bytes(pickle.dumps({"seq": "AC", "ss": _Exploit(target)}))
    with pytest.raises(DataError, match="refuses to load"):
        dm.datasets["train"][0]
    assert not target.exists()


def test_a_missing_distance_file_stops_setup_naming_it(tmp_path):
    make_dm(tmp_path)
    pid = ids(tmp_path, "psicov")[3]
    missing = tmp_path / "psicov" / "distance" / f"{pid}-cb.npy"
    missing.unlink()
    with pytest.raises(DataError, match="is missing") as err:
        make_dm(tmp_path)
    assert str(err.value).startswith(str(missing)) and "\n" not in str(err.value)


def test_a_missing_list_stops_setup(tmp_path):
    make_dm(tmp_path)
    (tmp_path / "deepcov.lst").unlink()
    with pytest.raises(DataError, match=r"deepcov.lst is missing"):
        make_dm(tmp_path)


# ---------------------------------------------------------------- verify
def test_verify_checks_the_archive_members(tmp_path):
    (path,) = PsicovDataModule.write_fixture(tmp_path, N)
    dm = PsicovDataModule(root=str(tmp_path), **ARGS)
    assert "8 DeepCov and 8 PSICOV proteins" in dm.describe_file(path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    dropped = next(name for name in members if name.startswith("psicov/distance/"))
    with zipfile.ZipFile(tmp_path / "partial.zip", "w") as archive:
        for name, data in members.items():
            if name != dropped:
                archive.writestr(name, data)
    with pytest.raises(DataError, match=f"1 members of the proteins in psicov.lst are missing, e.g. {dropped}"):
        dm.describe_file(tmp_path / "partial.zip")
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="not a readable zip archive") as err:
        dm.describe_file(truncated)
    assert str(truncated) in str(err.value) and "\n" not in str(err.value)
