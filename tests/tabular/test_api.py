"""The query API against numbers worked out by hand from a hand-written NATS benchmark."""

from __future__ import annotations

import collections
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nb360.errors import UsageError
from nb360.spaces import get_space
from nb360.tabular import RunRecord, ScoreRule, StoreBuilder, create
from nb360.tabular.nats import import_nats, save_nats_pickle

ARCHS = list(get_space("tss").archs)
REPO = Path(__file__).resolve().parents[2]


def rc(name, seed, *, acc, loss, train_time, eval_time, params=0.5, flop=70.0, latency=(0.01,)):
    """A ResultsCount state with explicit per-epoch numbers (acc/loss: {set: [epoch values]})."""
    epochs = len(train_time)
    return {
        "name": name,
        "train_acc1es": {e: 90.0 + e for e in range(epochs)},
        "train_acc5es": {e: 99.0 for e in range(epochs)},
        "train_losses": {e: 0.5 - 0.1 * e for e in range(epochs)},
        "train_times": collections.OrderedDict(enumerate(train_time)),
        "arch_config": {"channel": 16, "num_cells": 5, "arch_str": None, "class_num": 100},
        "params": params,
        "flop": flop,
        "seed": f"{seed:04d}",
        "epochs": epochs,
        "latency": list(latency),
        "eval_names": list(acc),
        "eval_acc1es": {f"{s}@{e}": v for s, values in acc.items() for e, v in enumerate(values)},
        "eval_losses": {f"{s}@{e}": v for s, values in loss.items() for e, v in enumerate(values)},
        "eval_times": {f"{s}@{e}": eval_time[s] for s in acc for e in range(epochs)},
        "net_state_dict": None,
    }


def cifar100(seed, valid, test, ori, *, train_time, params=0.5, flop=70.0, latency=(0.01,)):
    acc = {"x-valid": valid, "x-test": test, "ori-test": ori}
    loss = {s: [1.0 - v / 100 for v in values] for s, values in acc.items()}
    eval_time = {"x-valid": 1.0, "x-test": 1.0, "ori-test": 2.0}
    return rc(
        "cifar100",
        seed,
        acc=acc,
        loss=loss,
        train_time=train_time,
        eval_time=eval_time,
        params=params,
        flop=flop,
        latency=latency,
    )


def darcy(rel_l2, flop):
    acc, loss = {"ori-test": [1 - 2 * rel_l2, 1 - rel_l2]}, {"ori-test": [2 * rel_l2, rel_l2]}
    return rc("darcyflow", 777, acc=acc, loss=loss, train_time=[4.0, 4.0], eval_time={"ori-test": 0.5}, flop=flop)


def ninapro(final):
    acc, loss = {"ori-test": [final - 10, final]}, {"ori-test": [1.5, 1.0]}
    return rc("ninapro", 777, acc=acc, loss=loss, train_time=[1.0, 1.0], eval_time={"ori-test": 0.25}, latency=(0.004,))


RUNS = {  # index: {hp: {(dataset, seed): state}}
    4: {
        "200": {
            ("cifar100", 777): cifar100(
                777, [50.0, 60.0], [51.0, 62.0], [50.5, 61.0], train_time=[10.0, 12.0], latency=(0.01, 0.03)
            ),
            ("cifar100", 888): cifar100(888, [52.0, 64.0], [53.0, 66.0], [52.5, 65.0], train_time=[11.0, 13.0], latency=(-1.0,)),
            ("darcyflow", 777): darcy(0.10, 100.0),
        },
        "12": {("ninapro", 777): ninapro(80.0)},
    },
    10: {
        "200": {
            ("cifar100", 777): cifar100(777, [40.0, 70.0], [41.0, 69.0], [40.5, 69.5], train_time=[5.0, 5.0], params=0.5),
            ("cifar100", 888): cifar100(888, [42.0, 72.0], [43.0, 71.0], [42.5, 71.5], train_time=[5.0, 5.0], params=0.6),
            ("darcyflow", 777): darcy(0.05, 200.0),
        },
        "12": {("ninapro", 777): ninapro(70.0)},
    },
    20: {
        "200": {
            ("cifar100", 888): cifar100(888, [30.0, 75.0], [31.0, 60.0], [30.5, 67.5], train_time=[6.0, 6.0], params=1.2),
            ("darcyflow", 777): darcy(0.20, 50.0),
        },
    },
}


