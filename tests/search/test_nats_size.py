"""NATS size-space search (TAS, FBNetV2, TuNAS): the supernet's width rules, the schedules, REINFORCE, pipeline runs."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import read_results

from nb360.models import build_network
from nb360.models.nb201.size_supernet import LAYER_DECISIONS, SizeSupernet, channel_interpolate, select_two, warmup_at
from nb360.models.nb201.supernet import tau_at
from nb360.search.nats_size import ExponentialMovingAverage, SizeSearchModule, reinforce_loss
from nb360.spaces.nb201 import SIZE, WIDTHS
from nb360.tasks import get_task


def sliced_copy(supernet: SizeSupernet, arch: str, dim: int, kind: str, c_in: int, n_out: int) -> torch.nn.Module:
    """The ``nats_sss`` network of ``arch`` with every weight the leading block of the supernet's."""
    from nb360.models.nb201 import size_network

    net = size_network(arch, dim=dim, kind=kind, in_channels=c_in, num_outputs=n_out)
    big = dict(supernet.net.named_parameters())
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name in big:
                p.copy_(big[name][tuple(slice(0, s) for s in p.shape)])
            else:  # affine parameters of BatchNorms the supernet has without them: identity
                assert name.endswith((".weight", ".bias")) and p.dim() == 1, name
    return net


# ---------------------------------------------------------------- the supernet
@pytest.mark.parametrize(
    "dim, kind, shape, arch",
    [
        (2, "point", (1, 8, 12), "24:64:64:64:64"),  # c0 alone: stem and first cell
        (2, "point", (1, 8, 12), "64:40:40:16:16"),  # c1 = c2 and c3 = c4: every cell keeps its identity skip
        (2, "dense", (3, 6, 6), "40:40:40:40:40"),  # dense: the reduction slots are cells too
        (1, "point", (1, 20), "48:16:16:64:64"),
    ],
)
def test_a_one_hot_width_choice_computes_the_sliced_nats_sss_network(dim, kind, shape, arch):
    torch.manual_seed(0)
    supernet = SizeSupernet(dim, kind, shape[0], 3, "mask_gumbel")
    supernet.fixed = SIZE.to_codes(arch)
    x = torch.randn(5, *shape)
    small = sliced_copy(supernet, arch, dim, kind, shape[0], 3)
    torch.testing.assert_close(supernet(x), small(x), rtol=1e-4, atol=1e-5)  # both in training mode: batch statistics


def test_only_the_layer_outputs_are_masked_without_mask_inside():
    torch.manual_seed(0)
    arch = "24:64:64:64:64"
    x = torch.randn(5, 1, 8, 12)
    outside = SizeSupernet(2, "point", 1, 3, "mask_rl", mask_inside=False)
    inside = SizeSupernet(2, "point", 1, 3, "mask_rl")
    inside.load_state_dict(outside.state_dict())
    outside.fixed = inside.fixed = SIZE.to_codes(arch)
    small = sliced_copy(inside, arch, 2, "point", 1, 3)
    torch.testing.assert_close(inside(x), small(x), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(outside(x), small(x), atol=1e-3)  # the first cell's inner nodes keep 64 channels


def test_channel_interpolation_and_the_tas_mixture_by_hand():
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)  # (batch, channels, length)
    # 4 -> 6 channels: output o averages input channels floor(4o/6) .. ceil(4(o+1)/6) - 1
    expected = torch.stack([x[:, 0], (x[:, 0] + x[:, 1]) / 2, x[:, 1], x[:, 2], (x[:, 2] + x[:, 3]) / 2, x[:, 3]], dim=1)
    torch.testing.assert_close(channel_interpolate(x, 6), expected)
    torch.testing.assert_close(channel_interpolate(x.unsqueeze(-1), 6), expected.unsqueeze(-1))  # 2-D
    # the narrowing of one layer: widths 8 and 16 with probabilities 0.3 / 0.7
    net = SizeSupernet(1, "point", 1, 2, "tas")
    h = torch.randn(2, 64, 5)
    probs = torch.tensor([0.3, 0.7])
    out = net._narrow(h, "tas", ((0, 1), probs))
    up = h[:, :8].repeat_interleave(2, dim=1)  # 8 -> 16 channels: each channel twice
    torch.testing.assert_close(out[:, :16], 0.3 * up + 0.7 * h[:, :16])
    assert out.shape == h.shape and torch.equal(out[:, 16:], torch.zeros(2, 48, 5))


