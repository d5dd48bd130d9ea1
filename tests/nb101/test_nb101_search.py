"""Multi-trial search on NB101: the encoding space, the evaluator, random search and REA on a synthetic store."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from nb360.nb101.api import NB101Benchmark
from nb360.nb101.search_space import EDGES, NB101Evaluator, NB101SearchSpace, encoding_spec, spec_encoding
from nb360.nb101.space import NB101
from nb360.nb101.store import Budget, write_store
from nb360.search.multitrial import ALGORITHMS

SMALL = 2532  # the cells with at most 5 vertices come first in the index order


def synthetic(index: np.ndarray) -> np.ndarray:
    """A score with one best cell: conv3x3 count, then edges, then a fixed per-cell jitter."""
    out = []
    for i in index.tolist():
        spec = NB101.spec(i)
        jitter = (i * 7919 % 1000) / 1e7
        out.append(0.8 + 0.02 * spec.ops.count("conv3x3-bn-relu") + 0.005 * spec.num_edges + jitter)
    return np.array(out)


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> NB101Benchmark:
    index = np.arange(SMALL)
    acc = synthetic(index)
    R = len(index)
    noise = np.random.default_rng(0).normal(0, 1e-9, (2, 3, R))
    budgets = {}
    for epochs in (4, 12, 36, 108):
        values = np.broadcast_to(acc * (epochs / 108), (2, 3, R)) + noise
        times = np.broadcast_to(np.array([50.0, 100.0])[:, None, None] * epochs / 108, (2, 3, R)).copy()
        budgets[epochs] = Budget(index, values, values, values, times, np.full(R, 1e6))
    path = write_store(Path(tmp_path_factory.mktemp("nb101")) / "synthetic.nb360", budgets)
    return NB101Benchmark(path, seed=0)


def test_encodings() -> None:
    space = NB101SearchSpace()
    rng = random.Random(0)
    assert space.radices == (2,) * 21 + (3,) * 5 and len(EDGES) == 21
    for _ in range(50):
        arch = space.sample(rng)
        assert space.decode(space.encode(arch)) == arch and encoding_spec(arch).is_valid()
        child = space.mutate(arch, rng)
        assert child != arch and encoding_spec(child).is_valid()
        cell = NB101.index(encoding_spec(arch))
        assert NB101.index(encoding_spec(spec_encoding(NB101.spec(cell)))) == cell
    assert space.decode((0,) * 26) is None  # no edge: IN and OUT disconnected
    assert space.decode((1,) * 21 + (0,) * 5) is None  # 21 edges
    assert space.decode((2,) + (0,) * 25) is None


def test_mutation_rates_follow_the_colab() -> None:
    space, rng = NB101SearchSpace(), random.Random(1)
    parent = space.sample(rng)
    flips = np.zeros(26)
    n = 3000
    for _ in range(n):
        flips += np.array(space.mutate(parent, rng)) != np.array(parent)
    # each edge flips with probability about 1/7 and each op changes with about 1/5 (validity retries bias it a little)
    assert 0.08 < flips[:21].mean() / n < 0.25 and 0.12 < flips[21:].mean() / n < 0.3


def test_random_search_and_rea(bench: NB101Benchmark) -> None:
    evaluator = NB101Evaluator(bench)
    space = evaluator.space()
    best_index, best_value = evaluator.best_report()
    assert best_index == int(np.argmax(synthetic(np.arange(SMALL))))
    history = ALGORITHMS["random"](space, evaluator, 100.0 * 20, random.Random(0))
    assert len(history) == 20 and history.total == pytest.approx(2000.0)
    assert all(evaluator.index(a) < SMALL for a in history.archs)
    found = 0
    for seed in range(3):
        history = ALGORITHMS["rea"](space, evaluator, 100.0 * 400, random.Random(seed), population_size=20, sample_size=5)
        found += evaluator.index(history.best_arch) == best_index
        assert evaluator.report(history.best_arch) == pytest.approx(max(evaluator.report(a) for a in history.archs))
    assert found >= 2
    # budgets are the data's epochs; the cost is that run's training time
    arch = history.archs[0]
    assert evaluator.evaluate(arch, 12, random.Random(0)).cost == pytest.approx(100.0 * 12 / 108)
    with pytest.raises(Exception, match="budget 50"):
        evaluator.evaluate(arch, 50, random.Random(0))


@pytest.mark.parametrize("name", ["hyperband", "bohb"])
def test_multi_fidelity_on_the_data_budgets(bench: NB101Benchmark, name: str) -> None:
    evaluator = NB101Evaluator(bench)
    history = ALGORITHMS[name](evaluator.space(), evaluator, 100.0 * 60, random.Random(0), min_budget=4, eta=3)
    assert set(history.budgets) <= {4, 12, 36, 108} and 4 in history.budgets
    assert history.total == pytest.approx(sum(100.0 * b / 108 for b in history.budgets))


def test_the_tabular_search_cli_runs_on_an_nb101_store(bench: NB101Benchmark, tmp_path: Path, capsys) -> None:
    import json

    from nb360.search.tabular import main

    out = tmp_path / "out"
    args = ["--algo", "rea", "random", "--benchmark", str(bench.store.path), "--budget_seconds", "3000", "--runs", "4"]
    assert main([*args, "--report_every", "500", "--out", str(out), "--no_progress"]) == 0
    assert "rea: final validation_accuracy" in capsys.readouterr().out
    results = json.loads((out / "rea" / "results.json").read_text())
    best = float(np.max(synthetic(np.arange(SMALL))))  # the synthetic table's best test accuracy, computed independently
    assert results["space"] == "nb101" and results["table_best"]["value"] == pytest.approx(best, abs=1e-6)
    final = results["final"]
    assert final["value_mean"] <= best + 1e-6 and final["regret_mean"] == pytest.approx(best - final["value_mean"], abs=1e-6)
    assert (out / "compare.png").stat().st_size > 0
