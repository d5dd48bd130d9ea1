"""The NB201 analyses against independent computations: brute-force τ/ρ, synthetic scores with known importances."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from nb360.analysis import nb201 as A
from nb360.errors import UsageError
from nb360.spaces.nb201 import OPS, TOPOLOGY

CODES = TOPOLOGY.codes_array.astype(np.int64)
N = len(CODES)


# --- independent references -------------------------------------------------------------------
def brute_kendall_b(x, y) -> float:
    """τ-b by counting all pairs: (concordant - discordant) / sqrt((n0 - ties_x) (n0 - ties_y))."""
    c = d = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx, sy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        c += sx * sy > 0
        d += sx * sy < 0
        tx += sx == 0
        ty += sy == 0
    n0 = len(x) * (len(x) - 1) / 2
    return (c - d) / math.sqrt((n0 - tx) * (n0 - ty))


def brute_ranks(x) -> np.ndarray:
    """Rank 1 = largest, ties averaged: 1 + #greater + (#equal - 1) / 2."""
    x = np.asarray(x, dtype=float)
    return np.array([1 + (x > v).sum() + ((x == v).sum() - 1) / 2 for v in x])


def brute_spearman(x, y) -> float:
    return float(np.corrcoef(brute_ranks(x), brute_ranks(y))[0, 1])


A8 = np.array([3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0, 6.0])
B8 = np.array([2.0, 7.0, 1.0, 8.0, 2.0, 8.0, 1.0, 8.0])  # ties
ERR8 = np.array([0.3, 0.1, 0.2, 0.5, 0.1, 0.05, 0.4, 0.2])  # an error: lower is better, ties


# --- ranks and correlations ---------------------------------------------------------------------
def test_ranks_best_first_ties_averaged_nan_kept():
    score = np.array([3.0, 1.0, 2.0, 2.0, np.nan])
    np.testing.assert_array_equal(A.ranks(score, False), [1.0, 4.0, 2.5, 2.5, np.nan])
    np.testing.assert_array_equal(A.ranks(score, True), [4.0, 1.0, 2.5, 2.5, np.nan])


def test_hand_computed_tau_and_rho():
    # 5 of 6 pairs concordant: τ = (5 - 1) / 6; ρ = 1 - 6 Σd² / (n (n² - 1)) = 1 - 12 / 60
    table = A.rank_correlations({"x": np.array([1.0, 2, 3, 4]), "y": np.array([1.0, 3, 2, 4])}, {"x": False, "y": False})
    assert table.tau("x", "y") == pytest.approx(2 / 3)
    assert table.rho("y", "x") == pytest.approx(0.8)
    assert table.tau("x", "x") == pytest.approx(1.0)
    np.testing.assert_array_equal(table.counts, [[4, 4], [4, 4]])


def test_tau_b_and_rho_match_brute_force_with_ties_and_directions():
    table = A.rank_correlations({"a": A8, "b": B8, "err": ERR8}, {"a": False, "b": False, "err": True})
    assert table.tasks == ("a", "b", "err")
    for p, q, y, z in [("a", "b", A8, B8), ("a", "err", A8, -ERR8), ("b", "err", B8, -ERR8)]:
        assert table.tau(p, q) == pytest.approx(brute_kendall_b(y, z)), (p, q)
        assert table.tau(q, p) == pytest.approx(brute_kendall_b(y, z))
        assert table.rho(p, q) == pytest.approx(brute_spearman(y, z)), (p, q)
    np.testing.assert_allclose(table.kendall, table.kendall.T)


def test_direction_flag_equals_negating_the_score():
    flagged = A.rank_correlations({"a": A8, "err": ERR8}, {"a": False, "err": True})
    negated = A.rank_correlations({"a": A8, "err": -ERR8}, {"a": False, "err": False})
    np.testing.assert_allclose(flagged.kendall, negated.kendall)
    np.testing.assert_allclose(flagged.spearman, negated.spearman)
    wrong = A.rank_correlations({"a": A8, "err": ERR8}, {"a": False, "err": False})
    assert wrong.tau("a", "err") == pytest.approx(-flagged.tau("a", "err"))
    # an error that is exactly the negated accuracy agrees perfectly once oriented
    assert A.rank_correlations({"a": A8, "e": -A8}, {"a": False, "e": True}).tau("a", "e") == pytest.approx(1.0)


def test_only_jointly_evaluated_architectures_count():
    a, b = A8.copy(), B8.copy()
    a[[0, 5]] = np.nan
    b[[1, 5]] = np.nan
    table = A.rank_correlations({"a": a, "b": b}, {"a": False, "b": False})
    joint = [2, 3, 4, 6, 7]
    assert table.counts.tolist() == [[6, 5], [5, 6]]
    assert table.tau("a", "b") == pytest.approx(brute_kendall_b(A8[joint], B8[joint]))
    assert table.rho("a", "b") == pytest.approx(brute_spearman(A8[joint], B8[joint]))


