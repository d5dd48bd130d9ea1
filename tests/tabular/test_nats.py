"""NATS-Bench files: restricted loading, import, exact export in both layouts, nats_bench compatibility, download."""

from __future__ import annotations

import bz2
import collections
import json
import math
import os
import pickle

import numpy as np
import pytest

from nb360.errors import DataError
from nb360.spaces import get_space
from nb360.tabular import RunRecord, ScoreRule, Store, StoreBuilder, create
from nb360.tabular.fixture import fixture_dict, write_fixture
from nb360.tabular.nats import import_nats, load_nats_pickle, save_nats_pickle
from nb360.tabular.nats_export import export_nats

ARCHS = list(get_space("tss").archs)


def results_count(name, seed, epochs, k, sets, *, partial_last=(), acc5=True, latency=(0.002,)):
    """A ResultsCount state written out by hand (independent of nb360's writer); values encode (k, epoch, set)."""
    state = {
        "name": name,
        "train_acc1es": {e: 60.0 + k + e for e in range(epochs)},
        "train_acc5es": {e: 95.0 - k for e in range(epochs)} if acc5 else None,
        "train_losses": {e: 1.0 / (k + e + 1) for e in range(epochs)},
        "train_times": collections.OrderedDict((e, 3.0 + 0.5 * e) for e in range(epochs)),
        "arch_config": {"channel": 16, "num_cells": 5, "arch_str": None, "class_num": 100},
        "params": np.float64(0.5 + 0.1 * k),  # numpy scalars as in the real files
        "flop": 70.0 + k,
        "seed": f"{seed:04d}",
        "epochs": epochs,
        "latency": None if latency is None else [np.float64(x) for x in latency],
        "eval_names": list(sets),
        "eval_acc1es": {},
        "eval_times": {},
        "eval_losses": {},
        "net_state_dict": None,
    }
    for q, s in enumerate(sets):
        steps = [epochs - 1] if s in partial_last else range(epochs)  # old NB201 runs: ori-test at the last epoch only
        for e in steps:
            state["eval_acc1es"][f"{s}@{e}"] = 30.0 + 10 * q + k + e + seed / 1000
            state["eval_losses"][f"{s}@{e}"] = 2.0 - 0.1 * e + q
        for e in range(epochs):
            state["eval_times"][f"{s}@{e}"] = 0.25 * (q + 1)
    return state


def benchmark_dict():
    """Two hps, two datasets, uneven seeds, a partial eval dict, a None field, a recorded NaN."""
    arch2infos = {}
    for k, index in enumerate((0, 7, 123)):
        hp200 = {"all_results": {}, "dataset_seed": {}}
        seeds = (777, 888) if index != 123 else (888,)
        for seed in seeds:
            rc = results_count("cifar10-valid", seed, 3, k, ("x-valid", "ori-test"), partial_last=("ori-test",), acc5=seed == 777)
            rc["arch_config"]["arch_str"] = ARCHS[index]
            hp200["all_results"][("cifar10-valid", seed)] = rc
        hp200["dataset_seed"]["cifar10-valid"] = list(seeds)
        darcy = results_count("darcyflow", 777, 3, k, ("ori-test",), latency=None)
        darcy["arch_config"]["arch_str"] = ARCHS[index]
        if index == 7:
            darcy["eval_losses"]["ori-test@1"] = float("nan")  # a diverged epoch, recorded as NaN
        hp200["all_results"][("darcyflow", 777)] = darcy
        hp200["dataset_seed"]["darcyflow"] = [777]
        hp12 = {"all_results": {("cifar10-valid", 111): results_count("cifar10-valid", 111, 2, k, ("x-valid", "ori-test"))}}
        hp12["all_results"][("cifar10-valid", 111)]["arch_config"]["arch_str"] = ARCHS[index]
        hp12["dataset_seed"] = {"cifar10-valid": [111]}
        states = collections.OrderedDict()
        for hp, state in (("12", hp12), ("200", hp200)):
            states[hp] = {"arch_index": index, "arch_str": ARCHS[index], **state, "clear_net_done": hp == "200"}
        arch2infos[index] = states
    return {"meta_archs": ARCHS, "total_archs": len(ARCHS), "arch2infos": arch2infos, "evaluated_indexes": {0, 7, 123}}


