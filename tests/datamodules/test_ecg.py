"""ECG (PhysioNet 2017): record splits, z-score, label-dependent windows, batch keys and the record vote."""

from __future__ import annotations

import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from nb360.datamodules.ecg import ECGDataModule, label_strides, record_split
from nb360.safe_pickle import load_pickle, loads_pickle
from nb360.errors import DataError
from nb360.metrics import OneMinusVotedF1

N_FIXTURE = 8
CODE = {"N": 0, "A": 1, "O": 2, "~": 3}


# ---------------------------------------------------------------- independent reference
def shuffle_split(n: int, test_size: float) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's train_test_split(test_size, random_state=0), i.e. ShuffleSplit's first split."""
    permutation = np.random.RandomState(0).permutation(n)
    n_test = int(np.ceil(test_size * n))
    return permutation[n_test:], permutation[:n_test]


def reference_parts(n: int, split: str) -> dict[str, np.ndarray]:
    """Recording indices of read_data_physionet_4_with_val (search) and read_data_physionet_4 (final)."""
    if split == "final":
        train, test = shuffle_split(n, 0.1)
        return {"train": train, "test": test}
    train, rest = shuffle_split(n, 0.2)
    val_pos, _ = shuffle_split(len(rest), 0.5)  # X_val is the *train* output of the second split
    return {"train": train, "val": rest[val_pos]}


def reference_slide_and_cut(signals: list, codes: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, ...]:
    """The reference loop: z-scored signals in split order, stride by label, pid = position in the part."""
    strides = {0: stride, 1: stride // 6, 2: stride // 2, 3: stride // 20}
    xs, ys, pids = [], [], []
    for pid, (signal, code) in enumerate(zip(signals, codes)):
        for start in range(0, len(signal) - window, strides[code]):
            xs.append(signal[start : start + window])
            ys.append(code)
            pids.append(pid)
    return np.array(xs).reshape(-1, window), np.array(ys, dtype=np.int64), np.array(pids, dtype=np.int64)


def read_fixture(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    payload = load_pickle(path)
    return list(payload["data"]), np.array([CODE[name] for name in payload["label"]])


def zscore(signal: np.ndarray) -> np.ndarray:
    return (signal - np.mean(signal)) / np.std(signal)


def everything(dataset) -> dict[str, torch.Tensor]:
    return dataset.__getitems__(list(range(len(dataset))))


def datamodule(root: Path, split: str, **kwargs) -> ECGDataModule:
    dm = ECGDataModule(root=str(root), split=split, source="local", **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def write_pickle(path: Path, data: list, labels: list) -> Path:
    records = np.empty(len(data), dtype=object)
    for i, signal in enumerate(data):
        records[i] = signal
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"data": records, "label": np.array(labels)}))
    return path


@pytest.fixture(scope="module")
def ecg_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ecg")
    ECGDataModule.write_fixture(root, N_FIXTURE, seed=0)
    return root


# ---------------------------------------------------------------- fixture format
def test_fixture_has_the_format_of_challenge2017_pkl(ecg_root):
    path = ecg_root / "challenge2017.pkl"
    assert path.stat().st_size < 1_000_000
    payload = load_pickle(path)
    assert set(payload) == {"data", "label"}
    data, label = payload["data"], payload["label"]
    assert data.dtype == object and data.shape == (5 * N_FIXTURE,)
    assert all(r.dtype == np.int16 and r.ndim == 1 and 1500 <= len(r) <= 4000 for r in data)
    assert label.dtype.kind == "U" and label.shape == data.shape and set(label) == set("NAO~")
    codes = np.array([CODE[name] for name in label])
    for split, part in (("search", "val"), ("final", "test")):
        assert set(codes[reference_parts(len(codes), split)[part]]) == {0, 1, 2, 3}, (split, part)


def test_describe_file_summarises_the_recordings(ecg_root):
    signals, codes = read_fixture(ecg_root / "challenge2017.pkl")
    summary = ECGDataModule(root=str(ecg_root)).describe_file(ecg_root / "challenge2017.pkl")
    counts = np.bincount(codes, minlength=4)
    assert f"{len(signals)} recordings (int16, lengths {min(map(len, signals))}..{max(map(len, signals))})" in summary
    assert f"labels N {counts[0]}, A {counts[1]}, O {counts[2]}, ~ {counts[3]}" in summary


# ---------------------------------------------------------------- protocol
def test_record_split_at_the_real_record_count():
    """8,528 recordings: ceil(0.2 n) = 1706 held out and halved (853 val); ceil(0.1 n) = 853 final test."""
    expected = {"search": reference_parts(8528, "search"), "final": reference_parts(8528, "final")}
    sizes = {split: {part: len(records) for part, records in record_split(8528, split).items()} for split in expected}
    assert sizes == {"search": {"train": 6822, "val": 853}, "final": {"train": 7675, "test": 853}}
    for split, parts in expected.items():
        got = record_split(8528, split)
        for part, records in parts.items():
            np.testing.assert_array_equal(got[part], records)
    assert not set(expected["search"]["train"]) & set(expected["search"]["val"])
    assert set(expected["final"]["test"]) - set(expected["search"]["val"])  # not the 80/10/10 held-out records


def test_label_strides_at_the_reference_setting():
    assert label_strides(500).tolist() == [500, 83, 250, 25]
    assert label_strides(4000).tolist() == [4000, 666, 2000, 200]


@pytest.mark.parametrize("split", ["search", "final"])
@pytest.mark.parametrize("options", [{}, ECGDataModule.fixture_args(N_FIXTURE)], ids=["reference", "fixture_args"])
def test_windows_labels_and_keys_follow_the_reference(ecg_root, split, options):
    window, stride = options.get("window_size", 1000), options.get("stride", 500)
    dm = datamodule(ecg_root, split, **options)
    signals, codes = read_fixture(ecg_root / "challenge2017.pkl")
    parts = reference_parts(len(codes), split)
    assert set(dm.datasets) == set(parts)
    for part, records in parts.items():
        x, y, pid = reference_slide_and_cut([zscore(signals[i]) for i in records], codes[records], window, stride)
        got = everything(dm.datasets[part])
        assert got["x"].shape == (len(y), 1, window) and got["x"].dtype == torch.float32
        np.testing.assert_array_equal(got["x"][:, 0].numpy(), x.astype(np.float32))
        assert got["y"].dtype == torch.int64 and got["record"].dtype == torch.int64 and got["window"].dtype == torch.int64
        np.testing.assert_array_equal(got["y"].numpy(), y)
        np.testing.assert_array_equal(got["record"].numpy(), records[pid])
        np.testing.assert_array_equal(got["window"].numpy(), np.arange(len(y)))
        assert Counter(got["y"].tolist()) == Counter(y.tolist())
        single = dm.datasets[part][len(y) - 1]
        assert single["x"].shape == (1, window) and int(single["window"]) == len(y) - 1


def test_window_counts_at_the_edges_of_range(tmp_path):
    """Starts run over range(0, len - 1000, stride): a recording of <= 1000 samples has none."""
    cases = [  # (length, label, windows)
        (1000, "N", 0), (1001, "N", 1), (1500, "N", 1), (1501, "N", 2), (2001, "N", 3),
        (1083, "A", 1), (1084, "A", 2), (1250, "O", 1), (1251, "O", 2),
        (999, "~", 0), (1050, "~", 2), (1051, "~", 3), (1100, "~", 4),
    ]
    rng = np.random.default_rng(1)
    padding = [(3000, "N", 4)] * 7
    rows = cases + padding
    signals = [rng.integers(-50, 50, n).astype(np.int16) for n, _, _ in rows]
    write_pickle(tmp_path / "challenge2017.pkl", signals, [label for _, label, _ in rows])
    dm = datamodule(tmp_path, "final")
    records = torch.cat([dm.datasets[p].tensors["record"] for p in ("train", "test")]).tolist()
    per_record = Counter(records)
    assert [per_record.get(i, 0) for i in range(len(rows))] == [count for _, _, count in rows]


def test_records_are_contiguous_runs_of_one_label(ecg_root):
    dm = datamodule(ecg_root, "search")
    for part, dataset in dm.datasets.items():
        got = everything(dataset)
        record, y = got["record"].numpy(), got["y"].numpy()
        boundaries = np.flatnonzero(np.diff(record)) + 1
        runs = np.split(record, boundaries)
        assert len({int(r[0]) for r in runs}) == len(runs), part  # each recording appears once, in one run
        assert all(len(set(run)) == 1 for run in np.split(y, boundaries)), part
    train, val = (set(dm.datasets[p].tensors["record"].tolist()) for p in ("train", "val"))
    assert not train & val


def test_train_batches_are_shuffled_dicts(ecg_root):
    dm = datamodule(ecg_root, "final", batch_size=32)
    loader = dm.train_dataloader()
    seen = []
    for epoch in (0, 1):
        loader.sampler.set_epoch(epoch)
        batches = list(loader)
        assert set(batches[0]) == {"x", "y", "record", "window"}
        assert batches[0]["x"].shape == (32, 1, 1000)
        seen.append(torch.cat([b["window"] for b in batches]))
    assert sorted(seen[0].tolist()) == list(range(len(dm.datasets["train"])))
    assert not torch.equal(seen[0], seen[1])


# ---------------------------------------------------------------- metric over the loader
def fake_logits(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Alternating predictions within a recording (ties at even window counts), varying across recordings."""
    pred = (3 - batch["window"] % 2 - 2 * (batch["record"] % 2)) % 4
    return torch.nn.functional.one_hot(pred, 4).float() + 0.01 * batch["x"][:, 0, :4]


