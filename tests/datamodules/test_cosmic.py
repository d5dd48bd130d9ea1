"""Cosmic: file selection, sorted 90/10 split, crop, sky augmentation, metric and errors, against numpy re-computations.

The expected values are computed here from the fixture archives themselves (read with
tarfile + numpy, not through the unpacked tree or the DataModule).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from nb360.datamodules.cosmic import FIELD_TYPES, TEST_TAR, TRAIN_TAR, CosmicDataModule
from nb360.errors import DataError
from nb360.metrics import build_metric

N = 8
OFFSET, SIZE = 4, 16
CROP = slice(OFFSET, OFFSET + SIZE)
SKY_LOW, SKY_HIGH = -0.9, 3.0
# fixture visits of filter f435w whose field type is GAL in the reference table (10595_2 and 9442_1 are GC)
GAL_VISITS = {"10760_2", "12513_2", "13737_3"}


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cosmic-archives")
    CosmicDataModule.write_fixture(root, N, seed=0)
    return root


@pytest.fixture(scope="module")
def unpacked(archives, tmp_path_factory) -> Path:
    """The fixture archives, fetched from a local folder and unpacked by ``prepare_data``."""
    root = tmp_path_factory.mktemp("cosmic-root")
    for name in (TRAIN_TAR, TEST_TAR):
        (root / name).write_bytes((archives / name).read_bytes())
    CosmicDataModule(root=str(root), source="local").prepare_data()
    return root


def datamodule(root: Path, split: str = "final", **options) -> CosmicDataModule:
    dm = CosmicDataModule(root=str(root), split=split, source="local", **{"crop_offset": OFFSET, "crop_size": SIZE, **options})
    dm.setup("fit")
    return dm


def tar_arrays(path: Path) -> dict[str, np.ndarray]:
    with tarfile.open(path) as archive:
        files = [m for m in archive.getmembers() if m.isfile()]
        return {m.name: np.load(io.BytesIO(archive.extractfile(m).read()), allow_pickle=False) for m in files}


def reference_samples(path: Path, top: str) -> list[tuple[str, np.ndarray, float]]:
    """(member name, array, sky level) of the selected samples, sorted by name, the reference way."""
    arrays = tar_arrays(path)
    selected = []
    for name, array in arrays.items():
        _, filt, prop, visit, file = name.split("/")
        if filt == "f435w" and f"{prop}_{visit}" in GAL_VISITS and file.endswith(".npy") and file != "sky.npy":
            k = int(file.split("_")[0])
            selected.append((name, array, float(arrays[f"{top}/{filt}/{prop}/{visit}/sky.npy"][k - 1])))
    return sorted(selected, key=lambda item: item[0])


def channels(array: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cropped image, CR mask and ignore mask (zeros for a 2-channel file)."""
    crop = array[:, CROP, CROP].astype(np.float64)
    return crop[0], crop[1], crop[2] if len(crop) == 3 else np.zeros_like(crop[0])


# ---------------------------------------------------------------- selection and splits
def test_the_field_type_table_matches_the_reference_facts():
    assert len(FIELD_TYPES) == 72
    assert sum(v == "GAL" for v in FIELD_TYPES.values()) == 27
    assert {FIELD_TYPES[k] for k in ("10760_2", "12513_2", "13737_3", "10182_pd", "13804_6")} == {"GAL"}
    assert (FIELD_TYPES["10595_2"], FIELD_TYPES["9442_1"], FIELD_TYPES["9978_5e"]) == ("GC", "GC", "EX")


@pytest.mark.parametrize("split", ["search", "final"])
def test_selection_and_sorted_split_follow_the_reference(unpacked, archives, split):
    dm = datamodule(unpacked, split)
    train = reference_samples(archives / TRAIN_TAR, "npy_train")
    assert len(train) == N + 4
    names = {part: [str(Path(p).relative_to(unpacked).as_posix()) for p in ds.paths] for part, ds in dm.datasets.items()}
    if split == "search":
        n_fit = int(len(train) * 0.9)
        assert n_fit == 10  # truncation, not rounding: 12 files -> 10 / 2
        assert names == {"train": [t[0] for t in train[:n_fit]], "val": [t[0] for t in train[n_fit:]]}
    else:
        test = reference_samples(archives / TEST_TAR, "npy_test")
        assert names == {"train": [t[0] for t in train], "test": [t[0] for t in test]}
    every = [name for part in names.values() for name in part]
    assert all("/f435w/" in name for name in every) and not any("/10595/" in name or "/9442/" in name for name in every)
    assert names["train"].index("npy_train/f435w/10760/2/11_0.npy") < names["train"].index("npy_train/f435w/10760/2/1_0.npy")


