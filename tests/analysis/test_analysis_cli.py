"""``python -m nb360.analysis nb201`` on stores: the right scores, directions and files, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from nb360.analysis.__main__ import main
from nb360.spaces.nb201 import TOPOLOGY
from nb360.tabular import RunRecord, ScoreRule, StoreBuilder

A = len(TOPOLOGY)


def write_store(path: Path, dataset: str, values: np.ndarray, rule: ScoreRule, hps: tuple[str, ...] = ("1",)) -> None:
    builder = StoreBuilder("nb201", score={dataset: rule})
    for hp in hps:
        for i in range(A):
            one = np.array([values[i]])
            builder.add(
                RunRecord(
                    i, dataset, hp, 777, 1, train={"loss": one}, evals={"ori-test": {rule.column: one}}, params=1.0, flops=1.0
                )
            )
    builder.write(path)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    root = tmp_path_factory.mktemp("stores")
    rng = np.random.default_rng(0)
    weights = np.array([0.0, 1.0, 1.5, 2.5, 0.5])  # an additive quality per operation
    quality = weights[TOPOLOGY.codes_array].sum(axis=1)
    accuracy = 60 + 5 * quality + rng.normal(0, 1, A)
    error = 0.5 - 0.05 * quality + rng.normal(0, 0.05, A)
    write_store(root / "acc.nb360", "ninapro", accuracy, ScoreRule("acc1", "accuracy", "%", False))
    write_store(root / "err.nb360", "darcyflow", error, ScoreRule("loss", "relative_l2", "fraction", True), hps=("1", "2"))
    return root / "acc.nb360", root / "err.nb360", accuracy, error


def test_report_from_two_stores(tmp_path: Path, stores, capsys) -> None:
    acc, err, accuracy, error = stores
    assert main(["nb201", "--store", str(acc), "--store", str(err), "--hp", "1", "-o", str(tmp_path)]) == 0
    table = json.loads((tmp_path / "correlations.json").read_text())
    tau = table["kendall_tau_b"][0][1]
    # the error is lower-is-better: its ranking agrees with the accuracy's after negation
    assert tau == pytest.approx(stats.kendalltau(accuracy, -error).statistic)
    assert tau > 0.5
    for name in ("rankings.png", "correlation.png", "op_importance.png", "op_importance.json", "inputs.json"):
        assert (tmp_path / name).stat().st_size > 0
    inputs = json.loads((tmp_path / "inputs.json").read_text())
    assert inputs["darcyflow"]["score"]["lower_is_better"] and inputs["ninapro"]["hp"] == "1"
    importance = json.loads((tmp_path / "op_importance.json").read_text())["tasks"]["ninapro"]["summary"]
    assert importance["c3"]["median"] == pytest.approx(5 * 2.5, abs=1.5)  # conv 3x3 adds 5 x 2.5 points on average


def test_ambiguous_budget_is_a_one_line_error(tmp_path: Path, stores, capsys) -> None:
    _, err, _, _ = stores
    assert main(["nb201", "--store", str(err), "-o", str(tmp_path)]) == 2
    message = capsys.readouterr().err.strip()
    assert "several hps (1, 2); choose one with --hp" in message
    assert "\n" not in message