def test_top_fraction_uses_the_row_tasks_best():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=10), rng.normal(size=10)
    table = A.rank_correlations({"x": x, "y": y}, {"x": False, "y": False}, top=0.3)
    best_x, best_y = np.argsort(-x)[:3], np.argsort(-y)[:3]
    assert table.tau("x", "y") == pytest.approx(brute_kendall_b(x[best_x], y[best_x]))
    assert table.tau("y", "x") == pytest.approx(brute_kendall_b(y[best_y], x[best_y]))
    assert table.rho("x", "y") == pytest.approx(brute_spearman(x[best_x], y[best_x]))
    assert table.counts[0, 1] == 3 and table.top == 0.3
    # lower is better: the top fraction is the *smallest* values
    low = A.rank_correlations({"x": -x, "y": y}, {"x": True, "y": False}, top=0.3)
    assert low.tau("x", "y") == pytest.approx(table.tau("x", "y"))
    # a tie at the cut is kept whole: ceil(0.25 * 8) = 2, but the 2nd and 3rd best tie
    tied = A.rank_correlations({"t": np.array([9.0, 8, 8, 1, 2, 3, 4, 5]), "u": A8}, {"t": False, "u": False}, top=0.25)
    assert tied.counts[0, 1] == 3
    with pytest.raises(UsageError):
        A.rank_correlations({"x": x}, {"x": False}, top=0.0)


def test_undefined_pairs_are_nan_and_serialise_as_null():
    table = A.rank_correlations({"a": A8, "const": np.ones(8)}, {"a": False, "const": False})
    assert math.isnan(table.tau("a", "const"))
    data = json.loads(table.to_json())
    assert data["tasks"] == ["a", "const"] and data["kendall_tau_b"][0][1] is None
    assert data["counts"] == [[8, 8], [8, 8]] and data["lower_is_better"] == {"a": False, "const": False}
    markdown = table.to_markdown()
    assert "| a | 1.000 | – |" in markdown and "Spearman ρ" in markdown


def test_input_errors():
    with pytest.raises(UsageError, match="direction"):
        A.rank_correlations({"a": A8}, {})
    with pytest.raises(ValueError, match="sizes"):
        A.rank_correlations({"a": A8, "b": A8[:4]}, {"a": False, "b": False})


# --- operation importance -----------------------------------------------------------------------
def loop_edge_deltas(score: np.ndarray) -> np.ndarray:
    """Reference for edge_deltas: a dict from code tuples to indices, one Python look-up per (a, e)."""
    index = {tuple(row): i for i, row in enumerate(CODES.tolist())}
    out = np.full(CODES.shape, np.nan)
    for a, row in enumerate(CODES.tolist()):
        for e, code in enumerate(row):
            if code != 0:
                out[a, e] = score[a] - score[index[(*row[:e], 0, *row[e + 1 :])]]
    return out


def test_none_substitution_index_sets_exactly_one_edge_to_none():
    sub = A.none_substitution_index()
    expected = np.repeat(CODES[:, None, :], 6, axis=1)
    expected[:, np.arange(6), np.arange(6)] = 0
    np.testing.assert_array_equal(CODES[sub], expected)
    with pytest.raises(ValueError, match="whole space"):
        A.none_substitution_index(CODES[CODES[:, 0] != 0])
    with pytest.raises(ValueError, match="more than once"):
        A.none_substitution_index(np.concatenate([CODES, CODES[:1]]))


def test_edge_deltas_match_a_python_loop_with_missing_scores():
    rng = np.random.default_rng(0)
    score = rng.random(N)
    score[rng.random(N) < 0.1] = np.nan
    np.testing.assert_array_equal(A.edge_deltas(score, False), loop_edge_deltas(score))
    np.testing.assert_array_equal(A.edge_deltas(score, True), -loop_edge_deltas(score))


def test_additive_score_gives_each_op_exactly_its_weight():
    w = np.array([0.3, 1.7, -0.4, 2.2, 0.9])  # per op, in OPS order
    score = w[CODES].sum(axis=1)
    for scores, lower in ((score, False), (-score, True)):
        importance = A.operation_importance(scores, lower)
        assert list(importance) == ["c1", "c3", "skip", "ap3"]
        for short, name in A.OP_NAMES.items():
            samples = importance[short]
            assert samples.size == N * 6 // 5  # every edge carries each op in a fifth of the cells
            np.testing.assert_allclose(samples, w[OPS.index(name)] - w[0], atol=1e-12)
    # read as an error instead, every importance flips sign
    flipped = A.operation_importance(score, True)
    np.testing.assert_allclose(flipped["c1"], -(w[2] - w[0]), atol=1e-12)