def test_fbnetv2_mask_is_the_gumbel_softmax_mixture_of_the_width_masks():
    net = SizeSupernet(2, "point", 1, 3, "mask_gumbel")
    net.tau.fill_(2.0)
    torch.manual_seed(3)
    kind, mask = net._draw(1)
    torch.manual_seed(3)
    w = torch.nn.functional.gumbel_softmax(net.arch_logits[1].detach(), tau=2.0, dim=-1)
    # channel c survives with the total weight of the widths larger than c
    expected = torch.stack([w[[i for i, width in enumerate(WIDTHS) if width > c]].sum() for c in range(64)])
    assert kind == "mask"
    torch.testing.assert_close(mask.detach(), expected)
    mask.sum().backward()
    assert net.arch_logits.grad[1].abs().sum() > 0 and net.arch_logits.grad[[0, 2, 3, 4]].abs().sum() == 0


def test_warmup_draws_the_full_width_or_a_uniform_one():
    net = SizeSupernet(1, "point", 1, 2, "mask_rl")
    net.warmup = 1.0
    assert all(torch.equal(net._draw(k)[1], torch.ones(64)) for k in range(5)) and net.log_probs == []
    net.warmup = 0.0
    torch.manual_seed(0)
    widths = {int(net._draw(0)[1].sum()) for _ in range(200)}
    assert widths == set(WIDTHS)


def test_select_two_draws_two_distinct_widths_with_renormalised_probabilities():
    torch.manual_seed(0)
    logits = torch.tensor([0.0, 5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0], requires_grad=True)
    counts = torch.zeros(8)
    for _ in range(200):
        (i, j), p = select_two(logits, tau=1.0)
        assert i != j and math.isclose(float(p.detach().sum()), 1.0, rel_tol=1e-6)
        counts[[i, j]] += 1
    assert set(counts.topk(2).indices.tolist()) == {1, 7}
    p[0].backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_temperature_and_warmup_schedules_by_hand():
    assert tau_at(0, 100) == 10.0 and math.isclose(tau_at(99, 100), 0.1) and math.isclose(tau_at(33, 100), 10 - 9.9 / 3)
    assert [round(tau_at(e, 5), 6) for e in range(5)] == [10.0, 7.525, 5.05, 2.575, 0.1]
    # warm-up 0.25 of 8 epochs: epochs 0, 1 warm (full width with p = 1, 0.5), search from epoch 2
    assert [warmup_at(e, 8, 0.25) for e in range(4)] == [1.0, 0.5, None, None]
    assert warmup_at(0, 8, None) is None


def test_the_temperature_and_warmup_follow_the_epochs_in_the_module():
    module = SizeSearchModule(task="ninapro", algo="mask_rl", warmup_ratio=0.25)

    class Trainer:
        max_epochs, current_epoch, lr_scheduler_configs = 8, 0, []

    module.trainer = Trainer()  # type: ignore[assignment]
    seen = []
    for epoch in range(4):
        Trainer.current_epoch = epoch
        module.on_train_epoch_start()
        seen.append((round(float(module.net.tau), 4), module.net.warmup, epoch >= module.warmup_epochs))
    assert seen == [(10.0, 1.0, False), (8.5857, 0.5, False), (7.1714, None, True), (5.7571, None, True)]


def test_derive_is_the_argmax_per_decision_and_eval_runs_it():
    net = SizeSupernet(2, "point", 1, 3, "mask_rl")
    with torch.no_grad():
        net.arch_logits.zero_()
        for k, code in enumerate((2, 7, 0, 5, 3)):
            net.arch_logits[k, code] = 1.0
    assert net.derive() == "24:64:8:48:32" and SIZE.parse(net.derive()) == (2, 7, 0, 5, 3)
    net.eval()
    x = torch.randn(3, 1, 8, 12)
    net.fixed = (2, 7, 0, 5, 3)
    fixed = net(x)
    net.fixed = None
    torch.testing.assert_close(net(x), fixed)
    assert net.log_probs == [] and LAYER_DECISIONS == (0, 0, 1, 2, 3, 4)


def test_tunas_draws_one_width_per_decision_and_keeps_its_log_probability():
    torch.manual_seed(0)
    net = SizeSupernet(1, "point", 1, 2, "mask_rl")
    net(torch.randn(2, 1, 16))
    assert len(net.log_probs) == 5 and all(lp.requires_grad for lp in net.log_probs)
    net_ref = SizeSupernet(1, "point", 1, 2, "mask_rl", resample_c0=True)
    net_ref(torch.randn(2, 1, 16))
    assert len(net_ref.log_probs) == 6  # the reference draws c0 for the stem and again for the first cell