def api_store(root):
    """The benchmark of :data:`RUNS`, written as a NATS file under ``root`` and imported; returns the store's path."""
    arch2infos = {}
    for index, hps in RUNS.items():
        arch2infos[index] = collections.OrderedDict()
        for hp, runs in hps.items():
            for state in runs.values():
                state["arch_config"]["arch_str"] = ARCHS[index]
            seeds = collections.defaultdict(list)
            for dataset, seed in runs:
                seeds[dataset].append(seed)
            arch2infos[index][hp] = {
                "arch_index": index,
                "arch_str": ARCHS[index],
                "all_results": runs,
                "dataset_seed": dict(seeds),
                "clear_net_done": True,
            }
    data = {"meta_archs": ARCHS, "total_archs": len(ARCHS), "arch2infos": arch2infos, "evaluated_indexes": set(RUNS)}
    path = save_nats_pickle(data, root / "NATS-tss-v1_0-api00.pickle.pbz2")
    return import_nats(path, progress=False)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return create(api_store(tmp_path_factory.mktemp("api")), "tss")


def test_container_and_names(bench):
    assert len(bench) == 15625 and bench[4] == ARCHS[4] == bench.arch(4) and next(iter(bench)) == ARCHS[0]
    assert bench.datasets == ["cifar100", "darcyflow", "ninapro"]
    assert bench.hps("cifar100") == ["200"] and bench.hps("ninapro") == ["12"]
    assert bench.eval_sets("cifar100", "200") == ["x-valid", "x-test", "ori-test"]
    assert bench.score_info("darcyflow") == {"column": "loss", "name": "relative_l2", "unit": "fraction", "lower_is_better": True}


def test_get_more_info_means_seeds_and_names_sets_explicitly(bench):
    info = bench.get_more_info(4, "cifar100", "200")
    assert info["x-valid-accuracy"] == 62.0 and info["x-test-accuracy"] == 64.0 and info["ori-test-accuracy"] == 63.0
    assert info["x-valid-loss"] == pytest.approx(0.38) and info["x-valid-score"] == 62.0
    assert info["score_name"] == "accuracy" and info["lower_is_better"] is False
    assert not {"valid-accuracy", "test-accuracy", "valtest-accuracy"} & set(info)
    # times by hand: train epochs (10, 12) and (11, 13) -> running sums 22 and 24 -> mean 23
    assert info["train-all-time"] == 23.0 and info["train-per-time"] == 11.5
    assert info["x-valid-all-time"] == 2.0 and info["x-valid-per-time"] == 1.0 and info["ori-test-all-time"] == 4.0
    first = bench.get_more_info(4, "cifar100", "200", iepoch=0)
    assert first["train-all-time"] == 10.5 and first["train-per-time"] == 10.5 and first["x-valid-accuracy"] == 51.0
    assert first["train-accuracy"] == 90.0 and first["train-loss"] == 0.5
    # one seed, and an architecture with a single seed: its own numbers
    assert bench.get_more_info(4, "cifar100", "200", seed=888)["x-valid-accuracy"] == 64.0
    assert bench.get_more_info(20, "cifar100", "200")["x-valid-accuracy"] == 75.0


def test_validation_and_test_are_never_aliased(bench):
    valid, test = bench.scores("cifar100", "200", "x-valid"), bench.scores("cifar100", "200", "x-test")
    assert valid[[4, 10, 20]].tolist() == [62.0, 71.0, 75.0] and test[[4, 10, 20]].tolist() == [64.0, 70.0, 60.0]
    assert not np.shares_memory(valid, test)
    valid[4] = -1.0  # the caller owns the returned arrays
    assert bench.scores("cifar100", "200", "x-valid")[4] == 62.0
    info = bench.get_more_info(10, "cifar100", "200")
    assert info["x-valid-accuracy"] != info["x-test-accuracy"]