def test_search_split_needs_only_the_training_archive(archives, tmp_path):
    (tmp_path / TRAIN_TAR).write_bytes((archives / TRAIN_TAR).read_bytes())
    dm = CosmicDataModule(root=str(tmp_path), split="search", source="local", crop_offset=OFFSET, crop_size=SIZE)
    dm.prepare_data()
    dm.setup("fit")
    assert set(dm.datasets) == {"train", "val"} and not (tmp_path / "npy_test").exists()


# ---------------------------------------------------------------- samples
def test_crop_channels_and_sky_lookup(unpacked, archives):
    dm = datamodule(unpacked, "final", sky_range=(1.0, 1.0))  # factor 1: the image gets exactly sky[k - 1]
    expected = reference_samples(archives / TEST_TAR, "npy_test") + reference_samples(archives / TRAIN_TAR, "npy_train")
    samples = [dm.datasets["test"][i] for i in range(N)] + [dm.datasets["train"][i] for i in range(N + 4)]
    two_channel = 0
    for sample, (name, array, sky) in zip(samples, expected):
        image, mask, ignore = channels(array)
        assert set(sample) == {"x", "y", "ignore"}
        assert all(v.shape == (1, SIZE, SIZE) and v.dtype == torch.float32 for v in sample.values())
        np.testing.assert_allclose(sample["x"][0].numpy(), image + sky, rtol=1e-6, atol=1e-4, err_msg=name)
        np.testing.assert_array_equal(sample["y"][0].numpy(), mask)
        np.testing.assert_array_equal(sample["ignore"][0].numpy(), ignore)
        two_channel += len(array) == 2
    assert two_channel == 1 and len({sky for *_, sky in expected}) > 3


def test_reference_crop_of_full_size_files_and_visits_without_sky(tmp_path):
    rng = np.random.default_rng(1)
    full = rng.normal(50, 5, size=(3, 256, 256)).astype(np.float32)
    full[1:] = rng.random((2, 256, 256)) < 0.2
    write_visit(tmp_path, "npy_train", "10760", "2", {"1_a.npy": full, "1_b.npy": full[:2]}, sky=None)
    write_visit(tmp_path, "npy_test", "12513", "2", {"1_a.npy": full}, sky=None)
    dm = CosmicDataModule(root=str(tmp_path), split="final", source="local")
    dm.setup("fit")
    for sample in (dm.datasets["train"][0], dm.datasets["train"][1], dm.datasets["test"][0]):  # no sky.npy: nothing added
        assert sample["x"].shape == (1, 128, 128)
        np.testing.assert_array_equal(sample["x"][0].numpy(), full[0, 64:192, 64:192])
        np.testing.assert_array_equal(sample["y"][0].numpy(), full[1, 64:192, 64:192])
    np.testing.assert_array_equal(dm.datasets["train"][0]["ignore"][0].numpy(), full[2, 64:192, 64:192])
    assert not dm.datasets["train"][1]["ignore"].any()


def sky_factors(x: torch.Tensor, expected: list[tuple[str, np.ndarray, float]]) -> np.ndarray:
    """The factor u of ``x = image + sky * u`` of every sample (x: (n, 1, S, S)), checked to be one value per sample."""
    factors = []
    for xi, (_, array, sky) in zip(x[:, 0].numpy().astype(np.float64), expected, strict=True):
        u = (xi - channels(array)[0]) / sky
        assert np.ptp(u) < 1e-4 * max(1.0, np.abs(u).max())
        factors.append(u.mean())
    return np.array(factors)


def test_eval_augmentation_is_seeded_per_sample_and_training_draws_fresh_values(unpacked, archives):
    np_state, torch_state = np.random.get_state()[1].copy(), torch.random.get_rng_state().clone()
    dm = datamodule(unpacked, "search", batch_size=4, eval_batch_size=3)
    assert np.array_equal(np.random.get_state()[1], np_state) and torch.equal(torch.random.get_rng_state(), torch_state)
    train_expected = reference_samples(archives / TRAIN_TAR, "npy_train")
    val = [list(dm.val_dataloader()) for _ in range(2)]
    assert np.array_equal(np.random.get_state()[1], np_state)
    assert all(torch.equal(a[k], b[k]) for a, b in zip(*val) for k in ("x", "y", "ignore"))
    val_factors = sky_factors(torch.cat([b["x"] for b in val[0]]), train_expected[10:])
    assert np.all((SKY_LOW <= val_factors) & (val_factors < SKY_HIGH)) and len(set(val_factors)) == 2
    # a fresh module evaluates the same images: the factors depend on the seed and the sample only
    def first_val_images(**options) -> torch.Tensor:
        return next(iter(datamodule(unpacked, "search", eval_batch_size=3, **options).val_dataloader()))["x"]

    assert torch.equal(first_val_images(), val[0][0]["x"]) and not torch.equal(first_val_images(eval_seed=1), val[0][0]["x"])

    train = dm.datasets["train"]
    torch.manual_seed(0)
    first, second = (sky_factors(torch.stack([train[i]["x"] for i in range(10)]), train_expected[:10]) for _ in range(2))
    assert np.all(first != second)
    draws = np.concatenate([first, second])
    assert np.all((SKY_LOW <= draws) & (draws < SKY_HIGH)) and draws.min() < 0 < draws.max()

    plain = datamodule(unpacked, "search", augment_eval=False).datasets["val"]
    for i, (_, array, _) in enumerate(train_expected[10:]):
        np.testing.assert_array_equal(plain[i]["x"][0].numpy(), channels(array)[0])