# ---------------------------------------------------------------- REINFORCE
def test_moving_average_baseline_is_bias_corrected_and_checkpointed():
    assert {"baseline.numerator", "baseline.denominator", "net.arch_logits"} <= set(SizeSearchModule(task="ninapro").state_dict())
    ema = ExponentialMovingAverage(0.95)
    ema.update(10.0)
    assert math.isclose(ema.value, 10.0)
    ema.update(20.0)
    assert math.isclose(ema.value, (0.95 * 0.05 * 10 + 0.05 * 20) / (0.95 * 0.05 + 0.05))


def test_reinforce_moves_the_policy_toward_the_width_with_the_higher_reward():
    """Toy bandit: at decision 3, width 40 earns reward 1, every other width 0; the logit of 40 must win."""
    torch.manual_seed(0)
    logits = torch.nn.Parameter(1e-3 * torch.randn(5, len(WIDTHS)))
    optimiser = torch.optim.Adam([logits], lr=0.05, betas=(0.5, 0.999))
    baseline = ExponentialMovingAverage(0.95)
    good = WIDTHS.index(40)
    for _ in range(300):
        dist = torch.distributions.Categorical(logits=logits)
        actions = dist.sample()
        reward = float(actions[3] == good)
        optimiser.zero_grad()
        reinforce_loss(reward, baseline, list(dist.log_prob(actions))).backward()
        optimiser.step()
    p = logits.detach().softmax(-1)
    assert int(p[3].argmax()) == good and p[3, good] > 0.5
    # one step's sign: a positive advantage raises the log-probability of the drawn action
    lp = torch.zeros(len(WIDTHS), requires_grad=True)
    b = ExponentialMovingAverage(0.5)
    b.update(0.0)
    reinforce_loss(1.0, b, [lp.log_softmax(-1)[good]]).backward()
    assert lp.grad[good] < 0 and (lp.grad[[i for i in range(len(WIDTHS)) if i != good]] > 0).all()


# ---------------------------------------------------------------- through train.py
@pytest.fixture(scope="module")
def fixture_roots(task_fixture) -> dict:
    return {task: task_fixture(task) for task in ("ninapro", "darcy", "satellite")}


def data_args(task: str, fixture_roots: dict, *extra: str) -> list[str]:
    root, options = fixture_roots[task]
    return ["--task", task, f"--data.root={root}", *[f"--data.{k}={v}" for k, v in options.items()], *extra]


@pytest.mark.parametrize("task, method", [("ninapro", "nats_tunas"), ("darcy", "nats_fbnetv2"), ("satellite", "nats_tas")])
def test_search_then_retrain_end_to_end(task, method, fixture_roots, train, tmp_path):
    args = data_args(task, fixture_roots, "--method", method, "--data.batch_size=4", "--data.eval_batch_size=4")
    args += ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1"]
    args += ["--search_epochs=2", "--eval_epochs=1", "--eval.batch_size=4"]
    args += ["--model.warmup_ratio=0.5"] if method == "nats_tunas" else []  # epoch 0 warm-up, epoch 1 search
    assert train(*args) == 0
    run_dir = tmp_path / "runs" / task / method / "seed0"
    results = read_results(run_dir)
    arch = results["genotype"]["arch"]
    assert results["stage"] == "all" and results["genotype"] == json.loads((run_dir / "genotype.json").read_text())
    assert SIZE.to_string(arch) == arch
    spec = get_task(task)
    assert results["params"] == sum(p.numel() for p in build_network("nats_sss", spec, arch=arch).parameters())
    with open(run_dir / "search" / "metrics.csv") as f:
        header = f.readline()
    assert "arch/c4/64" in header and ("arch/tau" in header) == (method != "nats_tunas")
    assert "train/arch_loss" in header and ("train/reward" in header) == (method == "nats_tunas")


def test_ddp_tunas_search_agrees_across_processes(fixture_roots, tmp_path):
    """Two gloo processes: REINFORCE's architecture gradients are averaged and both end with the same logits."""
    import subprocess
    import sys

    from conftest import QUIET, REPO

    args = data_args("ninapro", fixture_roots, "--method", "nats_tunas", "--data.batch_size=2", "--search_epochs=2", *QUIET)
    args += ["--stage=search", "--model.warmup_ratio=0.5", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1"]
    args += ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu", f"--output_dir={tmp_path}"]
    done = subprocess.run([sys.executable, str(REPO / "train.py"), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    search = json.loads((tmp_path / "ninapro" / "nats_tunas" / "seed0" / "search.json").read_text())
    assert search["processes"] == 2 and SIZE.to_string(search["genotype"]["arch"]) == search["genotype"]["arch"]