def reference_score(pred: np.ndarray, truth: np.ndarray, pid: np.ndarray) -> tuple[float, int]:
    """evaluate_full_dataset_ECG: Counter vote per record, per-class F1 (0 when undefined), mean of the 4."""
    voted_pred, voted_true, ties = [], [], 0
    for p in np.unique(pid):
        counts = Counter(pred[pid == p].tolist()).most_common()
        ties += len(counts) > 1 and counts[0][1] == counts[1][1] and counts[0][0] > counts[1][0]
        voted_pred.append(counts[0][0])
        voted_true.append(Counter(truth[pid == p].tolist()).most_common(1)[0][0])
    voted_pred, voted_true = np.array(voted_pred), np.array(voted_true)
    f1 = []
    for c in range(4):
        tp = np.sum((voted_pred == c) & (voted_true == c))
        fp = np.sum((voted_pred == c) & (voted_true != c))
        fn = np.sum((voted_pred != c) & (voted_true == c))
        f1.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return 1 - float(np.mean(f1)), ties


def test_vote_metric_over_the_val_loader_matches_the_reference(ecg_root):
    dm = datamodule(ecg_root, "search", eval_batch_size=16)
    batches = list(dm.val_dataloader())
    assert len(batches) > 2
    preds, truth, pid = [], [], []
    metric = OneMinusVotedF1(num_classes=4)
    for batch in batches:
        logits = fake_logits(batch)
        metric.update(logits, batch["y"], record=batch["record"], window=batch["window"])
        preds.append(logits.argmax(1))
        truth.append(batch["y"])
        pid.append(batch["record"])
    expected, ties = reference_score(*(torch.cat(t).numpy() for t in (preds, truth, pid)))
    assert ties > 0  # the first-seen rule is exercised, not just the smallest label
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-6)
    shuffled = OneMinusVotedF1(num_classes=4)  # batches in another order (as under DDP): the window key restores it
    for batch in reversed(batches):
        shuffled.update(fake_logits(batch), batch["y"], record=batch["record"], window=batch["window"])
    assert float(shuffled.compute()) == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------- errors
