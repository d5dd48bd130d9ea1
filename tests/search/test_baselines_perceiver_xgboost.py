"""The Perceiver IO and XGBoost baselines: network shapes and size, Fourier features, and both methods end to end."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nb360.models import build_network, count_parameters
from nb360.models.perceiver import PerceiverIO, fourier_features, num_fourier_channels
from nb360.tasks import get_task, task_names

TINY = dict(
    num_latents=3,
    num_latent_channels=8,
    num_layers=2,
    num_self_attention_layers_per_block=1,
    num_cross_attention_heads=2,
    num_self_attention_heads=2,
    num_decoder_heads=1,
    num_frequency_bands=2,
)


@pytest.mark.parametrize("task", task_names())
def test_perceiver_output_shape_per_task(task: str) -> None:
    spec = get_task(task)
    net = build_network("perceiver", spec, **TINY)
    x = torch.randn(2, *spec.input_shape)
    with torch.no_grad():
        out = net(x)
    expected = (2, spec.num_outputs) if spec.kind == "point" else (2, spec.num_outputs, *spec.input_shape[1:])
    assert tuple(out.shape) == expected
    assert torch.isfinite(out).all()


def _ln(c: int) -> int:
    return 2 * c


def _mha(e: int, kv: int) -> int:  # q/k/v projections with biases, output projection with bias
    return e * e + 2 * e * kv + 3 * e + e * e + e


def _mlp(c: int) -> int:
    return _ln(c) + 2 * (c * c + c)


def _cross(q: int, kv: int) -> int:
    return _ln(q) + _ln(kv) + _mha(q, kv) + _mlp(q)


def _self(c: int) -> int:
    return _ln(c) + _mha(c, c) + _mlp(c)


@pytest.mark.parametrize("kind", ["point", "dense"])
@pytest.mark.parametrize("layers", [1, 3])
def test_perceiver_parameter_count_matches_formula(kind: str, layers: int) -> None:
    shape, outputs, n, c, bands, self_layers = (3, 6, 5), 7, 3, 8, 2, 2
    options = dict(num_latents=n, num_latent_channels=c, num_layers=layers, num_self_attention_layers_per_block=self_layers)
    net = PerceiverIO(shape, outputs, kind, **options, num_cross_attention_heads=2, num_self_attention_heads=2,
                      num_decoder_heads=1, num_frequency_bands=bands)  # fmt: skip
    pos = num_fourier_channels(2, bands)  # 2 * (2 * 2 + 1) = 10
    encoder_layer = _cross(c, shape[0] + pos) + self_layers * _self(c)
    encoder = n * c + min(layers, 2) * encoder_layer  # layers 2.. share one set of weights
    if kind == "point":
        decoder = c + _cross(c, c) + c * outputs + outputs
    else:  # queries are the (fixed) Fourier features of the output positions
        decoder = _cross(pos, c) + pos * outputs + outputs
    assert count_parameters(net) == encoder + decoder


def test_perceiver_follows_the_input_size() -> None:
    dense = build_network("perceiver", get_task("darcy"), **TINY)
    assert tuple(dense(torch.randn(2, 3, 5, 7)).shape) == (2, 1, 5, 7)
    point = build_network("perceiver", get_task("ecg"), **TINY)
    assert tuple(point(torch.randn(2, 1, 200)).shape) == (2, 4)


def test_perceiver_dense_single_query_variant() -> None:
    net = PerceiverIO((2, 4, 4), 1, "dense", dense_queries="single", **TINY)
    assert tuple(net(torch.randn(3, 2, 4, 4)).shape) == (3, 1, 4, 4)
    assert net.head.out_features == 16
    with pytest.raises(ValueError, match="built for inputs of size"):
        net(torch.randn(1, 2, 5, 5))


def _numpy_fourier(shape: tuple[int, ...], bands: int, resolution: tuple[int, ...]) -> np.ndarray:
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    rows = []
    for index in np.ndindex(*shape):
        pos = [g[index] for g in grids]
        sines, cosines = [], []
        for d, p in enumerate(pos):
            freqs = np.linspace(1.0, resolution[d] / 2.0, bands)
            sines += list(np.sin(np.pi * freqs * p))
            cosines += list(np.cos(np.pi * freqs * p))
        rows.append(pos + sines + cosines)
    return np.array(rows)


@pytest.mark.parametrize("shape,resolution", [((7,), None), ((4, 5), None), ((3, 6), (10, 8))])
def test_fourier_features_match_numpy(shape: tuple[int, ...], resolution: tuple[int, ...] | None) -> None:
    bands = 3
    got = fourier_features(shape, bands, resolution).numpy()
    want = _numpy_fourier(shape, bands, resolution or shape)
    assert got.shape == (math.prod(shape), num_fourier_channels(len(shape), bands))
    np.testing.assert_allclose(got, want, atol=1e-6)


def _args(task: str, task_fixture, *extra: str) -> list[str]:
    root, options = task_fixture(task)
    return ["--task", task, f"--data.root={root}", *[f"--data.{k}={v}" for k, v in options.items()], *extra]


def test_perceiver_trains_one_epoch(train, task_fixture, tmp_path: Path) -> None:
    assert train(*_args("ninapro", task_fixture, "--method", "perceiver", "--trainer.max_epochs=1")) == 0
    results = json.loads((tmp_path / "runs/ninapro/perceiver/seed0/results.json").read_text())
    assert results["method"] == "perceiver" and results["split"] == "test" and results["epochs"] == 1
    spec = get_task("ninapro")
    assert results["params"] == count_parameters(build_network("perceiver", spec))
    config = (tmp_path / "runs/ninapro/perceiver/seed0/config.yaml").read_text()
    assert "optimizer: adamw" in config and "lr: 0.001" in config and "weight_decay: 0.01" in config


# ---------------------------------------------------------------- XGBoost

needs_xgboost = pytest.mark.skipif(importlib.util.find_spec("xgboost") is None, reason="xgboost is not installed")


def _test_set(task: str, task_fixture) -> tuple[list[dict], object]:
    root, options = task_fixture(task)
    dm = get_task(task).datamodule(root=str(root), split="final", **options)
    dm.prepare_data()
    dm.setup("test")
    return list(dm.test_dataloader()), dm


def _margins(run: Path, x: torch.Tensor) -> np.ndarray:
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(run / "xgboost_model.json"))
    return booster.inplace_predict(x.reshape(len(x), -1).numpy().astype(np.float32), predict_type="margin")


def _auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return greater / (len(pos) * len(neg))


def _results(tmp_path: Path, task: str) -> tuple[dict, Path]:
    run = tmp_path / "runs" / task / "xgboost" / "seed0"
    return json.loads((run / "results.json").read_text()), run


def _check_common(results: dict, run: Path) -> None:
    assert results["method"] == "xgboost" and results["split"] == "test" and results["lower_is_better"]
    history = json.loads((run / "xgboost_history.json").read_text())
    assert history["params"]["max_depth"] == 3 and history["params"]["eta"] == 1.0 and history["params"]["subsample"] == 0.9
    assert history["params"]["tree_method"] == "hist" and history["params"]["sampling_method"] == "uniform"
    assert results["epochs"] == history["best_iteration"] + 1 <= history["rounds"] <= 100
    assert results["params"] > 0 and set(results) >= {"metric", "value", "metrics", "wall_time_s", "versions"}


def _fit_and_predict(train, task_fixture, tmp_path: Path, task: str) -> tuple[dict, Path, np.ndarray, torch.Tensor, Any]:
    """Run ``--method xgboost`` on a fixture; return its results, its run directory, and the saved model's
    margins on the test set with the test targets, collected independently of the run."""
    assert train(*_args(task, task_fixture, "--method", "xgboost")) == 0
    results, run = _results(tmp_path, task)
    _check_common(results, run)
    batches, dm = _test_set(task, task_fixture)
    x, y = torch.cat([b["x"] for b in batches]), torch.cat([b["y"] for b in batches])
    return results, run, _margins(run, x), y, dm


@needs_xgboost
def test_xgboost_point_task(train, task_fixture, tmp_path: Path) -> None:
    results, run, margins, y, _ = _fit_and_predict(train, task_fixture, tmp_path, "satellite")
    assert margins.shape == (len(y), 24)
    assert results["metric"] == "error"
    assert results["value"] == pytest.approx(100.0 * np.mean(margins.argmax(1) != y.numpy()))
    history = json.loads((run / "xgboost_history.json").read_text())
    assert history["params"]["objective"] == "multi:softmax" and history["params"]["eval_metric"] == "merror"


@needs_xgboost
def test_xgboost_dense_task(train, task_fixture, tmp_path: Path) -> None:
    results, _, margins, y, dm = _fit_and_predict(train, task_fixture, tmp_path, "darcy")
    decoded = dm.output_decoder()(torch.from_numpy(margins).reshape(y.shape)).double().numpy()
    truth = y.double().numpy().reshape(len(y), -1)
    rel = np.linalg.norm(decoded.reshape(len(y), -1) - truth, axis=1) / np.linalg.norm(truth, axis=1)
    assert results["metric"] == "relative_l2"
    assert results["value"] == pytest.approx(rel.mean(), rel=1e-5)


@needs_xgboost
def test_xgboost_multilabel_task(train, task_fixture, tmp_path: Path) -> None:
    results, _, margins, y, _ = _fit_and_predict(train, task_fixture, tmp_path, "deepsea")
    y = y.numpy()
    assert margins.shape == y.shape
    aurocs = [_auroc(margins[:, j], y[:, j]) for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    assert results["metric"] == "one_minus_auroc"
    assert results["value"] == pytest.approx(1.0 - np.mean(aurocs))


@needs_xgboost
def test_xgboost_search_split_and_reference_validation(train, task_fixture, tmp_path: Path) -> None:
    assert train(*_args("darcy", task_fixture, "--method", "xgboost", "--data.split=search")) == 0
    results, _ = _results(tmp_path, "darcy")
    assert results["split"] == "val"
    out = tmp_path / "reference"
    assert train(*_args("darcy", task_fixture, "--method", "xgboost", "--model.validation=search"), output_dir=out) == 0
    assert json.loads((out / "darcy/xgboost/seed0/results.json").read_text())["split"] == "test"


@needs_xgboost
def test_xgboost_refuses_what_does_not_fit(train, task_fixture, tmp_path: Path, capsys) -> None:
    assert train(*_args("darcy", task_fixture, "--method", "xgboost", "--model.memory_limit_gb=1e-6")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit on this machine" in err[0] and "8 samples x 75 features, 25 outputs" in err[0]
    assert not (tmp_path / "runs/darcy/xgboost/seed0/results.json").exists()


def test_xgboost_objectives_and_missing_package(monkeypatch) -> None:
    from nb360.errors import UsageError
    from nb360.search import xgboost as method

    objectives = {t: method.objective_for(get_task(t)) for t in task_names()}
    assert {t for t, o in objectives.items() if o == "multi:softmax"} == {"cifar100", "spherical", "ninapro", "ecg", "satellite"}
    assert {t for t, o in objectives.items() if o == "binary:logistic"} == {"fsd50k", "cosmic", "deepsea"}
    assert {t for t, o in objectives.items() if o == "reg:squarederror"} == {"darcy", "psicov"}
    monkeypatch.setitem(__import__("sys").modules, "xgboost", None)
    with pytest.raises(UsageError, match=r"pip install xgboost-cpu \(or xgboost on GPU machines\)"):
        method._import_xgboost()
