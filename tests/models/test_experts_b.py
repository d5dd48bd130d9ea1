"""Expert models of Cosmic, ECG, Satellite, DeepSEA (and Spherical's refusal): sizes, shapes, transforms, one epoch each."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import yaml

from nb360.models import build_network, count_parameters
from nb360.models.experts.deepsea_cnn import DeepSEACNN
from nb360.models.experts.net1d import Net1D
from nb360.models.experts.rocket import RocketClassifier, RocketTransform
from nb360.models.experts.s2cnn import REASON
from nb360.search.expert import EXPERTS
from nb360.tasks import get_task
from tests.helpers import read_results

NETWORKS = {"cosmic": "deepcr_unet", "ecg": "net1d", "satellite": "rocket", "deepsea": "deepsea_cnn"}


def net1d_params(in_channels: int, base: int, widths, blocks, k: int, groups: int, classes: int) -> int:
    """Stem conv + BN; per block: [BN of its input], 1x1 conv, BN, grouped k conv, BN, 1x1 conv, SE (two Linears); Linear."""
    total, channels = in_channels * base * k + base + 2 * base, base
    for stage, (width, count) in enumerate(zip(widths, blocks)):
        for index in range(count):
            preact = 0 if stage == index == 0 else 2 * channels
            convs = (channels * width + width) + (width * (width // groups) * k + width) + (width * width + width)
            se = (width * (width // 2) + width // 2) + (width // 2 * width + width)
            total += preact + convs + 2 * (2 * width) + se
            channels = width
    return total + channels * classes + classes


def test_parameter_counts_match_hand_formulas():
    ecg, deepsea, cosmic, satellite = (get_task(t) for t in ("ecg", "deepsea", "cosmic", "satellite"))
    widths, blocks = (256, 512, 512, 1024, 1024, 2048, 2048), (2,) * 7
    assert count_parameters(build_network("net1d", ecg)) == net1d_params(1, 256, widths, blocks, 16, 32, 4) == 74_941_444
    # without the squeeze-and-excitation Linears: the total of the reference's printout (model_detail/net1d_44.txt)
    squeeze_excite = sum(2 * (c * (c // 2)) + c // 2 + c for c in widths for _ in range(2))
    assert 74_941_444 - squeeze_excite == 52_768_004
    # bias-free convs 4->320->480->960 (kernel 8), flatten 63 x 960, Dense 925, Dense 36
    expected = 4 * 8 * 320 + 320 * 8 * 480 + 480 * 8 * 960 + 63 * 960 * 925 + 925 * 36
    assert count_parameters(build_network("deepsea_cnn", deepsea)) == expected == 60_902_740
    # double conv (3x3 + bias, BN) x2 per level, transposed conv 2x2, 1x1 out; hidden 32
    double = lambda i, o: (i * o * 9 + o) + 2 * o + (o * o * 9 + o) + 2 * o  # noqa: E731
    expected = double(1, 32) + double(32, 64) + (64 * 32 * 4 + 32) + double(64, 32) + (32 + 1)
    assert count_parameters(build_network("deepcr_unet", cosmic)) == expected == 101_473
    rocket = build_network("rocket", satellite, seed=0)
    assert count_parameters(rocket) == 20_000 * 24 + 24  # the kernels are fixed buffers
    assert sum(b.numel() for b in rocket.transform.buffers()) == 10_000 * (4 + 11)


def test_output_shapes_follow_the_task_spec():
    torch.manual_seed(0)
    cases = {
        "ecg": (build_network("net1d", get_task("ecg"), base_filters=8, widths=(8, 16), blocks=(2, 1), groups=4), (3, 1, 1000)),
        "deepsea": (build_network("deepsea_cnn", get_task("deepsea"), hidden=16), (2, 4, 1000)),
        "cosmic": (build_network("deepcr_unet", get_task("cosmic"), hidden=4), (2, 1, 128, 128)),
        "satellite": (build_network("rocket", get_task("satellite"), num_kernels=50, seed=0), (5, 1, 46)),
    }
    for task, (net, shape) in cases.items():
        spec = get_task(task)
        out = net.eval()(torch.randn(shape))
        want = (shape[0], spec.num_outputs, *shape[2:]) if spec.kind == "dense" else (shape[0], spec.num_outputs)
        assert out.shape == want, task
    # Net1D keeps ceil(length / 2) per strided step: stem and two stage heads -> 1000 / 8 = 125 positions
    net = Net1D(1, 4, base_filters=8, widths=(8, 16), blocks=(1, 1), groups=4)
    assert net.blocks(net.stem(torch.randn(1, 1, 1000))).shape == (1, 16, 125)


def test_net1d_shortcut_pads_channels_symmetrically_and_pools():
    block = Net1D(1, 4, base_filters=4, widths=(4, 10), blocks=(1, 1), groups=2).blocks[1].eval()
    for module in block.layers:  # zero residual branch: the block returns its shortcut
        if isinstance(module, torch.nn.Conv1d) and module.out_channels == 10 and module.kernel_size == (1,):
            torch.nn.init.zeros_(module.weight), torch.nn.init.zeros_(module.bias)
    x = torch.randn(1, 4, 7)
    out = block(x)
    pooled = torch.nn.functional.max_pool1d(torch.nn.functional.pad(x, (0, 1)), 2)  # window 2, one zero on the right
    assert torch.equal(out[:, 3:7], pooled) and not out[:, :3].any() and not out[:, 7:].any()


def test_deepsea_max_norm_and_same_pooling():
    net = DeepSEACNN(4, 1000, 36, channels=(8, 8, 8), hidden=4)
    with torch.no_grad():
        net.dense.weight.mul_(100)
    net(torch.randn(1, 4, 1000))  # the constraint runs before the forward pass
    assert net.dense.weight.norm(dim=1).max() <= 0.9 + 1e-5
    assert net.dense.in_features == 63 * 8  # 1000 -> 250 -> ceil(250 / 4) = 63
    from nb360.models.experts.deepsea_cnn import _same_pool

    x = torch.arange(10.0).view(1, 1, 10)  # TensorFlow SAME: pad 1 left, 1 right -> windows [-1..2], [3..6], [7..10]
    assert _same_pool(x, 4).tolist() == [[[2.0, 6.0, 9.0]]]


def slow_rocket(series: np.ndarray, weights: np.ndarray, bias: float, dilation: int, padding: int) -> tuple[float, float]:
    """One kernel on one series, position by position (zero padding, as the reference's loop)."""
    values = []
    for start in range(-padding, len(series) + padding - (len(weights) - 1) * dilation):
        taps = [start + j * dilation for j in range(len(weights))]
        values.append(bias + sum(w * series[i] for w, i in zip(weights, taps) if 0 <= i < len(series)))
    return float(np.mean(np.array(values) > 0)), float(max(values))


def test_rocket_transform_matches_a_slow_loop_and_the_kernel_distribution():
    transform = RocketTransform(46, 64, np.random.default_rng(3)).double()
    x = torch.randn(3, 1, 46, dtype=torch.float64)
    features = transform(x).numpy()
    assert features.shape == (3, 128)
    for k in range(64):
        length = int(transform.lengths[k])
        weights = transform.weights[k, :length].numpy()
        assert length in (7, 9, 11) and abs(weights.sum()) < 1e-6 and not transform.weights[k, length:].any()
        dilation, padding = int(transform.dilations[k]), int(transform.paddings[k])
        assert 1 <= dilation <= 45 // (length - 1) and padding in (0, (length - 1) * dilation // 2)
        for n in range(3):
            ppv, top = slow_rocket(x[n, 0].numpy(), weights, float(transform.biases[k]), dilation, padding)
            assert features[n, 2 * k] == pytest.approx(ppv, abs=1e-12) and features[n, 2 * k + 1] == pytest.approx(top, abs=1e-12)
    assert (transform.paddings > 0).any() and (transform.paddings == 0).any() and (transform.dilations > 1).any()


def test_rocket_classifier_normalises_features_and_starts_at_zero():
    net = RocketClassifier(46, 24, num_kernels=20, seed=1)
    x = torch.randn(64, 1, 46)
    assert not net(x).any()  # zero-initialised linear layer
    net.fit_normalisation(x)
    z = (net.transform(x) - net.feature_mean) / net.feature_std
    assert bool(net.normalised) and z.mean(0).abs().max() < 1e-4
    assert torch.equal(RocketClassifier(46, 24, 20, seed=1).transform.weights, net.transform.weights)


def test_spherical_expert_is_refused_with_its_reason(task_fixture, train, tmp_path, capsys):
    root, options = task_fixture("spherical")
    data = [f"--data.{k}={v}" for k, v in options.items()]
    assert train("--task", "spherical", "--method", "expert", f"--data.root={root}", *data) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "S2CNN needs SO(3) FFTs" in err[0] and err[0].startswith("nb360: error:") and REASON in err[0]
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("results.json"))


