"""The nb360-tabular store: layout, values, read-only memory maps, atomic writes, checks on open."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from nb360.errors import DataError, UsageError
from nb360.spaces import get_space
from nb360.tabular import SCORE_RULES, RunRecord, ScoreRule, Store, StoreBuilder, score_rule
from nb360.tabular.schema import FORMAT

TSS = get_space("tss")


def run(index, seed, *, dataset="cifar100", hp="200", epochs=3, sets=("x-valid", "x-test"), base=0.0, **extra):
    """A run whose values encode (index, seed, epoch) so that every cell of the store can be checked."""
    e = np.arange(epochs, dtype=float)
    code = index + seed / 1000 + base
    return RunRecord(
        arch_index=index,
        dataset=dataset,
        hp=hp,
        seed=seed,
        epochs=epochs,
        train={"loss": code + e, "acc1": 50 + e, "acc5": 90 + e, "time": 2.0 + 0 * e},
        evals={s: {"loss": code + 10 * q + e, "acc1": 40 + 10 * q + e, "time": 0.5 + q + 0 * e} for q, s in enumerate(sets)},
        params=0.1 * (index + 1),
        flops=10.0 * (index + 1),
        latency=[0.01, 0.02] if index == 5 else [0.03],
        **extra,
    )


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    builder = StoreBuilder("tss")
    for index, seed in [(5, 777), (5, 888), (9, 888)]:
        builder.add(run(index, seed, arch_config={"channel": 16, "num_cells": 5, "arch_str": TSS.arch(index), "class_num": 100}))
    builder.add(run(5, 777, dataset="darcyflow", sets=("ori-test",)))
    return builder.write(tmp_path_factory.mktemp("store") / "bench.nb360", source={"file": "hand-made", "sha256": None})


def test_layout_meta_and_values(store_path):
    meta = json.loads((store_path / "meta.json").read_text())
    assert (meta["format"], meta["version"], meta["space"], meta["num_archs"]) == (FORMAT, 2, "nb201", 15625)
    assert meta["created_by"].startswith("nb360 ") and meta["source"] == {"file": "hand-made", "sha256": None}
    group = meta["groups"][0]
    assert (group["dataset"], group["hp"], group["epochs"], group["seeds"], group["rows"]) == (
        "cifar100",
        "200",
        3,
        [777, 888],
        2,
    )
    assert group["eval_sets"] == ["x-valid", "x-test"] and group["path"] == "cifar100/200"
    assert group["columns"] == {"train": ["loss", "acc1", "acc5", "time"], "eval": ["loss", "acc1", "time"]}  # no metric recorded
    assert group["score"] == {"column": "acc1", "name": "accuracy", "unit": "%", "lower_is_better": False}
    assert group["arch_config"] == {"channel": 16, "num_cells": 5, "arch_str": None, "class_num": 100} and group["arch_keys"] == [
        "arch_str"
    ]
    assert meta["groups"][1]["score"] == {"column": "loss", "name": "relative_l2", "unit": "fraction", "lower_is_better": True}
    archs = np.load(store_path / "archs.npy")
    assert archs.dtype.kind == "S" and np.char.decode(archs, "ascii").tolist() == list(TSS.archs)

    store = Store.open(store_path)
    g = store.groups[("cifar100", "200")]
    assert g.archs.tolist() == [5, 9] and g.archs.dtype == np.int32  # one row per evaluated architecture
    assert g.row_of.shape == (15625,) and g.row_of[[5, 9, 0]].tolist() == [0, 1, -1]
    loss = g.series("x-test", "loss")
    assert loss.shape == (3, 2, 2) and loss.dtype == np.float64  # (epochs, seeds, rows)
    assert loss[2, 1, 1] == 9 + 888 / 1000 + 10 + 2 and loss[0, 0, 0] == 5 + 777 / 1000 + 10
    assert math.isnan(loss[0, 0, 1])  # seed 777 of arch 9: never run
    assert g.evaluated.tolist() == [[True, False], [True, True]]
    assert g.column("params")[1, 1] == pytest.approx(1.0) and g.column("flops")[0, 0] == 60.0
    latency, lengths = g.column("latency"), g.column("latency_len")
    assert latency.shape == (2, 2, 2) and lengths[0, 0] == 2 and lengths[0, 1] == -1
    assert latency[0, 1, 1] == 0.03 and math.isnan(latency[1, 1, 1]) and latency[:, 0, 0].tolist() == [0.01, 0.02]
    assert store.verify()[0].startswith("ok cifar100/200: 2/15625 architectures")
    darcy = store.groups[("darcyflow", "200")]
    assert darcy.archs.tolist() == [5] and darcy.series("ori-test", "acc1").shape == (3, 1, 1)


def test_running_time_sums_are_stored_and_equal_hand_sums(tmp_path):
    record = run(3, 1, epochs=4)
    record.train["time"] = np.array([0.1, 0.2, 0.3, 0.7])
    record.evals["x-valid"]["time"] = np.array([1.0, math.nan, 2.0, 3.0])  # a missing epoch: NaN from there on
    builder = StoreBuilder("tss")
    builder.add(record)
    group = Store.open(builder.write(tmp_path / "t.nb360")).groups[("cifar100", "200")]
    by_hand = [0.0 + 0.1, 0.0 + 0.1 + 0.2, 0.0 + 0.1 + 0.2 + 0.3, 0.0 + 0.1 + 0.2 + 0.3 + 0.7]  # left to right
    assert group.series("train", "time_total")[:, 0, 0].tolist() == by_hand
    sums = group.series("x-valid", "time_total")[:, 0, 0]
    assert sums[0] == 1.0 and np.isnan(sums[1:]).all()
    assert group.series("x-test", "time_total")[:, 0, 0].tolist() == [1.5, 3.0, 4.5, 6.0]
    assert group.has("train", "time_total") and not group.has("train", "metric")


def test_a_group_stores_only_its_architectures(tmp_path):
    builder = StoreBuilder("tss")
    for index in (3, 700, 15624):
        builder.add(run(index, 777, epochs=200))
    path = builder.write(tmp_path / "small.nb360")
    group_bytes = sum(p.stat().st_size for p in (path / "cifar100" / "200").iterdir())
    assert group_bytes < 64 * 1024  # 3 rows x 200 epochs; every column spanning 15,625 architectures would be 270 MB
    assert sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) < 2 * 2**20  # with archs.npy (1.4 MB of strings)
    store = Store.open(path)
    group = store.groups[("cifar100", "200")]
    assert group.rows == 3 and group.series("train", "acc1").shape == (200, 1, 3)
    scattered = group.scatter(np.array([1.0, 2.0, 3.0]))
    assert scattered.shape == (15625,) and scattered[[3, 700, 15624]].tolist() == [1.0, 2.0, 3.0]
    assert np.isnan(scattered).sum() == 15622
    store.verify()


def test_a_complete_group_has_full_size_columns(tmp_path):
    builder = StoreBuilder("tss")
    for index in range(len(TSS)):
        builder.add(RunRecord(index, "cifar100", "12", 0, 1, train={"acc1": [float(index)]}, evals={"x-valid": {"acc1": [1.0]}}))
    group = Store.open(builder.write(tmp_path / "full.nb360")).groups[("cifar100", "12")]
    assert group.rows == 15625 and group.archs.tolist() == list(range(15625))
    column = group.directory / "train.acc1.npy"
    assert group.series("train", "acc1").shape == (1, 1, 15625) and column.stat().st_size == 128 + 15625 * 8  # as dense as ever
    values = group.series("train", "acc1")[0, 0]
    scattered = group.scatter(values)
    assert scattered.tolist() == values.tolist() and scattered.flags.writeable  # a copy the caller owns


def test_columns_are_read_only_memory_maps_opened_lazily(store_path):
    store = Store.open(store_path)
    g = store.groups[("cifar100", "200")]
    assert g._columns == {}  # nothing read before the first query
    acc = g.series("x-valid", "acc1")
    assert isinstance(acc.base, np.memmap) and not acc.flags.writeable
    with pytest.raises(ValueError):
        acc[0, 0, 0] = 1.0
    assert list(g._columns) == ["x-valid.acc1"]


def test_a_failing_build_leaves_no_store_and_keeps_an_old_one(tmp_path, monkeypatch):
    target = tmp_path / "s.nb360"
    builder = StoreBuilder("tss")
    builder.add(run(1, 777))
    calls = []

    def failing_save(path, arr):
        calls.append(path)
        if len(calls) == 5:
            raise OSError("disk full")
        return real_save(path, arr)

    real_save = np.save
    monkeypatch.setattr(np, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        builder.write(target)
    assert list(tmp_path.iterdir()) == []  # neither the store nor its temporary directory
    monkeypatch.setattr(np, "save", real_save)
    builder.write(target)
    with pytest.raises(UsageError, match="already exists"):
        builder.write(target)
    bad = StoreBuilder("tss")
    bad.add(run(1, 777, epochs=3))
    bad.add(run(2, 777, epochs=4))
    with pytest.raises(DataError, match="different epoch counts"):
        bad.write(target, overwrite=True)
    assert Store.open(target).groups[("cifar100", "200")].epochs == 3  # the old store is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.nb360"]


def test_open_checks_format_version_and_architecture_order(store_path, tmp_path):
    with pytest.raises(DataError, match="no meta.json"):
        Store.open(tmp_path)
    copy = tmp_path / "copy.nb360"
    shutil.copytree(store_path, copy)
    archs = np.load(copy / "archs.npy")
    archs[[0, 1]] = archs[[1, 0]]
    np.save(copy / "archs.npy", archs)
    with pytest.raises(DataError, match="index order"):
        Store.open(copy)
    meta = json.loads((copy / "meta.json").read_text())
    meta["version"] = 3
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="version 3 is newer than this nb360 reads"):
        Store.open(copy)
    meta["version"] = 1  # the unreleased dense layout: not read, not misread
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="version 1 is an unreleased earlier layout .* rebuild the store"):
        Store.open(copy)
    meta["format"] = "other"
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="not an nb360-tabular store"):
        Store.open(copy)


def test_verify_catches_a_truncated_column_and_unordered_rows(store_path, tmp_path):
    copy = tmp_path / "copy.nb360"
    shutil.copytree(store_path, copy)
    np.save(copy / "cifar100" / "200" / "train.loss.npy", np.zeros((2, 2, 2)))
    with pytest.raises(DataError, match=r"train.loss.npy: shape \(2, 2, 2\) float64, expected \(3, 2, 2\)"):
        Store.open(copy).verify()
    shutil.copy(store_path / "cifar100" / "200" / "train.loss.npy", copy / "cifar100" / "200" / "train.loss.npy")
    np.save(copy / "cifar100" / "200" / "archs.npy", np.array([9, 5], dtype=np.int32))
    with pytest.raises(DataError, match="archs.npy: not ascending"):
        Store.open(copy).verify()


def test_score_rules_are_a_table_with_overrides(tmp_path):
    assert score_rule("darcyflow") == ScoreRule("loss", "relative_l2", "fraction", True)
    assert score_rule("ninapro").column == "acc1" and not SCORE_RULES["cifar10-valid"].lower_is_better
    with pytest.raises(UsageError, match="no score rule for dataset 'psicov'"):
        score_rule("psicov")
    builder = StoreBuilder("tss", score={"psicov": {"column": "loss", "name": "mae8", "unit": "", "lower_is_better": True}})
    builder.add(run(3, 0, dataset="psicov", sets=("ori-test",)))
    meta = json.loads((builder.write(tmp_path / "p.nb360") / "meta.json").read_text())
    assert meta["groups"][0]["score"]["name"] == "mae8"
    with pytest.raises(UsageError, match="a score column is 'acc1', 'loss' or 'metric', not 'acc5'"):
        ScoreRule("acc5", "top-5", "%", False)


def test_the_optional_metric_column(tmp_path):
    rule = ScoreRule("metric", "mae8", "", True)
    builder = StoreBuilder("tss", score={"psicov": rule})
    for index in (2, 4):
        record = run(index, 0, dataset="psicov", sets=("x-valid", "ori-test"))
        record.train["metric"] = np.array([9.0, 8.0, 7.0]) + index
        record.evals["ori-test"]["metric"] = np.array([5.0, 4.0, 3.0]) + index  # x-valid has none: NaN there
        builder.add(record)
    builder.add(run(1, 0, sets=("x-valid",)))  # cifar100: no metric anywhere
    store = Store.open(builder.write(tmp_path / "m.nb360"))
    group = store.groups[("psicov", "200")]
    assert group.train_columns == ("loss", "acc1", "acc5", "time", "metric") and group.eval_columns == (
        "loss",
        "acc1",
        "time",
        "metric",
    )
    assert group.score == rule and group.series("train", "metric")[:, 0, 1].tolist() == [13.0, 12.0, 11.0]
    assert group.series("ori-test", "metric")[2, 0].tolist() == [5.0, 7.0] and np.isnan(group.series("x-valid", "metric")).all()
    assert (group.directory / "ori-test.metric.npy").is_file()
    plain = store.groups[("cifar100", "200")]
    assert not plain.has("x-valid", "metric") and not (plain.directory / "x-valid.metric.npy").exists()
    assert (
        plain.series("x-valid", "metric").shape == (3, 1, 1) and np.isnan(plain.series("x-valid", "metric")).all()
    )  # reads as NaN
    store.verify()
    with pytest.raises(UsageError, match="the score of psicov is the 'metric' column, but no run on psicov/200 records it"):
        no_metric = StoreBuilder("tss", score={"psicov": rule})
        no_metric.add(run(1, 0, dataset="psicov"))
        no_metric.write(tmp_path / "x.nb360")


def test_set_names_are_made_safe_for_file_names(tmp_path):
    builder = StoreBuilder("tss", score={"a/b": SCORE_RULES["cifar10"]})
    builder.add(run(0, 1, dataset="a/b", hp="1 2", sets=("x/valid", "x_valid", "Params")))
    store = Store.open(builder.write(tmp_path / "s.nb360", overwrite=True))
    (group,) = store.groups.values()
    assert group.files == {"x/valid": "x_valid", "x_valid": "x_valid_1", "Params": "Params_1"}
    assert group.directory.relative_to(store.path).as_posix() == "a_b/1_2"
    assert group.series("x/valid", "acc1")[1, 0, 0] == 41.0 and group.series("x_valid", "acc1")[1, 0, 0] == 51.0
    assert group.series("Params", "acc1")[1, 0, 0] == 61.0 and group.series("train", "acc1")[1, 0, 0] == 51.0
    with pytest.raises(UsageError, match="cannot be called 'train'"):
        StoreBuilder("tss").add(run(0, 1, sets=("train",)))


def test_recorded_nans_get_a_mask(tmp_path):
    record = run(0, 1)
    record.train["loss"][1] = math.nan
    record.nan_values = {"train.loss": np.array([False, True, False])}
    builder = StoreBuilder("tss")
    builder.add(record)
    group = Store.open(builder.write(tmp_path / "n.nb360")).groups[("cifar100", "200")]
    assert group.nan_values == ["train.loss"]
    assert group.recorded_nan("train", "loss")[:, 0, 0].tolist() == [False, True, False]
    assert group.recorded_nan("train", "acc1") is None


def test_builder_rejects_bad_runs():
    builder = StoreBuilder("tss")
    builder.add(run(0, 1))
    with pytest.raises(UsageError, match="already has a run"):
        builder.add(run(0, 1))
    with pytest.raises(UsageError, match="out of range"):
        builder.add(run(15625, 1))
    bad = run(1, 1)
    bad.train["top1"] = bad.train.pop("acc1")
    with pytest.raises(UsageError, match=r"unknown columns \['train.top1'\]"):
        builder.add(bad)


def test_tabular_code_imports_no_torch():
    code = "import sys, nb360.tabular, nb360.tabular.download; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
