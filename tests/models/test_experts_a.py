"""Expert models of CIFAR-100, NinaPro, FSD50K, Darcy Flow and PSICOV: parameter counts by hand formulas,
output shapes per task, their losses against numpy, and one epoch of ``train.py --method expert`` on each fixture."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml
from helpers import read_results

from nb360.errors import UsageError
from nb360.losses import build_loss
from nb360.models import build_network, count_parameters
from nb360.models.experts.fno import SpectralConv2d
from nb360.search.expert import EXPERTS
from nb360.tasks import get_task

NETWORKS = {"darcy": "fno2d", "cifar100": "densenet_bc", "psicov": "pdnet", "ninapro": "ninapro_attention", "fsd50k": "vgglike"}


def _bn(c: int) -> int:
    return 2 * c


def _conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def _linear(a: int, b: int) -> int:
    return a * b + b


def fno_params(modes: int, width: int, in_channels: int = 3, layers: int = 4) -> int:
    """FNO-2d as the reference's count_params counts it (a complex weight is two numbers)."""
    spectral = 2 * 2 * width * width * modes * modes
    return _linear(in_channels, width) + layers * (spectral + _conv(width, width, 1)) + _linear(width, 128) + _linear(128, 1)


def densenet_bc_params(depth: int, k: int, classes: int) -> int:
    n, c = (depth - 4) // 6, 2 * k
    total = _conv(3, c, 3, bias=False)
    for block in range(3):
        for i in range(n):
            cin = c + i * k
            total += _bn(cin) + _conv(cin, 4 * k, 1, False) + _bn(4 * k) + _conv(4 * k, k, 3, False)
        c += n * k
        if block < 2:
            total += _bn(c) + _conv(c, c // 2, 1, False)
            c //= 2
    return total + _bn(c) + _linear(c, classes)


def pdnet_params(blocks: int, width: int, in_channels: int = 57) -> int:
    block = _bn(width) + 2 * _conv(width, width, 3)
    return _bn(in_channels) + _conv(in_channels, width, 1) + blocks * block + _bn(width) + _conv(width, 1, 3)


def ninapro_params(
    timesteps: int = 52, electrodes: int = 16, hidden: tuple[int, ...] = (500, 500, 2000), classes: int = 18
) -> int:
    total = _bn(timesteps) + _linear(electrodes, 128) + 2 * 128 + _linear(timesteps, timesteps)
    for a, b in zip((128, *hidden), hidden):
        total += _linear(a, b) + 2 * b
    return total + _linear(hidden[-1], classes)


def vgglike_params(classes: int = 200) -> int:
    widths = [1, 32, 32, 32, 64, 64, 128, 128]
    return sum(_conv(a, b, 3) + _bn(b) for a, b in zip(widths, widths[1:])) + _linear(2 * 128, classes)


def test_parameter_counts_match_hand_formulas_and_published_figures():
    counts = {task: count_parameters(build_network(net, get_task(task))) for task, net in NETWORKS.items()}
    assert counts["darcy"] == fno_params(12, 32) == 2_368_001  # the reference's count_params for modes 12, width 32
    assert counts["cifar100"] == densenet_bc_params(100, 24, 100)
    assert counts["psicov"] == pdnet_params(128, 16)
    assert counts["ninapro"] == ninapro_params()
    assert counts["fsd50k"] == vgglike_params()
    # DenseNet-BC (L = 100, k = 12) has 0.8M parameters (Huang et al. 2017, Table 2, C10/C100 models)
    k12 = count_parameters(build_network("densenet_bc", get_task("cifar100"), growth=12))
    assert k12 == densenet_bc_params(100, 12, 100) and round(k12 / 1e6, 1) == 0.8


@pytest.mark.parametrize("task", list(NETWORKS))
def test_output_shapes_follow_the_task_spec(task):
    spec = get_task(task)
    small = {"darcy": {"width": 8}, "cifar100": {"depth": 16, "growth": 4}, "psicov": {"blocks": 3, "width": 4}}
    net = build_network(NETWORKS[task], spec, **small.get(task, {})).eval()
    with torch.no_grad():
        out = net(torch.randn(2, *spec.input_shape))
    expected = (2, spec.num_outputs, *spec.input_shape[1:]) if spec.kind == "dense" else (2, spec.num_outputs)
    assert tuple(out.shape) == expected
    if task == "psicov":
        assert (out >= 0).all()  # distances: final ReLU


def test_spectral_convolution_matches_numpy():
    torch.manual_seed(0)
    layer = SpectralConv2d(3, 2, 4, 3)
    x = torch.randn(2, 3, 10, 9)
    w1 = layer.weights1.detach().numpy()
    w2 = layer.weights2.detach().numpy()
    w1, w2 = w1[..., 0] + 1j * w1[..., 1], w2[..., 0] + 1j * w2[..., 1]
    spectrum = np.fft.rfft2(x.numpy().astype(np.float64))
    out = np.zeros((2, 2, 10, 5), dtype=complex)
    for b in range(2):
        for o in range(2):
            out[b, o, :4, :3] = sum(spectrum[b, i, :4, :3] * w1[i, o] for i in range(3))
            out[b, o, -4:, :3] = sum(spectrum[b, i, -4:, :3] * w2[i, o] for i in range(3))
    expected = np.fft.irfft2(out, s=(10, 9))
    np.testing.assert_allclose(layer(x).detach().numpy(), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(UsageError, match="Fourier modes"):
        layer(torch.randn(1, 3, 6, 9))


def test_ninapro_attention_weights_time_steps_per_feature():
    """The attention softmax runs over time: a constant input over time leaves the embedding unchanged."""
    net = build_network("ninapro_attention", get_task("ninapro"), dropout=0.0).eval()
    x = torch.randn(4, 1, 16, 52)
    embedded = net.embed(net.norm(x.squeeze(1).transpose(1, 2)))
    weights = net.attention(embedded.transpose(1, 2)).softmax(-1)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 128))
    const = embedded[:, :1].expand_as(embedded)
    pooled = (const * net.attention(const.transpose(1, 2)).softmax(-1).transpose(1, 2)).sum(1)
    torch.testing.assert_close(pooled, embedded[:, 0])