TINY = {
    "cosmic": ['--model.network_options={"hidden": 4}'],
    "ecg": ['--model.network_options={"base_filters": 8, "widths": [8, 16], "blocks": [1, 1], "groups": 4}'],
    "satellite": ['--model.network_options={"num_kernels": 32}'],
    "deepsea": ['--model.network_options={"hidden": 8}'],
}
REFERENCE = {  # config values the expert's recipe must set (besides the network)
    "cosmic": {"model.optimizer": "adam", "model.lr": 0.005, "model.metric_options": {"threshold": 0.0}, "data.batch_size": 16},
    "ecg": {
        "model.optimizer": "adam",
        "model.weight_decay": 1e-3,
        "model.dropout": 0.5,
        "model.schedule": "multistep",
        "data.batch_size": 32,
    },
    "satellite": {"model.optimizer": "adam", "model.schedule": "constant", "data.batch_size": 256},
    "deepsea": {
        "model.optimizer": "sgd",
        "model.lr": 0.01,
        "model.momentum": 0.9,
        "model.weight_decay": 1e-6,
        "data.batch_size": 64,
    },
}
EPOCHS = {"cosmic": 50, "ecg": 50, "satellite": 100, "deepsea": 60}


CASES = [(task, "final") for task in NETWORKS] + [("deepsea", "search"), ("satellite", "search")]  # search: early stopping