def test_only_output_edges_matter():
    w = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    score = w[CODES[:, 3:]].sum(axis=1)  # edges 0->3, 1->3, 2->3 (EDGES[3:])
    for short, name in A.OP_NAMES.items():
        samples = A.operation_importance(score, False)[short]
        weight = w[OPS.index(name)]
        assert (samples == weight).sum() == N * 3 // 5 and (samples == 0).sum() == N * 3 // 5, short
        summary = A.importance_summary({short: samples})[short]
        assert summary["frac_positive"] == pytest.approx(0.5) and summary["frac_negative"] == 0.0
        assert summary["median"] == pytest.approx(weight / 2)


def test_missing_scores_are_dropped_from_importance():
    w = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    score = w[CODES].sum(axis=1)
    score[::7] = np.nan
    importance = A.operation_importance(score, False)
    reference = loop_edge_deltas(score)
    for short, name in A.OP_NAMES.items():
        assert importance[short].size == np.isfinite(reference[CODES == OPS.index(name)]).sum()
        np.testing.assert_allclose(importance[short], w[OPS.index(name)])


def test_importance_summary_on_known_values():
    summary = A.importance_summary({"c1": np.array([-1.0, 0.0, 1.0, 2.0]), "c3": np.array([])})
    assert summary["c1"] == pytest.approx(
        {"n": 4, "median": 0.5, "mean": 0.5, "q25": -0.25, "q75": 1.25, "iqr": 1.5, "frac_positive": 0.5, "frac_negative": 0.25}
    )
    assert summary["c3"]["n"] == 0 and math.isnan(summary["c3"]["median"])


# --- plots and the report -----------------------------------------------------------------------
def synthetic_tasks() -> tuple[dict[str, np.ndarray], dict[str, bool]]:
    rng = np.random.default_rng(2)
    quality = np.array([0.0, 1.0, 1.5, 2.5, 0.5])[CODES].sum(axis=1)
    darcy = 0.1 - 0.01 * quality + rng.normal(0, 0.01, N)
    darcy[rng.random(N) < 0.05] = np.nan
    scores = {"cifar10": 60 + 5 * quality + rng.normal(0, 3, N), "ninapro": 50 + rng.normal(0, 5, N), "darcy": darcy}
    return scores, {"cifar10": False, "ninapro": False, "darcy": True}


def is_png(path) -> bool:
    return path.stat().st_size > 1000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def is_svg(path) -> bool:
    return path.stat().st_size > 1000 and "<svg" in path.read_text(encoding="utf-8")


def test_plots_as_svg(tmp_path):
    rng = np.random.default_rng(3)
    scores = {"a": rng.normal(size=200), "b": rng.normal(size=200), "err": rng.random(200)}
    directions = {"a": False, "b": False, "err": True}
    assert is_svg(A.plot_rankings(scores, directions, "b", tmp_path / "r.svg"))
    table = A.rank_correlations(scores, directions, top=0.5)
    assert is_svg(A.plot_correlation_matrix(table, tmp_path / "sub" / "c.svg"))
    per_task = {t: {op: rng.normal(size=50) for op in A.OP_NAMES} for t in "wxyz"}
    per_task["z"]["ap3"] = np.array([])
    assert is_svg(A.plot_operation_importance(per_task, tmp_path / "i.svg"))
    with pytest.raises(UsageError, match="reference"):
        A.plot_rankings(scores, directions, "nope", tmp_path / "r2.png")
    with pytest.raises(UsageError, match="must end in"):
        A.plot_correlation_matrix(table, tmp_path / "c.jpeg")


def test_write_report(tmp_path):
    scores, directions = synthetic_tasks()
    paths = A.write_report(scores, directions, tmp_path / "report", top=0.1)
    names = [p.name for p in paths]
    assert names == [
        "correlations.json", "correlations.md", "correlations_top10.json", "correlations_top10.md",
        "rankings.png", "correlation.png", "op_importance.json", "op_importance.png",
    ]  # fmt: skip
    assert all(is_png(p) for p in paths if p.suffix == ".png")
    correlations = json.loads((tmp_path / "report" / "correlations.json").read_text())
    assert correlations["tasks"] == ["cifar10", "ninapro", "darcy"]
    assert correlations["kendall_tau_b"][0][2] > 0.3  # darcy agrees with cifar10 once oriented
    assert json.loads((tmp_path / "report" / "correlations_top10.json").read_text())["top"] == 0.1
    importance = json.loads((tmp_path / "report" / "op_importance.json").read_text())
    assert importance["ops"] == A.OP_NAMES
    cifar = importance["tasks"]["cifar10"]["summary"]
    assert cifar["c3"]["median"] == pytest.approx(12.5, abs=0.3) and cifar["skip"]["median"] == pytest.approx(5, abs=0.3)
    assert importance["tasks"]["darcy"]["summary"]["c3"]["median"] > 0  # oriented: lower error = positive
    with pytest.raises(UsageError, match="image format"):
        A.write_report(scores, directions, tmp_path / "x", image_format="gif")


def test_import_is_light():
    code = "import sys, nb360.analysis.nb201; print(sorted({'torch', 'matplotlib', 'scipy'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
