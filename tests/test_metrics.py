"""Every NB360 metric against an independent numpy/scipy computation written here, on random and hand-made cases."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from nb360.metrics import (
    ContactMAE,
    FalseNegativeRate,
    OneMinusAUROC,
    OneMinusMAP,
    OneMinusThresholdedAUROC,
    OneMinusVotedF1,
    RelativeL2,
    ZeroOneError,
    build_metric,
)

rng = np.random.default_rng(1234)


def run(metric, *batches):
    for preds, target, extras in batches:
        metric.update(torch.as_tensor(preds), torch.as_tensor(target), **{k: torch.as_tensor(v) for k, v in extras.items()})
    return float(metric.compute())


def split(n: int, parts: int = 3) -> list[slice]:
    edges = np.linspace(0, n, parts + 1).astype(int)
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


# ---------------------------------------------------------------- independent references
def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    """Step-wise AP, sum_n (R_n - R_{n-1}) P_n over distinct thresholds (sklearn's definition)."""
    order = np.argsort(-s, kind="mergesort")
    y, s = y[order], s[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(y) - 1]
    tps = np.cumsum(y)[last]
    precision = tps / (last + 1)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def auroc(y: np.ndarray, s: np.ndarray) -> float:
    """Mann-Whitney U with average ranks for ties."""
    ranks = rankdata(s)
    pos = y == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


# ---------------------------------------------------------------- 0-1 error
def test_zero_one_error_random_batches():
    logits, labels = rng.standard_normal((50, 7)), rng.integers(0, 7, 50)
    expected = 100 * np.mean(logits.argmax(1) != labels)
    got = run(ZeroOneError(), *[(logits[s], labels[s], {}) for s in split(50)])
    assert got == pytest.approx(expected)


def test_zero_one_error_hand_made():
    logits = [[2.0, 1.0], [0.0, 3.0], [1.0, 0.5], [0.1, 0.2]]
    assert run(ZeroOneError(), (logits, [0, 1, 1, 0], {})) == pytest.approx(50.0)


# ---------------------------------------------------------------- 1 - mAP
def test_map_random_matches_stepwise_average_precision():
    logits, targets = rng.standard_normal((40, 5)), rng.integers(0, 2, (40, 5))
    targets[0] = 1  # every label has a positive
    expected = 1 - np.mean([average_precision(targets[:, j], sigmoid(logits[:, j])) for j in range(5)])
    got = run(OneMinusMAP(), *[(logits[s], targets[s], {}) for s in split(40)])
    assert got == pytest.approx(expected, abs=1e-6)


def test_map_hand_made_with_ties():
    scores = np.array([[0.9], [0.8], [0.8], [0.1]])
    target = np.array([[1], [0], [1], [0]])
    # thresholds 0.9: P=1, R=.5 ; 0.8: P=2/3, R=1 -> AP = .5*1 + .5*2/3
    logits = np.log(scores / (1 - scores))
    assert run(OneMinusMAP(), (logits, target, {})) == pytest.approx(1 - (0.5 + 0.5 * 2 / 3), abs=1e-6)


def test_map_leaves_out_labels_without_positives():
    logits, targets = rng.standard_normal((30, 4)), rng.integers(0, 2, (30, 4))
    targets[:, 2] = 0
    targets[0, [0, 1, 3]] = 1
    expected = 1 - np.mean([average_precision(targets[:, j], sigmoid(logits[:, j])) for j in (0, 1, 3)])
    with pytest.warns(UserWarning, match="1 labels have no positive"):
        assert run(OneMinusMAP(), (logits, targets, {})) == pytest.approx(expected, abs=1e-6)


def test_map_clip_level_averages_logits_before_the_sigmoid():
    # 3 clips with 3, 1 and 2 chunks; the clip score is sigmoid(mean of chunk logits)
    chunk_logits = np.array([[4.0, -1.0], [-2.0, 0.5], [-1.0, 0.0], [0.3, 2.0], [1.0, -3.0], [-3.0, -1.0]])
    clip = np.array([7, 7, 7, 2, 5, 5])
    clip_target = {7: [1, 0], 2: [0, 1], 5: [1, 1]}
    chunk_target = np.array([clip_target[c] for c in clip])
    clips = [7, 2, 5]
    clip_scores = np.array([sigmoid(chunk_logits[clip == c].mean(0)) for c in clips])
    clip_truth = np.array([clip_target[c] for c in clips])
    expected = 1 - np.mean([average_precision(clip_truth[:, j], clip_scores[:, j]) for j in range(2)])
    # chunk order is shuffled and split over batches: the result must not depend on it
    order = np.array([3, 0, 5, 1, 4, 2])
    batches = [(chunk_logits[order][s], chunk_target[order][s], {"clip": clip[order][s]}) for s in split(6, 2)]
    assert run(OneMinusMAP(), *batches) == pytest.approx(expected, abs=1e-6)
    # averaging probabilities instead of logits gives a different value on this case
    wrong = np.array([sigmoid(chunk_logits[clip == c]).mean(0) for c in clips])
    assert not np.allclose(wrong, clip_scores)


# ---------------------------------------------------------------- relative l2
def test_relative_l2_per_sample_mean():
    preds, target = rng.standard_normal((9, 1, 5, 5)), rng.standard_normal((9, 1, 5, 5))
    per_sample = [np.linalg.norm(preds[i] - target[i]) / np.linalg.norm(target[i]) for i in range(9)]
    got = run(RelativeL2(), *[(preds[s], target[s], {}) for s in split(9, 2)])
    assert got == pytest.approx(np.mean(per_sample))


def test_relative_l2_batch_aggregation_reproduces_the_reference_mean_of_batch_means():
    preds, target = rng.standard_normal((10, 4, 4)), rng.standard_normal((10, 4, 4)) + 2
    per_sample = np.array([np.linalg.norm(preds[i] - target[i]) / np.linalg.norm(target[i]) for i in range(10)])
    batches = [slice(0, 8), slice(8, 10)]
    got = run(RelativeL2(aggregation="batch"), *[(preds[s], target[s], {}) for s in batches])
    assert got == pytest.approx(np.mean([per_sample[s].mean() for s in batches]))
    assert got != pytest.approx(per_sample.mean())


def test_relative_l2_uses_decoded_units_with_a_pointwise_normaliser():
    from nb360.datamodules.darcy import PointwiseGaussian

    u_train = rng.random((20, 6, 6)) * 0.02
    u_test = rng.random((5, 6, 6)) * 0.02
    mean, std = u_train.mean(0), u_train.std(0, ddof=1)
    encoded_prediction = rng.standard_normal((5, 6, 6))
    physical = encoded_prediction * (std + 1e-5) + mean
    expected = np.mean([np.linalg.norm(physical[i] - u_test[i]) / np.linalg.norm(u_test[i]) for i in range(5)])
    decoder = PointwiseGaussian.fit(torch.tensor(u_train))
    decoded = decoder(torch.tensor(encoded_prediction))
    assert run(RelativeL2(), (decoded, u_test, {})) == pytest.approx(expected)


# ---------------------------------------------------------------- MAE_8 (PSICOV)
def reference_mae(pred: np.ndarray, true: np.ndarray, length: int, sep: int = 24, cutoff: float = 8.0) -> float:
    """The reference evaluation transcribed: triangle average, clamp, average again, then the pair loops."""
    p = pred.copy()
    n = p.shape[0]
    for j in range(n):
        for k in range(j, n):
            p[j, k] = (p[k, j] + p[j, k]) / 2.0
    p[p < 0.01] = 0.01
    pavg = np.full((length, length), 100.0)
    for j in range(length):
        for k in range(j, length):
            pavg[j, k] = (p[k, j] + p[j, k]) / 2.0
    y, q = true[:length, :length].copy(), pavg
    errors = [abs(y[a, b] - q[a, b]) for a in range(length) for b in range(length) if b - a >= sep and y[a, b] <= cutoff]
    return float(np.mean(errors)) if errors else float("nan")


def toy_protein(length: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    true = rng.uniform(3, 20, (size, size))
    true = (true + true.T) / 2
    true[0, 25:28] = [4.0, 7.5, 8.5]  # some long-range pairs within 8 A
    pred = rng.uniform(-1, 20, (size, size))
    return pred, true


def test_mae8_matches_the_reference_loops_per_protein_then_mean():
    proteins = [toy_protein(30, 32), toy_protein(28, 32), toy_protein(20, 32)]  # the last has no pair with sep >= 24
    lengths = [30, 28, 20]
    per_protein = [reference_mae(p, t, n) for (p, t), n in zip(proteins, lengths)]
    assert np.isnan(per_protein[2])
    expected = np.nanmean(per_protein)
    preds = np.stack([p for p, _ in proteins])[:, None]
    trues = np.stack([t for _, t in proteins])[:, None]
    got = run(ContactMAE(), (preds[:2], trues[:2], {"length": lengths[:2]}), (preds[2:], trues[2:], {"length": lengths[2:]}))
    assert got == pytest.approx(expected)


def test_mae8_hand_made_30x30():
    length = 30
    true = np.full((length, length), 20.0)
    pred = np.full((length, length), 20.0)
    true[0, 24], true[1, 29], true[2, 26] = 5.0, 8.0, 8.5  # the last is beyond the cut-off
    true[3, 10] = 4.0  # too close in sequence
    pred[0, 24], pred[24, 0] = 6.0, 6.0  # symmetric error 1
    pred[1, 29], pred[29, 1] = 5.0, 9.0  # upper 5, lower 9
    # reference: upper := (5 + 9) / 2 = 7, then (lower 9 + 7) / 2 = 8 -> error 0; "mean" symmetrisation gives 7 -> error 1
    assert run(ContactMAE(), (pred[None], true[None], {"length": [length]})) == pytest.approx((1.0 + 0.0) / 2)
    assert run(ContactMAE(symmetrize="mean"), (pred[None], true[None], {"length": [length]})) == pytest.approx(1.0)


def test_mae8_variants_use_their_separation_and_cutoff():
    pred, true = toy_protein(30, 30)
    for sep, cutoff in ((12, 8.0), (24, 12.0), (12, 12.0)):
        expected = reference_mae(pred, true, 30, sep, cutoff)
        got = run(ContactMAE(min_separation=sep, max_distance=cutoff), (pred[None], true[None], {"length": [30]}))
        assert got == pytest.approx(expected)


# ---------------------------------------------------------------- 1 - AUROC (DeepSEA)
def test_auroc_macro_over_labels():
    scores, targets = rng.standard_normal((60, 6)), rng.integers(0, 2, (60, 6))
    scores[:, 1] = np.round(scores[:, 1])  # ties
    expected = 1 - np.mean([auroc(targets[:, j], scores[:, j]) for j in range(6)])
    got = run(OneMinusAUROC(), *[(scores[s], targets[s], {}) for s in split(60)])
    assert got == pytest.approx(expected, abs=1e-6)


def test_auroc_leaves_out_single_class_labels():
    scores, targets = rng.standard_normal((20, 3)), rng.integers(0, 2, (20, 3))
    targets[:, 1] = 1
    targets[:2, [0, 2]] = [[0, 0], [1, 1]]
    expected = 1 - np.mean([auroc(targets[:, j], scores[:, j]) for j in (0, 2)])
    with pytest.warns(UserWarning, match="single class"):
        assert run(OneMinusAUROC(), (scores, targets, {})) == pytest.approx(expected, abs=1e-6)


# ---------------------------------------------------------------- Cosmic: thresholded 1 - AUROC and FNR
def test_thresholded_auroc_on_a_4x4_toy():
    logits = np.array([[0.9, 0.2, 0.6, -1.0], [0.51, 0.5, 0.0, 2.0], [-0.3, 0.7, 0.4, 0.1], [0.55, -2.0, 0.3, 0.6]])
    mask = np.array([[1, 0, 1, 0], [1, 1, 0, 1], [0, 1, 0, 0], [1, 0, 0, 0]])
    # predicted positive: logit > 0.5 (raw logits, not probabilities)
    pred = logits > 0.5
    tp, fn = np.sum(pred & (mask == 1)), np.sum(~pred & (mask == 1))
    fp, tn = np.sum(pred & (mask == 0)), np.sum(~pred & (mask == 0))
    assert (tp, fn, fp, tn) == (6, 1, 1, 8)
    fnr, fpr = fn / (tp + fn), fp / (fp + tn)
    value = run(OneMinusThresholdedAUROC(), (logits[None, None], mask[None, None], {}))
    assert value == pytest.approx((fnr + fpr) / 2)
    assert value == pytest.approx(1 - auroc(mask.ravel(), pred.ravel().astype(float)))
    assert run(FalseNegativeRate(), (logits[None, None], mask[None, None], {})) == pytest.approx(100 * 1 / 7)


def test_thresholded_auroc_ignores_the_ignore_mask_unless_asked():
    logits, mask = rng.standard_normal((2, 1, 8, 8)), rng.integers(0, 2, (2, 1, 8, 8))
    ignore = rng.integers(0, 2, (2, 1, 8, 8))
    plain = run(OneMinusThresholdedAUROC(), (logits, mask, {"ignore": ignore}))
    assert plain == pytest.approx(run(OneMinusThresholdedAUROC(), (logits, mask, {})))
    keep = ignore.ravel() == 0
    pred = (logits.ravel() > 0.5)[keep].astype(float)
    expected = 1 - auroc(mask.ravel()[keep], pred)
    assert run(OneMinusThresholdedAUROC(use_ignore_mask=True), (logits, mask, {"ignore": ignore})) == pytest.approx(expected)


# ---------------------------------------------------------------- ECG: vote + macro F1
def reference_voted_f1(window_logits: np.ndarray, labels: np.ndarray, records: np.ndarray, classes: int = 4) -> float:
    preds = window_logits.argmax(1)
    final_pred, final_true = [], []
    for r in dict.fromkeys(records):  # records in order of first appearance
        final_pred.append(Counter(preds[records == r].tolist()).most_common(1)[0][0])
        final_true.append(Counter(labels[records == r].tolist()).most_common(1)[0][0])
    final_pred, final_true = np.array(final_pred), np.array(final_true)
    f1s = []
    for c in range(classes):
        tp = np.sum((final_pred == c) & (final_true == c))
        fp = np.sum((final_pred == c) & (final_true != c))
        fn = np.sum((final_pred != c) & (final_true == c))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return 1 - float(np.mean(f1s))


def test_voted_f1_random_records():
    records = np.repeat(np.arange(25), rng.integers(1, 6, 25))
    truth = rng.integers(0, 4, 25)
    labels = truth[records]
    logits = rng.standard_normal((len(records), 4))
    expected = reference_voted_f1(logits, labels, records)
    windows = np.arange(len(records))
    got = run(OneMinusVotedF1(), *[(logits[s], labels[s], {"record": records[s], "window": windows[s]}) for s in split(len(records))])
    assert got == pytest.approx(expected)


def test_voted_f1_tie_goes_to_the_first_seen_label():
    eye = np.eye(4) * 5
    # record 0: windows predict 2, 1, 1, 2 -> tie between 2 and 1, 2 seen first
    # record 1: windows predict 3, 0 -> tie, 3 seen first
    logits = eye[[2, 1, 1, 2, 3, 0]]
    labels = np.array([2, 2, 2, 2, 0, 0])
    records = np.array([0, 0, 0, 0, 1, 1])
    # records voted 2 (true 2) and 3 (true 0): F1 per class 0:0, 1:0, 2:1, 3:0 -> mean .25
    assert reference_voted_f1(logits, labels, records) == pytest.approx(0.75)
    windows = np.arange(6)
    # delivered out of order (as DDP gathers them): window indices restore the order
    order = np.array([5, 3, 1, 0, 2, 4])
    got = run(OneMinusVotedF1(), (logits[order], labels[order], {"record": records[order], "window": windows[order]}))
    assert got == pytest.approx(0.75)


def test_metrics_are_built_by_name_with_options():
    assert isinstance(build_metric("mae8", min_separation=12), ContactMAE)
    with pytest.raises(Exception, match="unknown metric"):
        build_metric("accuracy@5")