def test_seed_choices(bench):
    with pytest.raises(UsageError, match=r"seed 999 is not one of cifar100/hp 200's seeds \[777, 888\]"):
        bench.get_more_info(4, "cifar100", "200", seed=999)
    with pytest.raises(UsageError, match="architecture 20 has no run with seed 777"):
        bench.get_more_info(20, "cifar100", "200", seed=777)
    with pytest.raises(UsageError, match="rng=numpy.random.default_rng"):
        bench.get_more_info(4, "cifar100", "200", seed="random")
    picks = [
        bench.get_more_info(4, "cifar100", "200", seed="random", rng=np.random.default_rng(s))["x-valid-accuracy"]
        for s in range(20)
    ]
    assert set(picks) == {60.0, 64.0}
    again = [
        bench.get_more_info(4, "cifar100", "200", seed="random", rng=np.random.default_rng(s))["x-valid-accuracy"]
        for s in range(20)
    ]
    assert picks == again
    random_scores = bench.scores("cifar100", "200", "x-valid", seed="random", rng=np.random.default_rng(0))
    assert random_scores[4] in (60.0, 64.0) and random_scores[20] == 75.0 and math.isnan(random_scores[0])
    assert bench.scores("cifar100", "200", "x-valid", seed=777)[[4, 20]].tolist()[0] == 60.0


def test_hp_is_required_and_errors_list_the_choices(bench):
    with pytest.raises(UsageError, match=r"hp is required .* cifar100 has: '200'"):
        bench.get_more_info(4, "cifar100")
    with pytest.raises(UsageError, match=r"unknown hp '12' for dataset 'cifar100'; choose one of: '200'"):
        bench.get_more_info(4, "cifar100", "12")
    assert bench.get_more_info(4, "cifar100", 200)["x-valid-accuracy"] == 62.0
    with pytest.raises(UsageError, match=r"hp is required"):
        bench.scores("cifar100", eval_set="x-valid")
    with pytest.raises(UsageError, match=r"eval_set is required; cifar100/hp 200 has: 'x-valid', 'x-test', 'ori-test', 'train'"):
        bench.scores("cifar100", "200")
    with pytest.raises(UsageError, match=r"unknown dataset 'cifar10'; this benchmark holds: 'cifar100', 'darcyflow', 'ninapro'"):
        bench.scores("cifar10", "200", "ori-test")
    with pytest.raises(
        UsageError, match=r"unknown evaluation set 'valid' .* choose one of: 'x-valid', 'x-test', 'ori-test', 'train'"
    ):
        bench.scores("cifar100", "200", "valid")
    with pytest.raises(UsageError, match="out of range 0..15624"):
        bench.get_more_info(15625, "cifar100", "200")
    with pytest.raises(UsageError, match="epoch 2 is out of range"):
        bench.get_more_info(4, "cifar100", "200", iepoch=2)
    with pytest.raises(UsageError, match="architecture 0 has no run on cifar100 with hp 200"):
        bench.get_more_info(0, "cifar100", "200")
    with pytest.raises(UsageError, match="unknown operation 'conv'"):
        bench.query_index_by_arch("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|")


def test_query_index_by_arch(bench):
    class Cell:
        def tostr(self):
            return ARCHS[10]

    assert bench.query_index_by_arch(ARCHS[4]) == 4 and bench.query_index_by_arch(Cell()) == 10
    assert bench.query_index_by_arch(get_space("tss").to_codes(ARCHS[20])) == 20 and bench.query_index_by_arch(np.int64(4)) == 4
    assert bench.query_index_by_arch(ARCHS[0]) == -1  # a valid cell this benchmark has no results for
    assert bench.get_more_info(ARCHS[4], "cifar100", "200")["x-valid-accuracy"] == 62.0