def _keras_focal(probs: np.ndarray, onehot: np.ndarray, gamma: float, alpha: float) -> float:
    """The reference FocalLoss.call, step by step (max over classes of the one-hot weighted terms)."""
    out = probs + 1e-9
    ce = onehot * -np.log(out)
    weight = onehot * (1.0 - out) ** gamma
    return float(np.mean(np.max(alpha * weight * ce, axis=1)))


def test_focal_loss_matches_the_keras_reference():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(16, 18)) * 3
    target = rng.integers(0, 18, 16)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    expected = _keras_focal(probs, np.eye(18)[target], 3.0, 6.0)
    got = build_loss("focal")(torch.tensor(logits), torch.tensor(target)).item()
    assert got == pytest.approx(expected, rel=1e-5)


def test_logcosh_matches_numpy_and_does_not_overflow():
    rng = np.random.default_rng(1)
    preds, target = rng.normal(size=(2, 1, 8, 8)) * 4, rng.uniform(0, 16, (2, 1, 8, 8))
    loss = build_loss("logcosh")
    got = loss(torch.tensor(preds), torch.tensor(target), length=torch.tensor([8, 8])).item()
    assert got == pytest.approx(np.mean(np.log(np.cosh(preds - target))), rel=1e-10)
    big = loss(torch.tensor([1000.0]), torch.tensor([0.0])).item()
    assert big == pytest.approx(1000 - math.log(2))


TINY = {
    "darcy": ['--model.network_options={"modes": 3, "width": 4}'],
    "cifar100": ['--model.network_options={"depth": 10, "growth": 4}'],
    "psicov": ['--model.network_options={"blocks": 2, "width": 4}'],
    "ninapro": ['--model.network_options={"embedding": 8, "hidden": [8, 8]}'],
    "fsd50k": ['--model.network_options={"stages": [[4, 1], [4, 1]]}'],
}
REFERENCE = {  # config values the expert's recipe must set (besides the network)
    "darcy": {"model.optimizer": "adam", "model.schedule": "steplr", "model.step_size": 100, "data.batch_size": 20},
    "cifar100": {"model.optimizer": "sgd", "model.lr": 0.1, "model.weight_decay": 1e-4, "data.batch_size": 64},
    "psicov": {"model.optimizer": "rmsprop", "model.loss": "logcosh", "model.dropout": 0.3, "data.batch_size": 2},
    "ninapro": {"model.loss": "focal", "model.schedule": "cosine", "model.dropout": 0.36, "data.batch_size": 128},
    "fsd50k": {"model.optimizer": "adam", "model.lr": 1e-3, "data.batch_size": 256},
}
EPOCHS = {"darcy": 500, "cifar100": 300, "psicov": 64, "ninapro": 205, "fsd50k": 100}


@pytest.mark.parametrize("task", list(NETWORKS))
def test_expert_trains_one_epoch_on_the_fixture(task, task_fixture, train, tmp_path):
    root, options = task_fixture(task)
    data = [f"--data.{k}={v}" for k, v in options.items()]
    args = ["--task", task, "--method", "expert", f"--data.root={root}", *data, "--trainer.max_epochs=1", *TINY[task]]
    assert train(*args) == 0
    run = tmp_path / "runs" / task / "expert" / "seed0"
    results = read_results(run)
    assert results["method"] == "expert" and results["split"] == "test" and math.isfinite(results["value"])
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["network"] == NETWORKS[task]
    for key, value in REFERENCE[task].items():
        if key == "data.batch_size" and "batch_size" in options:
            continue  # the fixture's own batch size wins
        section, name = key.split(".")
        assert config[section][name] == value, key
    assert EXPERTS.get(task).defaults["trainer.max_epochs"] == EPOCHS[task]