def test_training_loader_yields_dict_batches(unpacked):
    batch = next(iter(datamodule(unpacked, "final", batch_size=5).train_dataloader()))
    assert {k: tuple(v.shape) for k, v in batch.items()} == {k: (5, 1, SIZE, SIZE) for k in ("x", "y", "ignore")}
    assert set(torch.unique(batch["y"]).tolist()) == {0.0, 1.0}


# ---------------------------------------------------------------- metric
def mann_whitney_auroc(score: np.ndarray, truth: np.ndarray) -> float:
    """AUROC as P(score of a positive > score of a negative) + P(tie) / 2."""
    pos, neg = score[truth], score[~truth]
    values, counts = np.unique(neg, return_counts=True)
    greater = (pos[:, None] > values).astype(float) @ counts
    ties = (pos[:, None] == values).astype(float) @ counts
    return float((greater.sum() + ties.sum() / 2) / (len(pos) * len(neg)))


@pytest.mark.parametrize("use_ignore_mask", [False, True])
def test_thresholded_metric_through_the_loader_matches_numpy(unpacked, archives, use_ignore_mask):
    dm = datamodule(unpacked, "final", eval_batch_size=3)
    expected = reference_samples(archives / TEST_TAR, "npy_test")
    logits = np.random.default_rng(7).normal(0.3, 1.0, size=(N, 1, SIZE, SIZE)).astype(np.float32)
    metrics = {name: build_metric(name, use_ignore_mask=use_ignore_mask) for name in ("one_minus_auroc_thresholded", "fnr")}
    start = 0
    for batch in dm.test_dataloader():
        preds = torch.from_numpy(logits[start : start + len(batch["x"])])
        start += len(preds)
        for metric in metrics.values():
            metric.update(preds, batch["y"], ignore=batch["ignore"])
    masks = np.stack([channels(array)[1] for _, array, _ in expected]) > 0.5
    ignores = np.stack([channels(array)[2] for _, array, _ in expected]) > 0.5
    keep = ~ignores if use_ignore_mask else np.ones_like(masks)
    pred, truth = (logits[:, 0] > 0.5)[keep], masks[keep]
    fnr = np.sum(~pred & truth) / truth.sum()
    fpr = np.sum(pred & ~truth) / (~truth).sum()
    value = metrics["one_minus_auroc_thresholded"].compute().item()
    assert value == pytest.approx(1 - mann_whitney_auroc(pred.astype(float), truth), abs=1e-12)
    assert value == pytest.approx((fnr + fpr) / 2, abs=1e-12)
    assert metrics["fnr"].compute().item() == pytest.approx(100 * fnr, abs=1e-9)


# ---------------------------------------------------------------- files and errors
def write_visit(root: Path, part: str, prop: str, visit: str, samples: dict[str, np.ndarray], sky: np.ndarray | None) -> Path:
    """An unpacked f435w visit directory: ``samples`` by file name and, unless None, its ``sky.npy``."""
    folder = root / part / "f435w" / prop / visit
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in samples.items():
        np.save(folder / name, array, allow_pickle=array.dtype == object)
    if sky is not None:
        np.save(folder / "sky.npy", sky)
    return folder


def good_sample(side: int = 24) -> np.ndarray:
    array = np.zeros((3, side, side), dtype=np.float32)
    array[1, 5, 5] = 1
    return array