def test_cost_info_by_hand(bench):
    cost = bench.get_cost_info(4, "cifar100", "200")
    assert cost["flops"] == 70.0 and cost["params"] == 0.5
    assert cost["latency"] == pytest.approx(0.02)  # mean of the positive per-run latencies (0.02, -1)
    assert cost["T-train@epoch"] == 11.5 and cost["T-train@total"] == 23.0
    assert cost["T-x-valid@epoch"] == 1.0 and cost["T-x-valid@total"] == 2.0 and cost["T-ori-test@total"] == 4.0
    assert bench.get_cost_info(10, "cifar100", "200")["params"] == 0.6  # seeds disagree: NATS's seed-888 rule
    assert bench.get_latency(4, "cifar100", "200") == pytest.approx(0.02)
    params = bench.costs("cifar100", "params", hp="200")
    assert params[[4, 10, 20]].tolist() == [0.5, 0.6, 1.2] and math.isnan(params[0])
    assert bench.costs("darcyflow", "flops")[[4, 10, 20]].tolist() == [100.0, 200.0, 50.0]
    assert bench.costs("cifar100", "latency", hp="200")[4] == pytest.approx(0.02)
    with pytest.raises(UsageError, match="unknown cost 'size'"):
        bench.costs("cifar100", "size")


def test_find_best_follows_the_metric_direction(bench):
    assert bench.find_best("cifar100", "x-valid", "200") == (20, 75.0)
    assert bench.find_best("cifar100", "x-test", "200") == (10, 70.0)
    assert bench.find_best("cifar100", "x-valid", "200", param_max=1.0) == (10, 71.0)
    assert bench.find_best("darcyflow", "ori-test", "200") == (10, 0.05)  # the lowest relative l2
    assert bench.find_best("darcyflow", "ori-test", "200", flop_max=150.0) == (4, 0.10)
    assert bench.find_best("darcyflow", "ori-test", "200", epoch=0) == (10, 0.10)
    best, score = bench.find_best("darcyflow", "ori-test", "200", flop_max=1.0)
    assert best == -1 and math.isnan(score)
    darcy_info = bench.get_more_info(10, "darcyflow", "200")
    assert darcy_info["ori-test-score"] == 0.05 and darcy_info["ori-test-accuracy"] == 0.95
    assert darcy_info["score_name"] == "relative_l2" and darcy_info["lower_is_better"] is True


def test_simulate_train_eval_on_nb360_datasets(bench):
    bench.reset_time()
    score, latency, cost, used = bench.simulate_train_eval(ARCHS[4], "ninapro", "12", "ori-test")
    assert (score, latency, cost, used) == (80.0, 0.004, 2.0 + 0.25, 2.25)
    score, _, cost, used = bench.simulate_train_eval(10, "darcyflow", "200", "ori-test", iepoch=0)
    assert (score, cost, used) == (0.10, 4.0 + 0.5, 6.75)
    bench.simulate_train_eval(10, "darcyflow", "200", "ori-test", account_time=False)
    assert bench.used_time == 6.75
    bench.reset_time()
    assert bench.used_time == 0.0
    with pytest.raises(UsageError, match="unknown evaluation set 'x-valid'"):
        bench.simulate_train_eval(4, "ninapro", "12", "x-valid")