@pytest.mark.parametrize("task, split", CASES)
def test_expert_trains_one_epoch_on_the_fixture(task, split, task_fixture, train, tmp_path):
    root, options = task_fixture(task)
    data = [f"--data.{k}={v}" for k, v in options.items()]
    args = ["--task", task, "--method", "expert", f"--data.root={root}", f"--data.split={split}", *data, *TINY[task]]
    assert train(*args, "--trainer.max_epochs=1") == 0
    run = tmp_path / "runs" / task / "expert" / "seed0"
    results = read_results(run)
    assert results["method"] == "expert" and results["split"] == ("test" if split == "final" else "val")
    assert math.isfinite(results["value"]) and results["epochs"] == 1
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["network"] == NETWORKS[task]
    for key, value in REFERENCE[task].items():
        section, name = key.split(".")
        if not (key == "data.batch_size" and "batch_size" in options):  # the fixture's own batch size wins
            assert config[section][name] == value, key
    assert EXPERTS.get(task).defaults["trainer.max_epochs"] == EPOCHS[task]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    stoppers = [v for k, v in checkpoint["callbacks"].items() if k.startswith("EarlyStopping")]
    assert [s["patience"] for s in stoppers] == ([] if split == "final" else [{"deepsea": 5, "satellite": 2}[task]])
    if task == "satellite":  # feature statistics fitted on the first training series before training
        state = checkpoint["state_dict"]
        assert bool(state["net.normalised"]) and not torch.equal(state["net.feature_std"], torch.ones(64))


def test_rocket_logistic_regression_separates_two_shapes():
    """The reference's classifier on ROCKET features (standardised, zero-initialised, Adam) learns sines from square waves."""
    torch.manual_seed(0)
    t = torch.linspace(0, 4 * math.pi, 46)
    phase = torch.rand(64, 1) * 2 * math.pi
    y = torch.arange(64) % 2
    x = torch.where(y[:, None] == 0, torch.sin(t + phase), torch.sign(torch.sin(t + phase))) + 0.1 * torch.randn(64, 46)
    x = ((x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True))[:, None]
    net = RocketClassifier(46, 2, num_kernels=100, seed=0)
    net.fit_normalisation(x[:32])
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(50):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x[:32]), y[:32]).backward()
        optimizer.step()
    assert (net(x[32:]).argmax(1) == y[32:]).float().mean() >= 0.9


def test_ecg_schedule_matches_the_reference_plateau_scheduler_fed_the_epoch_index():
    from nb360.search.train import build_scheduler

    defaults = EXPERTS.get("ecg").defaults
    rates = []
    for reference in (True, False):
        optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
        if reference:  # test_physionet_net1d.py: scheduler.step(epoch) after every epoch
            scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.1, patience=10)
        else:
            scheduler = build_scheduler(
                optimizer, defaults["model.schedule"], 50, gamma=defaults["model.gamma"], milestones=defaults["model.milestones"]
            )
        seen = []
        for epoch in range(50):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step(epoch) if reference else scheduler.step()
        rates.append(seen)
    assert rates[0] == pytest.approx(rates[1], rel=1e-12) and rates[0][12] == pytest.approx(1e-4)
