"""Multi-trial searches: correctness against independent computations, time accounting, brackets, the CLI."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nb360.search.multitrial import ALGORITHMS, CodesSpace, Evaluation, History, product_space
from nb360.search.multitrial.hyperband import BOHBSampler, KDEModel, brackets, hyperband
from nb360.search.multitrial.reinforce import Policy
from nb360.search.multitrial.reinforce import run as reinforce
from nb360.search.multitrial.runner import report_times
from nb360.search.multitrial.tabular import TabularEvaluator
from nb360.search.tabular import main

# ----------------------------------------------------------------------------- a synthetic table in Python


class Smooth:
    """Score = 100 - sum((code - target)^2) - (max_budget - budget); cost = (1 + code[0]) per epoch + 0.5."""

    def __init__(self, radices, target, max_budget=12, lower_is_better=False):
        self.radices, self.target, self.max_budget = radices, target, max_budget
        self.lower_is_better, self.metric = lower_is_better, "score"
        self.calls = []

    def true(self, arch):
        return 100.0 - sum((c - t) ** 2 for c, t in zip(arch, self.target))

    def cost(self, arch, budget):
        return (1 + arch[0]) * (self.max_budget if budget is None else budget) + 0.5

    def evaluate(self, arch, budget, rng):
        b = self.max_budget if budget is None else budget
        score = self.true(arch) - (self.max_budget - b)
        self.calls.append((arch, budget))
        return Evaluation(-score if self.lower_is_better else score, self.cost(arch, budget))

    def report(self, arch):
        return self.true(arch)


SMALL = (3, 3, 3, 3)
TARGET = (2, 0, 1, 2)


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
@pytest.mark.parametrize("lower", [False, True])
def test_each_algorithm_finds_the_optimum_of_a_small_table(algo, lower):
    space, ev = CodesSpace(SMALL), Smooth(SMALL, TARGET, lower_is_better=lower)
    for seed in range(3):
        history = ALGORITHMS[algo](space, ev, 5000.0, seed)
        assert history.best_arch == TARGET
        assert ev.true(history.best_arch) == 100.0


def test_rea_beats_random_search_on_a_smooth_table():
    radices, target = (5,) * 6, (4, 0, 3, 1, 2, 4)
    space, ev = CodesSpace(radices), Smooth(radices, target, max_budget=1)
    regrets = {"rea": [], "random": []}
    for algo in regrets:
        for seed in range(150):
            history = ALGORITHMS[algo](space, ev, 500.0, seed)  # about 140 evaluations of 15,625 cells
            regrets[algo].append(100.0 - ev.true(history.best_arch))
    rea, rnd = np.mean(regrets["rea"]), np.mean(regrets["random"])
    assert rea < 0.5 * rnd, (rea, rnd)


# ----------------------------------------------------------------------------- time accounting


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_time_accounting_and_the_stop_rule(algo):
    space, ev = CodesSpace(SMALL), Smooth(SMALL, TARGET)
    budget = 400.0
    history = ALGORITHMS[algo](space, ev, budget, 7)
    costs = [ev.cost(arch, b) for arch, b in ev.calls]
    assert history.costs == costs
    total, expected = 0.0, []
    for c in costs:
        total += c
        expected.append(total)
    assert history.times == expected  # exact, added left to right
    assert history.times[-1] >= budget  # the trial that crosses the budget counts ...
    if algo != "rea" or len(history) > 10:
        assert history.times[-2] < budget  # ... and no trial starts after it
    assert [t.time for t in history.trials()] == expected


def test_stop_rule_at_the_edges():
    space = CodesSpace(SMALL)

    class Unit(Smooth):
        def cost(self, arch, budget):
            return 1.0

    ev = Unit(SMALL, TARGET)
    assert len(ALGORITHMS["random"](space, ev, 5.0, 0)) == 5  # total reaches exactly 5 after the 5th
    assert len(ALGORITHMS["random"](space, ev, 0.5, 0)) == 1  # one trial always runs
    assert len(ALGORITHMS["rea"](space, ev, 0.5, 0)) == 10  # the whole initial population, as the reference
    assert len(ALGORITHMS["rea"](space, ev, 12.0, 0)) == 12
    assert len(ALGORITHMS["rea"](space, ev, 1e9, 0, cycles=5)) == 15
    with pytest.raises(Exception, match="positive"):
        History(0.0, False)


def test_incumbent_and_report_times():
    h = History(10.0, lower_is_better=True)
    for arch, score, cost in [("a", 5.0, 1.0), ("b", 3.0, 2.0), ("c", 3.0, 1.0), ("d", 4.0, 1.0)]:
        h.add(arch, None, Evaluation(score, cost))
    assert h.best == [0, 1, 1, 1]  # lower is better, first seen wins ties
    g = History(10.0, lower_is_better=False)
    for score in (math.nan, 2.0, math.nan, 1.0):
        g.add(score, None, Evaluation(score, 1.0))
    assert g.best == [0, 1, 1, 1]  # a missing (NaN) score never stays the incumbent
    assert [h.incumbent_at(t) for t in (0.5, 1.0, 2.9, 3.0, 100)] == [None, "a", "a", "b", "b"]
    assert report_times(40, 1).tolist() == list(range(1, 41))
    assert report_times(10, 3).tolist() == [3, 6, 9, 10]


# ----------------------------------------------------------------------------- Hyperband / BOHB


def test_brackets_match_the_published_schedule():
    # hpbandster, eta 3, budgets 1..12: s_max = -int(log(1/12)/log 3) + 1 = 3 budgets, 12/9, 12/3, 12
    assert brackets(1, 12, 3) == [([9, 3, 1], [12 / 9, 4.0, 12.0]), ([3, 1], [4.0, 12.0]), ([3], [12.0])]
    # 1..200: 5 budgets (3^4 = 81 <= 200 < 243); n0 = floor(5 / (s + 1)) * 3^s
    b = [200 / 81, 200 / 27, 200 / 9, 200 / 3, 200.0]
    expected = [([81, 27, 9, 3, 1], b), ([27, 9, 3, 1], b[1:]), ([9, 3, 1], b[2:]), ([6, 2], b[3:]), ([5], b[4:])]
    got = brackets(1, 200, 3)
    assert [ns for ns, _ in got] == [ns for ns, _ in expected]
    for (_, g), (_, e) in zip(got, expected):
        assert np.allclose(g, e)


def test_hyperband_runs_the_brackets_and_promotes_the_best():
    space, ev = CodesSpace(SMALL), Smooth(SMALL, TARGET)
    history = hyperband(space, ev, 2000.0, 3)
    round_epochs = [1] * 9 + [4] * 3 + [12] + [4] * 3 + [12] + [12] * 3  # int(12/9) = 1 epoch
    assert history.budgets[: len(round_epochs)] == round_epochs
    first9 = history.archs[:9]
    scores = [ev.true(a) - 11 for a in first9]
    best3 = sorted(range(9), key=lambda k: -scores[k])[:3]
    assert sorted(history.archs[9:12]) == sorted(first9[k] for k in best3)
    assert history.archs[12] == max(history.archs[9:12], key=ev.true)


def test_kde_bandwidth_and_density_by_hand():
    data = np.array([[0, 1], [0, 2], [1, 2], [0, 2]])
    kde = KDEModel(data, 0.3, radices=(2, 3))
    n, d = 4, 2
    std0, std1 = np.std([0, 0, 1, 0]), np.std([1, 2, 2, 2])  # 0.4330, 0.4330
    bw = [max(0.3, 1.06 * s * n ** (-1 / (4 + d))) for s in (std0, std1)]
    assert np.allclose(kde.bw, bw)
    x = [0, 2]  # per point: same code -> 1 - bw, other -> bw / (levels - 1), levels = 2 in both columns
    k = [
        (1 - bw[0]) * bw[1],  # [0, 1]
        (1 - bw[0]) * (1 - bw[1]),  # [0, 2]
        bw[0] * (1 - bw[1]),  # [1, 2]
        (1 - bw[0]) * (1 - bw[1]),  # [0, 2]
    ]
    assert math.isclose(kde.pdf(x), sum(k) / 4)


def _bohb_proposals(good, kde_levels, n=300):
    space, rng = CodesSpace((3, 3, 3, 3)), random.Random(0)
    sampler = BOHBSampler(space, rng, num_samples=16, random_fraction=0.0, min_bandwidth=0.3, kde_levels=kde_levels)
    for _ in range(60):
        arch = space.sample(rng)
        sampler.observe(arch, 12.0, (0.0 if arch[0] in good else 1.0) + 0.01 * rng.random())
    assert 12.0 in sampler.models
    return np.mean([sampler.propose(12.0)[0] in good for _ in range(n)])


def test_bohb_sampling_concentrates_on_the_good_region():
    # uniform sampling puts 2/3 of the proposals in {1, 2} and 1/3 on 2
    assert _bohb_proposals({1, 2}, "data") > 0.95
    assert _bohb_proposals({1, 2}, "radix") > 0.95
    assert _bohb_proposals({2}, "radix") > 0.8


def test_bohb_keeps_the_statsmodels_single_level_quirk():
    # all good points share code 2: statsmodels' kernel gives every other code an infinite good density
    assert _bohb_proposals({2}, "data") < 0.2
    kde = KDEModel(np.array([[2, 0], [2, 1]]), 0.3, (3, 3))
    assert kde.pdf([1, 0]) == math.inf


def test_bohb_builds_no_model_below_the_minimum_points():
    space, rng = CodesSpace((3, 3)), random.Random(0)
    sampler = BOHBSampler(space, rng)
    for i in range(5):  # d + 1 = 3 points needed, and the bad set needs more than d = 2 rows: 3 + 3 = 6 points
        sampler.observe(space.sample(rng), 1.0, float(i))
    assert not sampler.models
    sampler.observe(space.sample(rng), 1.0, 9.0)
    assert 1.0 in sampler.models


# ----------------------------------------------------------------------------- REINFORCE


def _prob(policy, arch):
    p = policy.probs()
    return float(np.prod([p[d, c] for d, c in enumerate(arch)]))


def test_reinforce_raises_the_probability_of_the_optimum():
    space, ev = CodesSpace(SMALL), Smooth(SMALL, TARGET, max_budget=1)
    policy = Policy(SMALL, np.random.default_rng(0), lr=0.01)
    before = _prob(policy, TARGET)
    assert math.isclose(before, 1 / 81, rel_tol=0.01)  # logits start near 0
    reinforce(space, ev, 3000.0, 0, policy=policy)
    assert _prob(policy, TARGET) > 5 * before


def test_policy_first_adam_step_moves_each_logit_by_the_learning_rate():
    policy = Policy((3, 2), np.random.default_rng(0), lr=0.01)
    probs, start = policy.probs(), policy.logits.copy()
    policy.step(probs, np.array([0, 1]), advantage=2.0)
    grad = probs * 2.0
    grad[[0, 1], [0, 1]] -= 2.0  # d(-log p_a * A)/dz = (p - onehot(a)) * A
    finite = np.isfinite(start)
    moved = policy.logits[finite] - start[finite]
    assert np.allclose(moved, -0.01 * np.sign(grad[finite]), rtol=1e-6)  # Adam's first step: lr * sign
    assert np.isneginf(policy.logits[1, 2])  # padding stays masked


# ----------------------------------------------------------------------------- the tabular evaluator and the CLI


def _store(path: Path, archs: int = 60, seeds=(777,), dataset: str = "ninapro") -> Path:
    """A NinaPro-like store: ``archs`` NB201 cells, hp '12' (12 epochs) and hp '200' (stored with 3 epochs to stay small)."""
    from nb360.tabular import RunRecord, StoreBuilder

    rng = np.random.default_rng(0)
    builder = StoreBuilder("tss")
    for index in range(archs):
        for s, seed in enumerate(seeds):
            for hp, epochs in (("12", 12), ("200", 3)):
                acc = rng.uniform(20, 90, epochs)
                builder.add(
                    RunRecord(
                        arch_index=index,
                        dataset=dataset,
                        hp=hp,
                        seed=seed,
                        epochs=epochs,
                        train={"loss": rng.uniform(0, 2, epochs), "acc1": acc, "acc5": acc, "time": rng.uniform(0.1, 1, epochs)},
                        evals={
                            "ori-test": {"loss": rng.uniform(0, 2, epochs), "acc1": acc, "time": rng.uniform(0.01, 0.1, epochs)}
                        },
                        params=1.0,
                        flops=1.0,
                        latency=[0.01],
                        seed_label=f"{seed:04d}",
                    )
                )
    return builder.write(path, source={"file": "test", "sha256": None}, overwrite=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("mt") / "small.nb360")


@pytest.fixture(scope="module")
def store2(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("mt2") / "seeds.nb360", archs=20, seeds=(777, 888))


def test_tabular_evaluator_matches_simulate_train_eval(store):
    from nb360.tabular import create

    bench = create(store)
    ev = TabularEvaluator(bench, "ninapro", "12", "ori-test", "ori-test", "200", seed_mode="mean")
    space = bench.space
    assert len(ev.space()) == 60
    for index in (0, 7, 59):
        codes = space.to_codes(index)
        for budget in (None, 1, 4, 12):
            iepoch = None if budget is None else budget - 1
            score, _, cost, _ = bench.simulate_train_eval(index, "ninapro", "12", "ori-test", iepoch=iepoch)
            assert ev.evaluate(codes, budget, random.Random(0)) == (score, cost)
        assert ev.report(codes) == bench.score(index, "ninapro", "200", "ori-test")
        assert ev.index(codes) == index
    best = ev.best_report()
    assert best == bench.find_best("ninapro", "ori-test", "200")


def test_tabular_evaluator_random_seed_picks_one_run(store2):
    from nb360.tabular import create

    bench = create(store2)
    ev = TabularEvaluator(bench, "ninapro", "12", "ori-test", seed_mode="random")
    codes, rng = bench.space.to_codes(3), random.Random(1)
    runs = {bench.simulate_train_eval(3, "ninapro", "12", "ori-test", iepoch=3, seed=s)[::2] for s in (777, 888)}
    seen = {tuple(ev.evaluate(codes, 4, rng)) for _ in range(50)}
    assert seen == runs  # both runs, and nothing else


def test_product_space_adapter():
    from nb360.spaces import get_space

    space = product_space(get_space("tss"))
    rng = random.Random(0)
    arch = space.sample(rng)
    child = space.mutate(arch, rng)
    assert sum(a != b for a, b in zip(arch, child)) == 1
    assert space.decode(space.encode(arch)) == arch and space.decode((9, 0, 0, 0, 0, 0)) is None
    assert space.to_string(arch) == get_space("tss").format(arch)
    partial = CodesSpace((5,) * 6, members=[(0,) * 6, (1,) + (0,) * 5, (4,) * 6])
    assert {partial.sample(rng) for _ in range(100)} == set(partial._valid)
    assert partial.mutate((0,) * 6, rng) == (1,) + (0,) * 5  # the only valid neighbour


def test_cli_end_to_end(store, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--benchmark", str(store), "--task", "ninapro", "--budget_seconds", "20", "--runs", "6", "--no_progress"]
    assert main(["--algo", "rea", "random", "bohb", *args, "--out", str(out), "--report_every", "2"]) == 0
    for algo in ("rea", "random", "bohb"):
        record = json.loads((out / algo / "results.json").read_text())
        data = np.load(out / algo / "trajectory.npz")
        assert record["hp"] == "12" and record["report_hp"] == "200" and record["runs"] == 6
        assert np.isclose(record["final"]["value_mean"], np.mean(data["final_value"]))
        best = record["table_best"]["value"]
        assert np.isclose(record["final"]["regret_mean"], np.mean(np.abs(best - data["final_value"])))
        assert (out / algo / "trajectory.png").stat().st_size > 1000
        assert data["value"].shape == (6, 10) and record["trajectory"]["time"] == [2.0 * k for k in range(1, 11)]
        assert (out / algo / "trajectory.csv").read_text().startswith("time,value_mean,value_std")
    assert (out / "compare.png").is_file()
    assert "rea: final accuracy" in capsys.readouterr().out
    assert main(["--compare", str(out / "rea"), str(out / "random"), "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp" / "compare.png").is_file()
    # one algorithm writes into --out itself; the 200-epoch hp can also be the search protocol
    assert main(["--algo", "hyperband", *args, "--hp", "200", "--out", str(tmp_path / "hb"), "--min_budget", "1"]) == 0
    assert json.loads((tmp_path / "hb" / "results.json").read_text())["epochs"] == 3


def test_cli_darcy_is_lower_is_better(tmp_path):
    store = _store(tmp_path / "darcy.nb360", archs=30, dataset="darcyflow")
    out = tmp_path / "out"
    argv = ["--algo", "rea", "--benchmark", str(store), "--task", "darcy", "--budget_seconds", "15", "--runs", "4"]
    assert main([*argv, "--no_progress", "--out", str(out)]) == 0
    record = json.loads((out / "results.json").read_text())
    assert record["dataset"] == "darcyflow" and record["lower_is_better"] and record["metric"] == "relative_l2"
    from nb360.tabular import create

    scores = create(store).scores("darcyflow", "200", "ori-test")
    assert record["table_best"]["value"] == np.nanmin(scores)
    final = np.array(record["per_run"]["final_value"])
    assert np.all(final >= np.nanmin(scores)) and np.isclose(record["final"]["regret_mean"], np.mean(final - np.nanmin(scores)))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--algo", "nope"], "unknown algorithm 'nope'"),
        (["--algo", "rea", "--hp", "7"], "unknown hp '7'"),
        (["--algo", "rea", "--budget_seconds", "0"], "--budget_seconds must be positive"),
        (["--algo", "rea", "--task", "cifar"], "task 'cifar' is not in this benchmark; it holds: ninapro"),
        (["--algo", "rea", "--benchmark", "/nonexistent/store"], "does not exist"),
    ],
)
def test_cli_bad_input_is_one_line(store, tmp_path, capsys, extra, message):
    base = {"--benchmark": str(store), "--task": "ninapro", "--budget_seconds": "10"}
    for i in range(0, len(extra), 2):
        base[extra[i]] = extra[i + 1]
    argv = [x for kv in base.items() for x in kv] + ["--runs", "2", "--no_progress", "--out", str(tmp_path)]
    assert main(argv) != 0
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cli_imports_no_torch():
    code = "import sys, nb360.search.tabular, nb360.search.multitrial.runner; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