def test_vectorised_views_agree_with_single_queries(bench):
    for dataset, hp, sets in (("cifar100", "200", ("x-valid", "x-test", "ori-test")), ("darcyflow", "200", ("ori-test",))):
        evaluated = bench.evaluated(dataset, hp)
        assert np.flatnonzero(evaluated).tolist() == [4, 10, 20]
        for s in sets:
            scores = bench.scores(dataset, hp, s)
            assert np.isnan(scores[~evaluated]).all()
            for i in (4, 10, 20):
                assert scores[i] == bench.get_more_info(i, dataset, hp)[f"{s}-score"] == bench.score(i, dataset, hp, s)
    curves = bench.curves("cifar100", "200", "x-valid-accuracy")
    assert curves.shape == (15625, 2) and curves[4].tolist() == [51.0, 62.0] and curves[20].tolist() == [30.0, 75.0]
    assert bench.curves("cifar100", "200", "train-all-time")[4].tolist() == [10.5, 23.0]
    assert bench.curves("cifar100", "200", "train-per-time")[4].tolist() == [10.5, 11.5]
    assert bench.curves("cifar100", "200", "train.acc5")[4].tolist() == [99.0, 99.0]
    assert bench.curves("darcyflow", "200", "ori-test-score")[10].tolist() == [0.10, 0.05]
    assert bench.curves("cifar100", "200", "x-valid-accuracy", seed=888)[4].tolist() == [52.0, 64.0]
    with pytest.raises(UsageError, match="unknown column 'valid-accuracy'"):
        bench.curves("cifar100", "200", "valid-accuracy")
    assert bench.statistics("cifar100", "200") == {1: 1, 2: 2}
    assert bench.statistics("ninapro", "12") == {0: 1, 1: 2}
    assert math.isnan(bench.score(0, "cifar100", "200", "x-valid"))


def test_the_last_epoch_table_gives_the_numbers_of_direct_lookups(tmp_path):
    bench = create(api_store(tmp_path))
    view = bench._view("cifar100", "200")
    assert view._last is None  # built on the first query of the last epoch, mean over seeds
    other = [bench.get_more_info(i, "cifar100", "200", iepoch=e, seed=s) for i in (4, 10) for e in (0, 1) for s in ("mean", 888)]
    assert view._last is None  # other epochs and seeds read the columns
    direct = {i: bench.get_more_info(i, "cifar100", "200", iepoch=1) for i in (4, 10, 20)}  # the last epoch, from the columns
    for i, info in direct.items():
        assert bench.get_more_info(i, "cifar100", "200") == info  # now from the table: the same numbers, bit for bit
        assert bench.get_more_info(i, "cifar100", "200", seed="".join("mean")) == info  # any "mean" string
    assert view._last is not None and sum(row is not None for row in view._last) == 3
    returned = bench.get_more_info(4, "cifar100", "200")
    returned["x-valid-accuracy"] = 0.0  # callers get copies
    assert bench.get_more_info(4, "cifar100", "200")["x-valid-accuracy"] == 62.0
    with pytest.raises(UsageError, match="architecture 0 has no run"):
        bench.get_more_info(0, "cifar100", "200")
    with pytest.raises(UsageError, match="out of range"):
        bench.get_more_info(-1, "cifar100", "200")
    assert bench.get_more_info(np.int64(20), "cifar100", 200) == direct[20]
    assert other == [
        bench.get_more_info(i, "cifar100", "200", iepoch=e, seed=s) for i in (4, 10) for e in (0, 1) for s in ("mean", 888)
    ]


def test_absent_architectures_are_nan_in_vectorised_answers(bench):
    absent = np.ones(15625, dtype=bool)
    absent[[4, 10, 20]] = False
    assert bench.store.groups[("cifar100", "200")].rows == 3  # the store holds only the evaluated cells
    for values in (
        bench.scores("cifar100", "200", "x-valid"),
        bench.scores("cifar100", "200", "x-valid", seed=888),
        bench.scores("cifar100", "200", "train", epoch=0),
        bench.costs("cifar100", "params", hp="200"),
        bench.costs("cifar100", "latency", hp="200"),
    ):
        assert values.shape == (15625,) and np.isnan(values[absent]).all() and not np.isnan(values[~absent]).any()
    curves = bench.curves("cifar100", "200", "train-all-time")
    assert curves.shape == (15625, 2) and np.isnan(curves[absent]).all() and not np.isnan(curves[~absent]).any()
    assert np.array_equal(bench.evaluated("cifar100", "200"), ~absent)
    ninapro = bench.scores("ninapro", "12", "ori-test")
    assert np.flatnonzero(~np.isnan(ninapro)).tolist() == [4, 10] and bench.query_index_by_arch(20) == 20  # 20: cifar100 only
    assert bench.query_index_by_arch(5) == -1


