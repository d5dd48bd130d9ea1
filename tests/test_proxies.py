"""Zero-cost proxies against independent hand computations, and on NB201 networks for point, dense and 1-D tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from nb360.proxies import (
    PROXIES,
    compute_proxies,
    fisher,
    grad_norm,
    grasp,
    jacob_cov,
    naswot,
    naswot_kernel,
    proxy_correlations,
    snip,
    synflow,
)

ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|avg_pool_3x3~2|"
SMALL = {"arch": ARCH, "channels": 4, "cells": 1}


def ce(preds, target, **_):
    return F.cross_entropy(preds, target)


def tiny(bias: bool = False) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5, bias=bias), nn.ReLU(), nn.Linear(5, 4, bias=bias))


def batch(n: int = 6):
    gen = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, generator=gen), torch.randint(0, 4, (n,), generator=gen)


def forward(w1, w2, x):
    return F.linear(torch.relu(F.linear(x, w1)), w2)


def test_grad_norm_by_hand():
    net, (x, y) = tiny(bias=True), batch()
    loss = ce(net(x), y)
    grads = torch.autograd.grad(loss, list(net.parameters()))
    expected = sum(float(torch.sqrt((g**2).sum())) for g in grads)
    assert grad_norm(net, x, y, ce) == pytest.approx(expected, rel=1e-5)
    assert all(p.grad is None for p in net.parameters())


def test_snip_by_hand():
    net, (x, y) = tiny(bias=True), batch()
    w1, w2 = net[0].weight, net[2].weight
    g1, g2 = torch.autograd.grad(ce(net(x), y), [w1, w2])
    expected = float(((w1 * g1).abs().sum() + (w2 * g2).abs().sum()).detach())
    assert snip(net, x, y, ce) == pytest.approx(expected, rel=1e-5)


def test_grasp_with_explicit_hessian():
    net, (x, y) = tiny(), batch()
    w1, w2 = net[0].weight.detach(), net[2].weight.detach()
    flat = torch.cat([w1.flatten(), w2.flatten()]).double()

    def loss(v):
        return F.cross_entropy(forward(v[:15].reshape(5, 3), v[15:].reshape(4, 5), x.double()), y)

    hess = torch.autograd.functional.hessian(loss, flat)
    g = torch.autograd.functional.jacobian(loss, flat)
    expected = float(-(flat * (hess @ g)).sum())
    assert grasp(net, x, y, ce) == pytest.approx(expected, rel=1e-3, abs=1e-6)


def test_fisher_by_hand():
    net, (x, y) = tiny(bias=True), batch()
    a = torch.relu(net[0](x)).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(ce(net[2](a), y), a)
    expected = float(0.5 * ((a.detach() * g) ** 2).mean(0).sum())
    assert fisher(net, x, y, ce) == pytest.approx(expected, rel=1e-5)


def test_fisher_sums_positions_per_channel():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 7, 4))
    x, y = torch.randn(5, 2, 7), torch.randint(0, 4, (5,))
    a = torch.relu(net[0](x)).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(ce(net[3](net[2](a)), y), a)
    expected = float(0.5 * ((a.detach() * g).sum(-1) ** 2).mean(0).sum())
    assert fisher(net, x, y, ce) == pytest.approx(expected, rel=1e-5)


def test_jacob_cov_by_hand():
    net, (x, y) = tiny(bias=True), batch()
    jac = np.stack([torch.autograd.functional.jacobian(lambda v: net(v[None]).sum(), xi).numpy() for xi in x])
    eig = np.linalg.eigvalsh(np.corrcoef(jac.astype(np.float64)))
    expected = float(-np.sum(np.log(eig + 1e-5) + 1 / (eig + 1e-5)))
    assert jacob_cov(net, x, y, ce) == pytest.approx(expected, rel=1e-4)


def test_synflow_closed_form_and_caller_unchanged():
    net = tiny()
    with torch.no_grad():  # mixed signs, so the |θ| step matters
        net[0].weight[0, 0] = -0.7
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x, y = batch()
    # y = |W2| relu(|W1| 1) with positive weights: Σ W1 ⊙ ∂R/∂W1 = Σ W2 ⊙ ∂R/∂W2 = R = 1ᵀ|W2||W1|1
    w1, w2 = net[0].weight.detach().double().abs(), net[2].weight.detach().double().abs()
    expected = 2 * float(w2.sum(0) @ w1.sum(1))
    assert synflow(net, x, y, ce) == pytest.approx(expected, rel=1e-10)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert net[0].weight.dtype == torch.float32 and float(net[0].weight[0, 0].detach()) == pytest.approx(-0.7)


def test_naswot_kernel_hand_pattern():
    codes = [torch.tensor([[1, 0, 1], [1, 1, 0], [0, 0, 1]]), torch.tensor([[1], [0], [1]])]
    # matches between rows: N_A (4) minus Hamming distance
    expected = torch.tensor([[4, 1, 3], [1, 4, 0], [3, 0, 4]], dtype=torch.float64)
    assert torch.equal(naswot_kernel(codes), expected)


def test_naswot_identity_layer_codes_are_input_signs():
    net = nn.Sequential(nn.Linear(3, 3, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(3))
    x = torch.tensor([[1.0, -1.0, 2.0], [0.5, 1.0, -3.0], [-1.0, -2.0, 1.0], [1.0, 1.0, 1.0]])
    c = (x > 0).double()
    k = c @ c.T + (1 - c) @ (1 - c).T
    expected = float(torch.linalg.slogdet(k)[1])
    assert naswot(net, x, torch.zeros(4, dtype=torch.long), ce) == pytest.approx(expected)


def test_caller_network_unchanged_by_every_proxy():
    net, (x, y) = tiny(bias=True), batch()
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    for proxy in PROXIES.values():
        proxy(net, x, y, ce)
    assert not net.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in net.parameters())


@pytest.mark.parametrize("task", ["ninapro", "darcy", "ecg"])
def test_all_proxies_on_nb201(task):
    scores = compute_proxies("nb201", task, SMALL, batch_size=4, seed=3)
    assert set(scores) == set(PROXIES)
    assert all(np.isfinite(v) for v in scores.values()), scores


def test_seeded_determinism_and_seed_matters():
    a = compute_proxies("nb201", "ninapro", SMALL, names=["snip", "naswot", "grad_norm"], batch_size=4, seed=5)
    b = compute_proxies("nb201", "ninapro", SMALL, names=["snip", "naswot", "grad_norm"], batch_size=4, seed=5)
    c = compute_proxies("nb201", "ninapro", SMALL, names=["snip", "naswot", "grad_norm"], batch_size=4, seed=6)
    assert a == b
    assert a != c


def test_real_batch_and_unknown_name():
    from nb360.errors import UsageError

    x, y = torch.randn(3, 1, 1000), torch.randint(0, 4, (3,))
    scores = compute_proxies("nb201", "ecg", SMALL, names=["snip"], batch=(x, y))
    assert np.isfinite(scores["snip"])
    with pytest.raises(UsageError):
        compute_proxies("nb201", "ecg", SMALL, names=["nope"])


def test_correlations_match_scipy():
    rng = np.random.default_rng(0)
    s, g = rng.normal(size=20), rng.normal(size=20)
    out = proxy_correlations(s, g)
    assert out["spearman"] == pytest.approx(stats.spearmanr(s, g)[0])
    assert out["kendall"] == pytest.approx(stats.kendalltau(s, g)[0])
    low = proxy_correlations(s, g, lower_is_better=True)
    assert low["spearman"] == pytest.approx(-out["spearman"]) and low["kendall"] == pytest.approx(-out["kendall"])


# ---------------------------------------------------------------- TE-NAS measures
def test_ntk_condition_number_matches_a_jacobian_by_torch_func():
    from torch.func import functional_call, jacrev

    from nb360.proxies.tenas import ntk_condition_number

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3, track_running_stats=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(3 * 4 * 4, 5),
    )
    x = torch.randn(6, 2, 4, 4)
    net.train()
    fixed = {k: v.detach() for k, v in net.named_parameters()}
    weights = {k: v for k, v in fixed.items() if k.endswith("weight")}  # conv, BN scale and linear weights; no biases

    def summed_outputs(w):
        return functional_call(net, {**fixed, **w}, (x,)).sum(1)  # one value per sample; BN couples the batch

    jac = jacrev(summed_outputs)(weights)
    j = torch.cat([jac[k].reshape(6, -1) for k in weights], 1).double()
    eig = np.linalg.eigvalsh((j @ j.T).numpy())
    expected = eig[-1] / eig[0]
    assert ntk_condition_number(net, x) == pytest.approx(expected, rel=1e-4)
    assert PROXIES["ntk"](net, x, None, None) == pytest.approx(-expected, rel=1e-4)  # higher is better
    # every parameter, biases included
    full = jacrev(lambda p: functional_call(net, p, (x,)).sum(1))(fixed)
    j = torch.cat([full[k].reshape(6, -1) for k in fixed], 1).double()
    eig = np.linalg.eigvalsh((j @ j.T).numpy())
    assert ntk_condition_number(net, x, which="all") == pytest.approx(eig[-1] / eig[0], rel=1e-4)


def test_ntk_of_a_linear_model_is_the_gram_matrix_of_the_inputs():
    from nb360.proxies.tenas import ntk_condition_number

    net = nn.Linear(5, 1, bias=False)  # gradient of w.x with respect to w is x: Theta = X X^T
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(2))
    eig = np.linalg.eigvalsh((x @ x.T).double().numpy())
    assert ntk_condition_number(net, x) == pytest.approx(eig[-1] / eig[0], rel=1e-6)


def test_linear_regions_of_a_one_hidden_layer_net_on_a_line():
    from nb360.proxies.tenas import linear_regions

    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(1, 7), nn.ReLU(), nn.Linear(7, 2))
    w, b = net[0].weight.detach().numpy()[:, 0], net[0].bias.detach().numpy()
    xs = np.linspace(-4, 4, 301)
    # unit i switches at -b_i / w_i: the regions are the intervals between the sorted breakpoints, each with its own pattern
    breakpoints = np.sort(-b / w)
    expected = len(np.unique(np.searchsorted(breakpoints, xs)))
    assert 1 < expected <= 8
    x = torch.tensor(xs, dtype=torch.float32)[:, None]
    assert linear_regions(net, x, None, None) == expected
    assert linear_regions(net, x[:1], None, None) == 1
    assert linear_regions(net, x, None, None, batch_size=50) == expected  # no BN: chunking changes nothing


def test_linear_regions_count_patterns_of_every_relu_in_2d():
    from nb360.proxies.tenas import linear_regions

    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(), nn.Linear(2, 1, bias=False), nn.ReLU())
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2))
        net[2].weight.copy_(torch.tensor([[1.0, -1.0]]))
    # first layer: the quadrant signs; second: relu(x1) > relu(x2)
    x = torch.tensor([[1.0, 2.0], [2.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [3.0, 0.5]])
    codes = {(a > 0, c > 0, max(a, 0) - max(c, 0) > 0) for a, c in x.tolist()}
    assert linear_regions(net, x, None, None) == len(codes) == 5
