"""FSD50K: log-mel features against a numpy computation, augmentations, manifests, clip-level evaluation, errors."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io.wavfile
import torch

from nb360.datamodules import fsd50k_features as feat
from nb360.datamodules.fsd50k import FSD50KDataModule, TrainClips
from nb360.errors import DataError
from nb360.metrics import OneMinusMAP

SR = 22050


# ---------------------------------------------------------------- independent numpy references
def numpy_filterbank(n_freqs: int = 961, n_mels: int = 96) -> np.ndarray:
    """HTK triangles by linear interpolation between each filter's three edge frequencies."""
    freqs = np.arange(n_freqs) * (SR // 2) / (n_freqs - 1)
    top = 2595 * np.log10(1 + (SR // 2) / 700)
    edges = 700 * (10 ** (top * np.arange(n_mels + 2) / (n_mels + 1) / 2595) - 1)
    return np.stack([np.interp(freqs, edges[j : j + 3], [0.0, 1.0, 0.0]) for j in range(n_mels)], axis=1)


def numpy_power_mel(audio: np.ndarray) -> np.ndarray:
    """Reflect-padded centred frames, periodic Hann of 661 centred in 1920, |rfft|^2, mel filters (float64)."""
    n_fft, win, hop = 1920, 661, 220
    padded = np.pad(audio.astype(np.float64), n_fft // 2, mode="reflect")
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left : left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    frames = 1 + (len(padded) - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    power = np.abs(np.fft.rfft(padded[index] * window, axis=1)) ** 2
    return (power @ numpy_filterbank()).T


def numpy_logmel(audio: np.ndarray) -> np.ndarray:
    """librosa.power_to_db (ref 1, amin 1e-10, top_db 80), + 75, minus the mean."""
    db = 10 * np.log10(np.maximum(1e-10, numpy_power_mel(audio)))
    db = np.maximum(db, db.max() - 80) + 75
    return db - db.mean()


def wav_audio(path: Path) -> np.ndarray:
    rate, data = scipy.io.wavfile.read(path)
    assert rate == SR and data.dtype == np.int16
    return data / 32768.0


def write_wav(path: Path, data: np.ndarray, rate: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    scipy.io.wavfile.write(path, rate, data)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["files", "labels", "ext"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def one_line_error(excinfo: pytest.ExceptionInfo, *names: str) -> None:
    message = str(excinfo.value)
    assert "\n" not in message
    for name in names:
        assert name in message, message


# ---------------------------------------------------------------- fixture data
@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fixture archive, written and unpacked once (``prepare_data`` with local files only)."""
    root = tmp_path_factory.mktemp("fsd50k")
    FSD50KDataModule.write_fixture(root, 8, seed=0)
    FSD50KDataModule(root=str(root), source="local").prepare_data()
    return root


@pytest.fixture
def copy(unpacked: Path, tmp_path: Path) -> Path:
    """A private copy of the unpacked fixture, for tests that damage it."""
    root = tmp_path / "root"
    shutil.copytree(unpacked, root)
    return root


def datasets(root: Path, split: str = "final", **options) -> dict:
    dm = FSD50KDataModule(root=str(root), split=split, source="local", **options)
    dm.setup()
    return dm.datasets


# ---------------------------------------------------------------- features
def test_filterbank_is_the_htk_triangle_formula():
    fb = feat.mel_filterbank(961, 96, SR).numpy()
    assert fb.shape == (961, 96) and fb.dtype == np.float32
    np.testing.assert_allclose(fb, numpy_filterbank(), atol=1e-6)
    # unnormalised triangles (the narrow low ones fall between bins, so their sampled peak is < 1);
    # neighbouring filters sum to 1 between the first and last peaks
    assert np.all(fb.max(axis=0) > 0.5) and fb.max() <= 1.0 and np.all(fb.max(axis=0)[-5:] > 0.9)
    freqs = np.arange(961) * 11025 / 960
    peaks = feat.mel_to_hz(np.linspace(0, feat.hz_to_mel(11025), 98))[1:-1]
    inside = (freqs >= peaks[0]) & (freqs <= peaks[-1])
    np.testing.assert_allclose(fb[inside].sum(axis=1), 1.0, atol=1e-5)
    assert feat.hz_to_mel(1000.0) == pytest.approx(1000.0, abs=0.1)  # the HTK scale's anchor point


def test_logmel_of_a_tone_matches_numpy_and_peaks_at_the_tone():
    t = np.arange(SR) / SR
    rng = np.random.default_rng(1)
    audio = (0.5 * np.sin(2 * np.pi * 1500 * t) + 0.01 * rng.standard_normal(SR)).astype(np.float32)
    ours = feat.LogMel()(torch.from_numpy(audio)).numpy()
    assert ours.shape == (96, 101) == (feat.N_MELS, feat.FRAMES)
    np.testing.assert_allclose(ours, numpy_logmel(audio), atol=2e-3)
    assert abs(ours.mean()) < 1e-4 and ours.max() - ours.min() <= 80 + 1e-3
    centres = feat.mel_to_hz(np.linspace(0, feat.hz_to_mel(11025), 98))[1:-1]
    assert ours[:, 50].argmax() == np.abs(centres - 1500).argmin()
    batch = feat.LogMel()(torch.from_numpy(np.stack([audio, 0.1 * audio])))
    np.testing.assert_allclose(batch[0].numpy(), ours, atol=1e-4)
    np.testing.assert_allclose(batch[1].numpy(), ours, atol=1e-2)  # a gain is a dB offset, which the mean removes


def test_read_wav_scales_pcm_like_soundfile_and_tiles_short_chunks(tmp_path):
    data = np.random.default_rng(2).integers(-32768, 32767, 10_000).astype(np.int16)
    audio = feat.read_wav(write_wav(tmp_path / "short.wav", data))
    assert audio.dtype == np.float32 and audio.shape == (SR,)
    np.testing.assert_array_equal(audio, np.tile(data / 32768.0, 3)[:SR].astype(np.float32))
    wide = (data.astype(np.int32) << 16)
    np.testing.assert_array_equal(feat.read_wav(write_wav(tmp_path / "i32.wav", wide), min_samples=0), data / 32768.0)
    floats = np.linspace(-1, 1, SR, dtype=np.float32)
    np.testing.assert_array_equal(feat.read_wav(write_wav(tmp_path / "f.wav", floats)), floats)


def test_read_wav_rejects_bad_files_in_one_line(tmp_path):
    good = write_wav(tmp_path / "good.wav", np.zeros(SR, np.int16))
    cases = {
        write_wav(tmp_path / "rate.wav", np.zeros(16000, np.int16), rate=16000): "16000 Hz",
        write_wav(tmp_path / "stereo.wav", np.zeros((SR, 2), np.int16)): "mono",
        write_wav(tmp_path / "empty.wav", np.zeros(0, np.int16)): "no samples",
    }
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good.read_bytes()[:30])
    cases[truncated] = "not a readable wav"
    text = tmp_path / "text.wav"
    text.write_text("not audio")
    cases[text] = "not a readable wav"
    for path, words in cases.items():
        with pytest.raises(DataError) as excinfo:
            feat.read_wav(path)
        one_line_error(excinfo, str(path), words)


# ---------------------------------------------------------------- augmentations
def test_pad_to_size_matches_numpy_pad_modes():
    spec = np.random.default_rng(3).standard_normal((96, 60)).astype(np.float32)
    widths = ((0, 0), (20, 21))  # padding 41: 20 before, 21 after
    wrap = feat.pad_to_size(torch.from_numpy(spec), 101, "wrap").numpy()
    np.testing.assert_array_equal(wrap, np.pad(spec, widths, "wrap"))
    constant = feat.pad_to_size(torch.from_numpy(spec), 101, "constant").numpy()
    np.testing.assert_array_equal(constant, np.pad(spec, widths, "constant", constant_values=spec.min()))
    tiny = np.arange(6, dtype=np.float32).reshape(1, 6)
    tiled = feat.pad_to_size(torch.from_numpy(tiny), 20, "wrap").numpy()  # padding longer than the input
    np.testing.assert_array_equal(tiled, np.pad(tiny, ((0, 0), (7, 7)), "wrap"))
    long = torch.randn(96, 120)
    assert feat.pad_to_size(long, 101, "wrap") is long


def test_spec_augment_masks_whole_bands_and_spans_with_the_minimum():
    spec = torch.from_numpy(np.random.default_rng(4).uniform(1.0, 2.0, (96, 101)).astype(np.float32))
    spec[5, 7] = -3.0  # the minimum that masks are filled with
    rounds, seen_two = [], False
    for seed in range(200):
        out = feat.spec_augment(spec, generator=torch.Generator().manual_seed(seed)).numpy()
        filled, original = out == -3.0, spec.numpy() == -3.0
        np.testing.assert_array_equal(out[~filled], spec.numpy()[~filled])
        rows, cols = np.flatnonzero(filled.all(axis=1)), np.flatnonzero(filled.all(axis=0))
        # every filled cell lies in a fully filled row or column: at most 2 bands of <= 14 rows and 2 spans of <= 20 frames
        np.testing.assert_array_equal(filled, filled.all(axis=1, keepdims=True) | filled.all(axis=0, keepdims=True) | original)
        assert len(rows) <= 2 * int(0.15 * 96) and len(cols) <= 2 * int(0.20 * 101)
        runs = len(np.flatnonzero(np.diff(cols) > 1)) + 1 if len(cols) else 0
        seen_two |= runs == 2
        rounds.append(len(cols))
    assert seen_two and np.mean(rounds) > 5 and np.max(rounds) > 20


def test_random_crop_takes_consecutive_frames_from_every_start():
    spec = torch.arange(151.0).expand(96, 151)
    starts = set()
    for seed in range(300):
        out = feat.random_crop(spec, 101, torch.Generator().manual_seed(seed))
        assert out.shape == (96, 101)
        start = int(out[0, 0])
        np.testing.assert_array_equal(out[0].numpy(), np.arange(start, start + 101))
        starts.add(start)
    assert min(starts) == 0 and max(starts) == 50


def test_train_augment_pads_with_either_mode_then_crops_to_101():
    spec = torch.from_numpy(np.random.default_rng(5).standard_normal((96, 60)).astype(np.float32))
    widths = ((0, 0), (20, 21))
    wrap = np.pad(spec.numpy(), widths, "wrap")
    constant = np.pad(spec.numpy(), widths, "constant", constant_values=spec.min().item())
    modes = []
    for seed in range(100):
        out = feat.TrainAugment(spec_prob=0.0)(spec, torch.Generator().manual_seed(seed)).numpy()
        assert out.shape == (96, 101)
        modes.append("wrap" if np.array_equal(out, wrap) else "constant" if np.array_equal(out, constant) else "neither")
    assert "neither" not in modes and 30 <= modes.count("wrap") <= 70
    masked = [feat.TrainAugment()(torch.randn(96, 101), torch.Generator().manual_seed(s)) for s in range(100)]
    assert all(m.shape == (96, 101) for m in masked)


def test_background_mix_blends_a_fraction_up_to_one_half_three_times_in_four():
    x, noise = torch.full((96, 101), 4.0), torch.full((96, 151), -2.0)  # constants survive pad/mask/crop unchanged
    outcomes = []
    for seed in range(400):
        out = feat.BackgroundMix()(x, [noise], feat.TrainAugment(), torch.Generator().manual_seed(seed))
        assert out.shape == (96, 101) and torch.all(out == out[0, 0])
        outcomes.append((4.0 - out[0, 0].item()) / 6.0)  # the mixing weight a
    alphas = np.array(outcomes)
    assert alphas.min() >= 0 and alphas.max() <= 0.5 + 1e-6
    assert 0.68 <= np.mean(alphas > 0) <= 0.82
    assert np.mean(alphas[alphas > 0]) == pytest.approx(0.25, abs=0.03)


# ---------------------------------------------------------------- manifests and datasets
def expected_clips(root: Path, part: str) -> dict[int, tuple[list[Path], np.ndarray]]:
    """{clip id: (its wavs in CSV order, multi-hot)} read with csv and json directly."""
    label_map = json.loads((root / "data/chunks/lbl_map.json").read_text())
    clips: dict[int, tuple[list[Path], np.ndarray]] = {}
    for row in read_csv(root / f"data/chunks/{part}.csv"):
        hot = np.zeros(200, np.float32)
        hot[[label_map[name] for name in row["labels"].split(",")]] = 1
        files, _ = clips.setdefault(int(row["ext"]), ([], hot))
        files.append(root / row["files"])
    return clips


def test_fixture_is_the_reference_layout(unpacked):
    label_map = json.loads((unpacked / "data/chunks/lbl_map.json").read_text())
    assert sorted(label_map.values()) == list(range(200))
    for part in ("tr", "val", "eval"):
        text = (unpacked / f"data/chunks/{part}.csv").read_text()
        assert text.startswith("files,labels,ext\n") and '"' in text  # a quoted multi-label field
        for files, hot in expected_clips(unpacked, part).values():
            assert len(files) in (2, 3) and hot.sum() >= 1
            for f in files:
                assert wav_audio(f).shape == (SR,)
    assert (unpacked / "data/noise_22050/n0.wav").is_file()
    assert (unpacked / "audio.zip").stat().st_size < 1_000_000


@pytest.mark.parametrize(("split", "part", "key"), [("search", "val", "val"), ("final", "eval", "test")])
def test_evaluation_scores_every_chunk_with_its_clip_id_and_labels(unpacked, split, part, key):
    parts = datasets(unpacked, split)
    assert set(parts) == {"train", key}
    expected = expected_clips(unpacked, part)
    items = [parts[key][i] for i in range(len(parts[key]))]
    assert len(items) == sum(len(files) for files, _ in expected.values())
    by_clip: dict[int, list[np.ndarray]] = {}
    for item in items:
        assert item["x"].shape == (1, 96, 101) and item["x"].dtype == torch.float32
        assert item["clip"].dtype == torch.int64 and item["y"].dtype == torch.float32
        clip = int(item["clip"])
        np.testing.assert_array_equal(item["y"].numpy(), expected[clip][1])
        by_clip.setdefault(clip, []).append(item["x"][0].numpy())
    assert set(by_clip) == set(expected)
    for clip, xs in by_clip.items():
        want = [numpy_logmel(wav_audio(f)) for f in expected[clip][0]]
        assert len(xs) == len(want)
        for x, ref in zip(xs, want):
            np.testing.assert_allclose(x, ref, atol=5e-3)


def test_training_draws_one_chunk_per_clip_with_the_clip_target(unpacked):
    parts = datasets(unpacked, "search")
    train = parts["train"]
    expected = expected_clips(unpacked, "tr")
    assert len(train) == len(expected) and set(expected).isdisjoint(expected_clips(unpacked, "val"))
    plain = TrainClips(train.manifest, train.noises, feat.TrainAugment(spec_prob=0.0), feat.BackgroundMix(prob=0.0))
    torch.manual_seed(0)
    for index in range(len(plain)):
        clip = int(plain[index]["clip"])
        files, hot = expected[clip]
        references = [numpy_logmel(wav_audio(f)) for f in files]
        drawn = set()
        for _ in range(20):
            item = plain[index]
            assert int(item["clip"]) == clip
            np.testing.assert_array_equal(item["y"].numpy(), hot)
            distances = [np.abs(item["x"][0].numpy() - ref).max() for ref in references]
            assert min(distances) < 5e-3
            drawn.add(int(np.argmin(distances)))
        assert drawn == set(range(len(files)))  # every chunk of the clip gets drawn
    augmented = train[0]
    assert augmented["x"].shape == (1, 96, 101) and torch.isfinite(augmented["x"]).all()


def test_noise_spectrograms_cover_the_whole_noise_file(unpacked):
    train = datasets(unpacked)["train"]
    (noise,) = train.noises
    assert noise.shape == (96, 1 + 33075 // 220)
    np.testing.assert_allclose(noise.numpy(), numpy_logmel(wav_audio(unpacked / "data/noise_22050/n0.wav")), atol=5e-3)


def test_train_loader_shuffles_clips_and_drops_the_last_partial_batch(tmp_path):
    FSD50KDataModule.write_fixture(tmp_path, 12)  # 3 clips per part
    FSD50KDataModule(root=str(tmp_path), source="local").prepare_data()
    clips = sorted(expected_clips(tmp_path, "tr"))
    assert len(clips) == 3
    for drop_last, sizes in ((True, [2]), (False, [2, 1])):
        dm = FSD50KDataModule(root=str(tmp_path), split="final", source="local", batch_size=2, drop_last=drop_last)
        dm.setup()
        loaded = list(dm.train_dataloader())
        assert [len(b["clip"]) for b in loaded] == sizes
        assert loaded[0]["x"].shape == (2, 1, 96, 101) and loaded[0]["y"].shape == (2, 200)
        assert loaded[0]["y"].dtype == torch.float32
        if not drop_last:
            assert sorted(torch.cat([b["clip"] for b in loaded]).tolist()) == clips


def test_wav_paths_resolve_under_the_csv_folder_or_after_a_foreign_prefix(copy):
    chunks = copy / "data/chunks"
    for part, prefix in (("tr", "../"), ("val", "/media/someone/fsd50k/"), ("eval", "")):
        rows = read_csv(chunks / f"{part}.csv")
        for row in rows:
            row["files"] = prefix + row["files"].removeprefix("data/")
        write_csv(chunks / f"{part}.csv", rows)
    for split in ("search", "final"):
        evaluated = datasets(copy, split)["val" if split == "search" else "test"]
        assert all(Path(p.decode()).is_file() for p in evaluated.manifest.paths)


def test_archive_without_the_data_folder_unpacks_and_loads(unpacked, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    with zipfile.ZipFile(unpacked / "audio.zip") as source, zipfile.ZipFile(flat / "audio.zip", "w") as target:
        for name in source.namelist():
            target.writestr(name.removeprefix("data/"), source.read(name))
    dm = FSD50KDataModule(root=str(flat), split="final", source="local")
    assert "200 labels" in dm.verify()[0]
    dm.prepare_data()
    dm.setup()
    assert (flat / "chunks/eval.csv").is_file() and len(dm.datasets["test"]) == len(read_csv(flat / "chunks/eval.csv"))


# ---------------------------------------------------------------- the metric on a hand-made clip set
def test_clip_level_map_averages_chunk_logits_before_the_sigmoid():
    # 4 clips (chunks: 2, 1, 3, 2; clip 9 straddles two updates), 3 labels; label 2 has no positive clip and is left out
    clips = torch.tensor([7, 7, 3, 9, 9, 9, 1, 1])
    logits = torch.tensor(
        [[5.0, 1, 0], [-6, 0, 0], [-0.3, 2, 0], [1, -1, 0], [0, 0, 0], [-0.5, 0.1, 0], [-2, 1.2, 0], [-1, 0, 0]]
    )
    hot = {7: [1, 0, 0], 3: [0, 1, 0], 9: [1, 1, 0], 1: [0, 0, 0]}
    targets = torch.tensor([hot[int(c)] for c in clips], dtype=torch.float32)
    metric = OneMinusMAP()
    metric.update(logits[:5], targets[:5], clip=clips[:5])
    metric.update(logits[5:], targets[5:], clip=clips[5:])
    with pytest.warns(UserWarning, match="1 labels"):
        value = float(metric.compute())
    # clip means: 7 -> (-0.5, 0.5), 3 -> (-0.3, 2), 9 -> (1/6, -0.3), 1 -> (-1.5, 0.6); the sigmoid keeps their order
    # label 0, positives {7, 9}: ranking 9, 3, 7, 1 -> AP = (1/1 + 2/3) / 2
    #   (averaging sigmoids instead would rank 9, 7, 3, 1 and give AP 1)
    # label 1, positives {3, 9}: ranking 3, 1, 7, 9 -> AP = (1/1 + 2/4) / 2
    expected = 1 - ((1 + 2 / 3) / 2 + (1 + 2 / 4) / 2) / 2
    assert value == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------- errors
def test_missing_wav_is_named(copy):
    rows = read_csv(copy / "data/chunks/eval.csv")
    (copy / rows[1]["files"]).unlink()
    with pytest.raises(DataError) as excinfo:
        datasets(copy)
    one_line_error(excinfo, "eval.csv", "line 3", rows[1]["files"])


def test_unknown_label_name_is_named(copy):
    rows = read_csv(copy / "data/chunks/tr.csv")
    rows[2]["labels"] = "Label_001,Not_A_Label"
    write_csv(copy / "data/chunks/tr.csv", rows)
    with pytest.raises(DataError) as excinfo:
        datasets(copy)
    one_line_error(excinfo, "tr.csv", "Not_A_Label")


@pytest.mark.parametrize(
    ("mapping", "words"),
    [
        ({f"L{i}": i for i in range(199)}, "200 labels"),
        ({f"L{i}": i + 1 for i in range(200)}, "indices 0..199"),
        (["a"], "JSON object"),
    ],
)
def test_label_map_must_hold_200_indices(copy, mapping, words):
    (copy / "data/chunks/lbl_map.json").write_text(json.dumps(mapping))
    with pytest.raises(DataError) as excinfo:
        datasets(copy)
    one_line_error(excinfo, "lbl_map.json", words)


def test_manifest_errors_are_one_line(copy):
    chunks = copy / "data/chunks"
    good = read_csv(chunks / "val.csv")
    (chunks / "val.csv").write_text("file,label,ext\n")
    with pytest.raises(DataError) as excinfo:
        datasets(copy, "search")
    one_line_error(excinfo, "val.csv", "header")
    write_csv(chunks / "val.csv", [dict(good[0], ext="abc"), *good[1:]])
    with pytest.raises(DataError) as excinfo:
        datasets(copy, "search")
    one_line_error(excinfo, "val.csv", "'abc'")
    write_csv(chunks / "val.csv", [dict(good[0], labels="Label_000"), *good[1:]] if good[0]["labels"] != "Label_000" else good)
    with pytest.raises(DataError) as excinfo:
        datasets(copy, "search")
    one_line_error(excinfo, "val.csv", f"clip {good[0]['ext']}", "different labels")


def test_wrong_sample_rate_or_long_chunk_fails_when_read(copy):
    rows = read_csv(copy / "data/chunks/eval.csv")
    write_wav(copy / rows[0]["files"], np.zeros(SR, np.int16), rate=44100)
    write_wav(copy / rows[-1]["files"], np.zeros(SR + 1, np.int16))
    test = datasets(copy, feature_cache=False)["test"]
    paths = [p.decode() for p in test.manifest.paths]
    for name, words in ((rows[0]["files"], "44100 Hz"), (rows[-1]["files"], "at most 22050")):
        with pytest.raises(DataError) as excinfo:
            test[paths.index(str(copy / name))]
        one_line_error(excinfo, name, words)
    with pytest.raises(DataError) as excinfo:  # with the feature cache: when the cache is filled
        datasets(copy)
    order = {words: paths.index(str(copy / rows[i]["files"])) for i, words in ((0, "44100 Hz"), (-1, "at most"))}
    first_bad = (0, min(order, key=order.get))
    one_line_error(excinfo, first_bad[1])
    assert not list((copy / "data/chunks").glob("*.tmp"))  # nothing half-written is left


# ---------------------------------------------------------------- feature cache
def test_cached_features_are_the_on_the_fly_features(copy, monkeypatch):
    cached, fresh = datasets(copy, "search"), datasets(copy, "search", feature_cache=False)
    chunks = copy / "data/chunks"
    assert len(list(chunks.glob("features_tr_*.npy"))) == 1 and len(list(chunks.glob("features_val_*.npy"))) == 1
    assert isinstance(cached["val"].cache, np.memmap) and fresh["val"].cache is None
    for i in range(len(cached["val"])):
        a, b = cached["val"][i], fresh["val"][i]
        assert all(torch.equal(a[k], b[k]) for k in ("x", "y", "clip"))
    for i in range(len(cached["train"].manifest.paths)):
        assert torch.equal(cached["train"].features(i), fresh["train"].features(i))
    for dataset in (cached["train"], fresh["train"]):  # the augmentations on the cached tensors draw the same
        torch.manual_seed(3)
        dataset.drawn = [dataset[i]["x"] for i in range(len(dataset))]
    assert all(torch.equal(a, b) for a, b in zip(cached["train"].drawn, fresh["train"].drawn))

    from nb360.datamodules import fsd50k

    def no_recompute(*args):
        raise AssertionError("a valid cache was computed again")

    monkeypatch.setattr(fsd50k, "chunk_features", no_recompute)
    again = datasets(copy, "search")
    assert torch.equal(again["val"][0]["x"], cached["val"][0]["x"])


def test_a_changed_parameter_or_wav_invalidates_the_cache(copy, monkeypatch):
    from nb360.datamodules import fsd50k

    datasets(copy)
    chunks = copy / "data/chunks"
    (first,) = chunks.glob("features_eval_*.npy")
    computed = []
    real = fsd50k.chunk_features
    monkeypatch.setattr(fsd50k, "chunk_features", lambda path, logmel: computed.append(path) or real(path, logmel))
    monkeypatch.setitem(feat.FEATURE_PARAMS, "top_db", 70.0)
    parts = datasets(copy)
    test = parts["test"]
    (second,) = chunks.glob("features_eval_*.npy")  # a new key, and the stale cache is gone
    assert second != first and len(computed) == len(parts["train"].manifest.paths) + len(test.manifest.paths)  # tr and eval
    monkeypatch.setitem(feat.FEATURE_PARAMS, "top_db", 80.0)

    victim = test.manifest.paths[1].decode()
    write_wav(Path(victim), (np.sin(np.arange(SR) * 0.3) * 9000).astype(np.int16))
    test = datasets(copy)["test"]
    (third,) = chunks.glob("features_eval_*.npy")
    assert third not in (first, second)
    np.testing.assert_array_equal(test.cache[1], datasets(copy, feature_cache=False)["test"].features(1).numpy())


def test_an_unwritable_cache_falls_back_to_on_the_fly_features(copy, monkeypatch, capsys):
    from nb360.datamodules import fsd50k

    def read_only(path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(fsd50k, "atomic_path", read_only)
    test = datasets(copy)["test"]
    assert test.cache is None and test[0]["x"].shape == (1, 96, 101)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("cannot write the FSD50K feature cache" in line and "Permission denied" in line for line in err)


def test_missing_noise_and_missing_manifests_are_reported(copy):
    shutil.rmtree(copy / "data/noise_22050")
    with pytest.raises(DataError) as excinfo:
        datasets(copy)
    one_line_error(excinfo, "noise_22050")
    shutil.rmtree(copy / "data/chunks")
    with pytest.raises(DataError) as excinfo:
        datasets(copy)
    one_line_error(excinfo, "lbl_map.json")


def test_corrupt_archive_fails_to_unpack_and_verify_in_one_line(unpacked, tmp_path):
    blob = (unpacked / "audio.zip").read_bytes()
    for name, data in (("truncated", blob[: len(blob) // 2]), ("garbage", b"PK" + bytes(1000))):
        root = tmp_path / name
        root.mkdir()
        (root / "audio.zip").write_bytes(data)
        dm = FSD50KDataModule(root=str(root), source="local")
        for action in (dm.verify, dm.prepare_data):
            with pytest.raises(DataError) as excinfo:
                action()
            one_line_error(excinfo, "audio.zip")
        assert not (root / "data").exists()


def test_describe_file_checks_the_archive_contents(unpacked, tmp_path):
    dm = FSD50KDataModule(root=str(unpacked), source="local")
    summary = dm.describe_file(unpacked / "audio.zip")
    assert "200 labels" in summary and "15 chunk wavs" in summary and "1 noise wavs" in summary
    with zipfile.ZipFile(unpacked / "audio.zip") as source, zipfile.ZipFile(tmp_path / "audio.zip", "w") as target:
        for name in source.namelist():
            if name != "data/chunks/val.csv":
                target.writestr(name, source.read(name))
    with pytest.raises(DataError) as excinfo:
        dm.describe_file(tmp_path / "audio.zip")
    one_line_error(excinfo, "audio.zip", "val.csv")