def test_the_task_metric_column(tmp_path):
    """A precompute-style store: the score is the task's own metric (lower is better), reported beside loss and accuracy."""
    builder = StoreBuilder("tss", score={"psicov": ScoreRule("metric", "mae8", "", True)})
    for k, index in enumerate((7, 3000)):
        builder.add(
            RunRecord(
                index, "psicov", "30", 0, 3,
                train={"loss": [3.0, 2.0, 1.0], "metric": [9.0 - k, 8.0, 7.0 + k], "time": [1.0, 1.0, 1.0]},
                evals={"x-valid": {"loss": [2.5, 2.0, 1.5], "metric": [6.0, 5.0 - k, 4.0 + k], "time": [0.5, 0.5, 0.5]}},
                params=0.3, flops=30.0, latency=[0.002],
            )
        )  # fmt: skip
    builder.add(
        RunRecord(7, "cifar100", "30", 0, 3, train={"acc1": [1.0, 2.0, 3.0]}, evals={"x-valid": {"acc1": [4.0, 5.0, 6.0]}})
    )
    bench = create(builder.write(tmp_path / "psicov.nb360"))
    assert bench.score_info("psicov") == {"column": "metric", "name": "mae8", "unit": "", "lower_is_better": True}
    info = bench.get_more_info(3000, "psicov", "30")
    assert (info["train-metric"], info["x-valid-metric"], info["x-valid-score"], info["x-valid-loss"]) == (8.0, 5.0, 5.0, 1.5)
    assert math.isnan(info["x-valid-accuracy"]) and info["score_name"] == "mae8" and info["lower_is_better"] is True
    assert repr(bench.get_more_info(3000, "psicov", "30", iepoch=2)) == repr(
        info
    )  # the columns, as the last-epoch table (NaNs too)
    assert bench.get_more_info(7, "psicov", "30", iepoch=0)["x-valid-metric"] == 6.0
    scores = bench.scores("psicov", "30", "x-valid")
    assert scores[[7, 3000]].tolist() == [4.0, 5.0] and np.isnan(scores).sum() == 15623
    assert bench.find_best("psicov", "x-valid", "30") == (7, 4.0)  # the lowest MAE8
    assert bench.curves("psicov", "30", "x-valid-metric")[3000].tolist() == [6.0, 4.0, 5.0]
    assert bench.curves("psicov", "30", "train.metric")[7].tolist() == [9.0, 8.0, 7.0]
    plain = bench.get_more_info(7, "cifar100", "30")
    assert "x-valid-metric" not in plain and "train-metric" not in plain  # only where the group stores a metric
    with pytest.raises(UsageError, match="unknown column 'x-valid-metric' for cifar100/hp 30"):
        bench.curves("cifar100", "30", "x-valid-metric")


def test_net_config_and_show(bench, capsys):
    assert bench.get_net_config(4, "cifar100") == {
        "name": "infer.tiny",
        "C": 16,
        "N": 5,
        "arch_str": ARCHS[4],
        "num_classes": 100,
    }
    bench.show(4)
    out = capsys.readouterr().out
    assert out.startswith(f"[4] {ARCHS[4]}") and "cifar100 hp 200 (2 epochs, seeds [777, 888])" in out and "relative_l2" in out


def test_create_checks_the_search_space(bench):
    with pytest.raises(UsageError, match="holds space nb201, not nats_sss"):
        create(bench.store.path, "sss")


def test_benchmark_script_smoke(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "nb201_api.py"), "--archs", "30", "--epochs", "3", "--queries", "300"]
    result = subprocess.run(
        [*cmd, "--out", str(out), "--no-fast-mode"], check=False, capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads(out.read_text())
    assert document["archs"] == 30 and "ours" in document["results"]
    memory = document["results"]["ours"]["memory"]
    assert list(memory) == ["load", "scan", "query", "query_epoch"] and set(memory["query"]) == {"rss_peak_mib", "anon_peak_mib"}
    if "nats" in document["results"]:
        assert document["agree"]["nats"] == {"scan": True, "queries": True, "queries_random_epoch": True}
    assert "get_more_info" in result.stdout