def equal_with_nans(a, b):
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(equal_with_nans(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(equal_with_nans(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


@pytest.fixture(scope="module")
def nats_file(tmp_path_factory):
    return save_nats_pickle(benchmark_dict(), tmp_path_factory.mktemp("nats") / "NATS-tss-v1_0-hand0.pickle.pbz2")


@pytest.fixture(scope="module")
def store(nats_file, tmp_path_factory):
    return Store.open(import_nats(nats_file, tmp_path_factory.mktemp("st") / "hand.nb360", progress=False))


def test_import_reads_every_field(store):
    assert sorted(store.groups) == [("cifar10-valid", "12"), ("cifar10-valid", "200"), ("darcyflow", "200")]
    g = store.groups[("cifar10-valid", "200")]
    assert g.seeds == [777, 888] and g.eval_sets == ["x-valid", "ori-test"] and g.epochs == 3
    assert g.archs.tolist() == [0, 7, 123]  # rows
    row = {index: int(g.row_of[index]) for index in (0, 7, 123)}
    assert g.evaluated[:, row[123]].tolist() == [False, True] and g.evaluated[:, row[7]].tolist() == [True, True]
    acc = g.series("ori-test", "acc1")
    assert math.isnan(acc[0, 0, row[7]]) and acc[2, 0, row[7]] == 30.0 + 10 + 1 + 2 + 0.777  # only the last epoch is stored
    assert g.series("x-valid", "acc1")[1, 1, row[123]] == 30.0 + 2 + 1 + 0.888
    assert g.series("train", "time")[:, 0, row[0]].tolist() == [3.0, 3.5, 4.0]
    assert g.series("train", "time_total")[:, 0, row[0]].tolist() == [3.0, 6.5, 10.5]
    assert (
        np.isnan(g.series("train", "acc5")[:, 1, row[0]]).all() and g.series("train", "acc5")[0, 0, row[0]] == 95.0
    )  # None for 888
    assert g.column("params")[1, row[7]] == pytest.approx(0.6) and g.column("flops")[0, row[0]] == 70.0
    assert g.nats["seed_labels"] == {"777": "0777", "888": "0888"} and g.nats["clear_net_done"] is True
    assert not g.has("train", "metric") and "metric" not in g.eval_columns  # NATS files record no task metric
    assert store.groups[("cifar10-valid", "12")].nats["clear_net_done"] is False
    darcy = store.groups[("darcyflow", "200")]
    assert darcy.score.name == "relative_l2" and darcy.column("latency_len")[0, 0] == -1
    assert darcy.nan_values == ["ori-test.loss"] and darcy.recorded_nan("ori-test", "loss")[:, 0, 1].tolist() == [
        False,
        True,
        False,
    ]
    assert store.meta["source"]["file"] == "NATS-tss-v1_0-hand0.pickle.pbz2" and len(store.meta["source"]["sha256"]) == 64


@pytest.mark.parametrize("fast_mode", [False, True])
def test_round_trip_is_exact(store, nats_file, tmp_path, fast_mode):
    """NATS file -> store -> NATS file (or fast-mode directory) gives back equal dicts (weights are None both times)."""
    original = benchmark_dict()
    out = export_nats(store, tmp_path / ("x.pickle.pbz2" if not fast_mode else "x-simple"), fast_mode=fast_mode, progress=False)
    if not fast_mode:
        assert equal_with_nans(load_nats_pickle(out), original)
    else:
        meta = load_nats_pickle(out / "meta.pickle.pbz2")
        assert meta == {"meta_archs": ARCHS, "total_archs": 15625, "arch2infos": None, "evaluated_indexes": set()}
        assert sorted(p.name for p in out.iterdir()) == [
            "000000.pickle.pbz2",
            "000007.pickle.pbz2",
            "000123.pickle.pbz2",
            "meta.pickle.pbz2",
        ]
        for index, states in original["arch2infos"].items():
            assert equal_with_nans(load_nats_pickle(out / f"{index:06d}.pickle.pbz2"), states)
        again = import_nats(out, tmp_path / "again.nb360", progress=False)  # and the directory imports back
        assert equal_with_nans(load_nats_pickle(export_nats(again, tmp_path / "y.pickle.pbz2", progress=False)), original)


def test_export_writes_the_nats_fields_only(tmp_path):
    """A store with the task metric (as a precompute writes it) exports what NATS has: no metric, no running sums."""
    builder = StoreBuilder("tss", score={"ecg": ScoreRule("metric", "1 - F1", "", True)})
    for index in (1, 2):
        builder.add(
            RunRecord(
                index, "ecg", "12", 0, 2,
                train={"loss": [1.0, 0.5], "acc1": [60.0, 70.0], "metric": [0.5, 0.4], "time": [2.0, 2.5]},
                evals={"ori-test": {"loss": [0.9, 0.8], "acc1": [55.0, 65.0], "metric": [0.4, 0.3 + index], "time": [0.5, 0.5]}},
                params=0.2, flops=20.0, latency=[0.003], seed_label="0000",
            )
        )  # fmt: skip
    path = builder.write(tmp_path / "ecg.nb360")
    data = load_nats_pickle(export_nats(path, tmp_path / "NATS-tss-v1_0-ecg00.pickle.pbz2", progress=False))
    assert sorted(data["arch2infos"]) == [1, 2] and data["evaluated_indexes"] == {1, 2}
    rc = data["arch2infos"][2]["12"]["all_results"][("ecg", 0)]
    assert rc["train_acc1es"] == {0: 60.0, 1: 70.0} and rc["train_times"] == {0: 2.0, 1: 2.5} and rc["train_acc5es"] is None
    assert rc["eval_acc1es"] == {"ori-test@0": 55.0, "ori-test@1": 65.0} and rc["eval_times"] == {
        "ori-test@0": 0.5,
        "ori-test@1": 0.5,
    }
    assert "metric" not in repr(rc) and "total" not in repr(rc)
    back = Store.open(
        import_nats(
            tmp_path / "NATS-tss-v1_0-ecg00.pickle.pbz2", score={"ecg": ScoreRule("acc1", "acc", "%", False)}, progress=False
        )
    )
    group, original = back.groups[("ecg", "12")], Store.open(path).groups[("ecg", "12")]
    for set_name, column in [("train", "loss"), ("train", "time_total"), ("ori-test", "acc1"), ("ori-test", "time")]:
        assert np.array_equal(group.series(set_name, column), original.series(set_name, column))
    assert not group.has("ori-test", "metric") and original.has("ori-test", "metric")


def test_fixture_writer_and_its_directory_variant(tmp_path):
    file = write_fixture(tmp_path)
    directory = write_fixture(tmp_path, fast_mode=True)
    assert file.name == "NATS-tss-v1_0-test0.pickle.pbz2" and directory.name == "NATS-tss-v1_0-test0-simple"
    data = load_nats_pickle(file)
    assert data == fixture_dict() and data["evaluated_indexes"] == {0, 1, 2}
    state = data["arch2infos"][1]["12"]
    assert state["dataset_seed"] == {"ninapro": [777]} and set(state) == {
        "arch_index",
        "arch_str",
        "all_results",
        "dataset_seed",
        "clear_net_done",
    }
    rc = state["all_results"][("ninapro", 777)]
    assert list(rc) == [
        "name", "train_acc1es", "train_acc5es", "train_losses", "train_times", "arch_config", "params", "flop", "seed",
        "epochs", "latency", "eval_names", "eval_acc1es", "eval_times", "eval_losses", "net_state_dict",
    ]  # fmt: skip
    assert rc["eval_acc1es"] == {"ori-test@0": 50.0, "ori-test@1": 51.0} and rc["train_times"] == {0: 3.0, 1: 3.25}
    assert load_nats_pickle(directory / "000001.pickle.pbz2") == data["arch2infos"][1]
    bench = create(directory)
    assert bench.get_more_info(1, "ninapro", "12")["ori-test-accuracy"] == 51.0


class Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_the_restricted_unpickler_refuses_code_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    exploit = Exploit()
    exploit.marker = marker
    path = tmp_path / "evil.pickle.pbz2"
    path.write_bytes(bz2.compress(pickle.dumps({"meta_archs": [exploit]}, protocol=4)))
    with pytest.raises(DataError, match=r"pickled (posix|os|nt)\.system, which nb360 refuses") as err:
        load_nats_pickle(path)
    assert not marker.exists() and "\n" not in str(err.value)


def test_truncated_or_corrupt_files_are_one_line_errors(nats_file, tmp_path):
    data = nats_file.read_bytes()
    cut = tmp_path / "cut.pickle.pbz2"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as err:
        load_nats_pickle(cut)
    assert "\n" not in str(err.value)
    junk = tmp_path / "junk.pickle.pbz2"
    junk.write_bytes(b"not bz2 at all")
    with pytest.raises(DataError, match="truncated or corrupt"):
        import_nats(junk, progress=False)
    inner = tmp_path / "inner.pickle.pbz2"
    inner.write_bytes(bz2.compress(pickle.dumps(benchmark_dict(), protocol=4)[:-100]))
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_nats_pickle(inner)


def test_an_unknown_architecture_order_is_rejected(tmp_path):
    data = fixture_dict()
    data["meta_archs"] = data["meta_archs"][::-1]
    path = save_nats_pickle(data, tmp_path / "NATS-tss-v1_0-rev.pickle.pbz2")
    with pytest.raises(DataError, match="index order of space nb201"):
        import_nats(path, progress=False)


def test_create_converts_a_nats_file_once(tmp_path):
    file = write_fixture(tmp_path, hp="200")
    bench = create(file)
    store = tmp_path / "NATS-tss-v1_0-test0.nb360"
    assert bench.store.path == store
    stamp = (store / "meta.json").stat().st_mtime_ns
    create(file)
    assert (store / "meta.json").stat().st_mtime_ns == stamp  # reused, not converted again
    meta = json.loads((store / "meta.json").read_text())
    meta["version"] = 1
    (store / "meta.json").write_text(json.dumps(meta))
    assert create(file).get_more_info(2, "ninapro", "200")["ori-test-accuracy"] == 61.0  # an old layout is converted again
    assert json.loads((store / "meta.json").read_text())["version"] == 2


def test_nats_bench_reads_our_exports(store, tmp_path):
    nats_bench = pytest.importorskip("nats_bench")
    ours = create(store.path)
    file = export_nats(store, tmp_path / "NATS-tss-v1_0-ours.pickle.pbz2", progress=False)
    directory = export_nats(store, tmp_path / "NATS-tss-v1_0-ours-simple", fast_mode=True, progress=False)
    for api in (
        nats_bench.create(str(file), "tss", fast_mode=False, verbose=False),
        nats_bench.create(str(directory), "tss", fast_mode=True, verbose=False),
    ):
        for index in (0, 7, 123):
            for iepoch in (None, 0):
                theirs = api.get_more_info(index, "cifar10-valid", iepoch=iepoch, hp="200", is_random=False)
                mine = ours.get_more_info(index, "cifar10-valid", "200", iepoch=iepoch)
                assert theirs["valid-accuracy"] == pytest.approx(mine["x-valid-accuracy"], rel=1e-12)
                assert theirs["train-all-time"] == pytest.approx(mine["train-all-time"], rel=1e-12)
                assert theirs["valid-per-time"] == pytest.approx(mine["x-valid-per-time"], rel=1e-12)
                if iepoch is None:  # ori-test is stored for the last epoch only
                    assert theirs["test-accuracy"] == pytest.approx(mine["ori-test-accuracy"], rel=1e-12)
                else:
                    assert "test-accuracy" not in theirs and math.isnan(mine["ori-test-accuracy"])
            cost = api.get_cost_info(index, "cifar10-valid", hp="200")
            assert cost == pytest.approx({k: ours.get_cost_info(index, "cifar10-valid", "200")[k] for k in cost}, rel=1e-12)
            darcy = api.get_more_info(index, "darcyflow", hp="200", is_random=False)
            assert darcy["valtest-loss"] == pytest.approx(
                ours.get_more_info(index, "darcyflow", "200")["ori-test-score"], nan_ok=True
            )
        assert api.get_net_config(7, "cifar10-valid") == ours.get_net_config(7, "cifar10-valid")


def test_download_through_the_s3_mirror_then_verify(tmp_path, s3_server, capsys):
    from nb360.data import main

    url, client = s3_server
    fixture = write_fixture(tmp_path / "src", hp="200")
    client.put_object(Bucket="pde-xd", Key="NATS-tss-v1_0-daa55.pickle.pbz2", Body=fixture.read_bytes(), ACL="public-read")
    root = tmp_path / "nb201"
    args = ["--benchmark", "nb201-ninapro", "--root", str(root)]
    assert main(["download", *args, "--data.source", "s3", f"--data.s3_endpoint={url}"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert all(line.startswith("ok ") for line in out) and any("converted to an nb360-tabular store" in line for line in out)
    assert (root / "NATS-tss-v1_0-daa55.pickle.pbz2").read_bytes() == fixture.read_bytes()
    assert (root / "NATS-tss-v1_0-daa55.pickle.pbz2.sha256").exists() and not list(root.glob("*.part"))
    bench = create(root / "NATS-tss-v1_0-daa55.nb360")
    assert bench.get_more_info(2, "ninapro", "200")["ori-test-accuracy"] == 61.0
    assert main(["verify", *args]) == 0
    assert "ok ninapro/200: 3/15625 architectures" in capsys.readouterr().out
    assert (
        main(["download", "--benchmark", "nb201-darcy", "--root", str(root), "--data.source", "s3", f"--data.s3_endpoint={url}"])
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1 and "NATS-tss-v1_0-48858.pickle.pbz2" in err[0] and err[0].startswith("nb360: error: benchmark nb201-darcy")
    )
    assert main(["download", "--benchmark", "nb201-cifar", "--root", str(root)]) == 2
    assert "choose one of: nb201-ninapro, nb201-darcy" in capsys.readouterr().err


def test_malformed_records_are_one_line_errors(tmp_path):
    data = fixture_dict()
    rc = data["arch2infos"][1]["12"]["all_results"][("ninapro", 777)]
    rc["train_losses"] = {0: "high", 1: 1.0}
    with pytest.raises(DataError, match=r"architecture 1, hp '12', run \('ninapro', 777\) train_losses: non-numeric value"):
        import_nats(save_nats_pickle(data, tmp_path / "NATS-tss-v1_0-bad0.pickle.pbz2"), progress=False)
    del rc["flop"]
    with pytest.raises(DataError, match="the ResultsCount state lacks flop"):
        import_nats(save_nats_pickle(data, tmp_path / "NATS-tss-v1_0-bad1.pickle.pbz2"), progress=False)