class _Exploit:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def _corruptions(good: bytes, tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    payload = loads_pickle(good)

    def dump(data=None, label=None, **extra) -> bytes:
        data = payload["data"] if data is None else data
        label = payload["label"] if label is None else label
        return pickle.dumps({"data": data, "label": label, **extra})

    def replaced(index: int, value) -> np.ndarray:
        data = payload["data"].copy()
        data[index] = value
        return data

    return {
        "truncated": (good[: len(good) // 2], "truncated or corrupt"),
        "malicious": (dump(evil=_Exploit(tmp_path / "pwned")), "refuses to load"),
        "not a dict": (pickle.dumps([1, 2, 3]), "expected a pickled dict"),
        "no label": (pickle.dumps({"data": payload["data"]}), "expected a pickled dict"),
        "unknown label": (dump(label=np.array(["N", "X", *payload["label"][2:]])), "unknown label 'X' of recording 1"),
        "numeric labels": (dump(label=np.arange(len(payload["label"]))), "'label' must be a 1-D array"),
        "count mismatch": (dump(label=payload["label"][:-1]), "recordings but"),
        "2-D recording": (dump(data=replaced(3, np.zeros((2, 1500), np.int16))), "recording 3 must be a 1-D"),
        "text recording": (dump(data=replaced(4, np.array(["a"] * 1500))), "recording 4 must be a 1-D"),
        "ragged recording": (dump(data=replaced(6, [[1, 2], [3]])), "recording 6 is not an array"),
        "constant recording": (dump(data=replaced(5, np.full(3000, 7, np.int16))), "recording 5 is constant"),
        "one recording": (dump(data=payload["data"][:1], label=payload["label"][:1]), "train part of the final split has no"),
    }


@pytest.mark.parametrize(
    "case",
    ["truncated", "malicious", "not a dict", "no label", "unknown label", "numeric labels", "count mismatch",
     "2-D recording", "text recording", "ragged recording", "constant recording", "one recording"],
)
def test_bad_files_give_one_line_errors_naming_the_file(ecg_root, tmp_path, case):
    content, message = _corruptions((ecg_root / "challenge2017.pkl").read_bytes(), tmp_path)[case]
    root = tmp_path / "bad"
    root.mkdir()
    (root / "challenge2017.pkl").write_bytes(content)
    dm = ECGDataModule(root=str(root), split="final", source="local")
    with pytest.raises(DataError, match=message) as err:
        dm.setup("fit")
    assert str(root / "challenge2017.pkl") in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "pwned").exists()
    if case in ("truncated", "malicious", "unknown label", "2-D recording"):
        with pytest.raises(DataError, match=message):
            dm.describe_file(root / "challenge2017.pkl")


def test_object_labels_and_list_records_are_accepted(tmp_path, ecg_root):
    """The real file's labels come from pandas (an object array of str); recordings may be any 1-D numbers."""
    signals, codes = read_fixture(ecg_root / "challenge2017.pkl")
    names = np.array(["NAO~"[c] for c in codes], dtype=object)
    (tmp_path / "challenge2017.pkl").write_bytes(pickle.dumps({"data": [s.tolist() for s in signals], "label": names}))
    got = everything(datamodule(tmp_path, "final").datasets["test"])
    expected = everything(datamodule(ecg_root, "final").datasets["test"])
    for key in expected:
        assert torch.equal(got[key], expected[key]), key


def test_too_small_a_stride_is_refused(ecg_root):
    with pytest.raises(DataError, match="stride >= 20"):
        datamodule(ecg_root, "final", stride=19)