def one_line_error(root: Path, index: int = 0) -> str:
    with pytest.raises(DataError) as err:
        dm = datamodule(root, "search")
        dm.datasets["train"][index]
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((4, 24, 24), np.float32), "expected a float array of shape"),
        (np.zeros((24, 24), np.float32), "expected a float array of shape"),
        (np.zeros((3, 24, 24), np.int32), "expected a float array of shape"),
        (np.zeros((3, 12, 12), np.float32), "smaller than the crop"),
        (np.full((3, 24, 24), 2, np.float32), "masks must hold only 0 and 1"),
        (np.array([{"a": 1}], dtype=object), "not a readable .npy"),
    ],
)
def test_malformed_samples_give_one_line_errors_naming_the_file(tmp_path, bad, message):
    samples = {"1_a.npy": bad, **{f"1_{c}.npy": good_sample() for c in "bcdefghijk"}}  # 1_a.npy sorts first: a training file
    write_visit(tmp_path, "npy_train", "10760", "2", samples, np.ones(3))
    error = one_line_error(tmp_path)
    assert message in error and "1_a.npy" in error


def test_truncated_sample_file(tmp_path):
    folder = write_visit(tmp_path, "npy_train", "10760", "2", {f"1_{c}.npy": good_sample() for c in "abcdefghij"}, np.ones(3))
    (folder / "1_a.npy").write_bytes((folder / "1_a.npy").read_bytes()[:500])
    error = one_line_error(tmp_path)
    assert "1_a.npy" in error and "not a readable .npy" in error


@pytest.mark.parametrize(
    "visit, name, sky, message",
    [
        ("2", "4_a.npy", np.ones(3), "exposure number 4 has no entry"),
        ("2", "0_a.npy", np.ones(3), "exposure number 0 has no entry"),
        ("2", "a_1.npy", np.ones(3), "does not start with an integer"),
        ("2", "1_a.npy", np.ones((3, 2)), "1-D numeric array"),
        ("99", "1_a.npy", np.ones(3), "visit 10760_99 of filter f435w is not in"),
    ],
)
def test_bad_layouts_give_one_line_errors(tmp_path, visit, name, sky, message):
    write_visit(tmp_path, "npy_train", "10760", visit, {name: good_sample()}, sky)
    write_visit(tmp_path, "npy_train", "12513", "2", {f"1_{c}.npy": good_sample() for c in "abcdefghij"}, np.ones(3))
    assert message in one_line_error(tmp_path)


def test_missing_tree_and_too_few_files(tmp_path):
    assert "npy_train/f435w is missing" in one_line_error(tmp_path)
    write_visit(tmp_path, "npy_train", "10760", "2", {"1_a.npy": good_sample()}, np.ones(3))
    assert "too few to split" in one_line_error(tmp_path)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_archive_gives_one_line_error_and_unpacks_nothing(archives, tmp_path, damage):
    data = (archives / TRAIN_TAR).read_bytes()
    (tmp_path / TRAIN_TAR).write_bytes(data[: len(data) // 2 + 100] if damage == "truncate" else b"\x00\x01junk" * 1000)
    (tmp_path / TEST_TAR).write_bytes((archives / TEST_TAR).read_bytes())
    with pytest.raises(DataError) as err:
        CosmicDataModule(root=str(tmp_path), source="local").prepare_data()
    assert "\n" not in str(err.value) and TRAIN_TAR in str(err.value)
    assert not (tmp_path / "npy_train").exists()


def test_verify_describes_the_archives_and_rejects_bad_members(archives, tmp_path):
    dm = CosmicDataModule(root=str(archives), source="local", crop_offset=OFFSET, crop_size=SIZE)
    lines = dm.verify()
    assert [line.split()[1] for line in lines] == [str(archives / TRAIN_TAR), str(archives / TEST_TAR)]
    assert f"{N + 4} f435w GAL samples, first float32 (3, 24, 24)" in lines[0] and f"{N} f435w GAL samples" in lines[1]
    with pytest.raises(DataError, match="smaller than the crop"):
        CosmicDataModule(root=str(archives), source="local").describe_file(archives / TRAIN_TAR)
    bad = tmp_path / TRAIN_TAR
    with tarfile.open(bad, "w") as archive:
        payload = io.BytesIO()
        np.save(payload, np.zeros((24, 24), np.float32))
        info = tarfile.TarInfo("npy_train/f435w/10760/2/1_a.npy")
        info.size = len(payload.getvalue())
        archive.addfile(info, io.BytesIO(payload.getvalue()))
    with pytest.raises(DataError, match=r"1_a\.npy: expected a float array of shape") as err:
        dm.describe_file(bad)
    assert str(bad) in str(err.value)


def test_fixture_is_small_and_reproducible(archives, tmp_path):
    again = CosmicDataModule.write_fixture(tmp_path, N, seed=0)
    assert [p.read_bytes() for p in again] == [(archives / p.name).read_bytes() for p in again]
    assert sum(p.stat().st_size for p in again) < 1_000_000
