"""Zero-cost proxies: training-free scores of an untrained network on one batch, for any nb360 network and task.

Every proxy is ``proxy(network, batch_x, batch_y, loss_fn) -> float``. Proxies work on a deep copy of
the network (in train mode, so BatchNorm uses batch statistics, except ``synflow``), so the caller's
network, its parameters, buffers, mode and gradients are left unchanged. ``loss_fn`` follows
:mod:`nb360.losses`: ``loss_fn(preds, target)``. Formulas are in ``docs/proxies.md``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from nb360.errors import UsageError
from nb360.proxies.tenas import linear_regions, ntk

__all__ = [
    "PROXIES",
    "compute_proxies",
    "fisher",
    "grad_norm",
    "grasp",
    "jacob_cov",
    "linear_regions",
    "naswot",
    "ntk",
    "proxy_correlations",
    "random_batch",
    "snip",
    "synflow",
]

LossFn = Callable[..., Tensor]
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _copy(network: nn.Module) -> nn.Module:
    net = copy.deepcopy(network)
    net.train()
    net.zero_grad(set_to_none=True)
    for p in net.parameters():
        p.requires_grad_(True)
    return net


def _layer_weights(net: nn.Module) -> list[Tensor]:
    """Weights of the conv and linear layers (biases, BN and other parameters excluded)."""
    return [m.weight for m in net.modules() if isinstance(m, _WEIGHTED) and m.weight is not None]


def _grads(loss: Tensor, params: Sequence[Tensor], **kwargs: Any) -> list[Tensor]:
    grads = torch.autograd.grad(loss, list(params), allow_unused=True, **kwargs)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def grad_norm(network: nn.Module, batch_x: Tensor, batch_y: Tensor, loss_fn: LossFn) -> float:
    """Σ_p ||∂L/∂p||_2 over every trainable parameter p of the network (unused parameters count 0)."""
    net = _copy(network)
    params = [p for p in net.parameters() if p.requires_grad]
    grads = _grads(loss_fn(net(batch_x), batch_y), params)
    return float(sum(g.norm(2) for g in grads))


def snip(network: nn.Module, batch_x: Tensor, batch_y: Tensor, loss_fn: LossFn) -> float:
    """Σ |θ ⊙ ∂L/∂θ| over the weights θ of the conv and linear layers (Lee et al. 2019)."""
    net = _copy(network)
    weights = _layer_weights(net)
    grads = _grads(loss_fn(net(batch_x), batch_y), weights)
    return float(sum((w.detach() * g).abs().sum() for w, g in zip(weights, grads)))


def grasp(network: nn.Module, batch_x: Tensor, batch_y: Tensor, loss_fn: LossFn) -> float:
    """−Σ θ ⊙ (H g) over conv/linear weights θ, g = ∂L/∂θ and H the Hessian, H g by double backprop (Wang et al. 2020)."""
    net = _copy(network)
    weights = _layer_weights(net)
    grads = _grads(loss_fn(net(batch_x), batch_y), weights, create_graph=True)
    z = sum((g * g.detach()).sum() for g in grads)
    hg = _grads(z, weights)
    return float(-sum((w.detach() * h).sum() for w, h in zip(weights, hg)))


def _relus(net: nn.Module) -> list[nn.ReLU]:
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise UsageError("this proxy needs nn.ReLU modules in the network (functional ReLUs are not seen)")
    for m in relus:
        m.inplace = False
    return relus


def fisher(network: nn.Module, batch_x: Tensor, batch_y: Tensor, loss_fn: LossFn) -> float:
    """Σ_activations Σ_c ½ mean_n (Σ_positions a ⊙ ∂L/∂a)², with a the outputs of every nn.ReLU module.

    This is the channel-wise Fisher information of Turner et al. / Theis et al. as used by
    Abdelfattah et al. 2021 (who hook the activation before each conv); here the hooks sit on ReLU outputs.
    """
    net = _copy(network)
    acts: list[Tensor] = []

    def keep(_: nn.Module, __: Any, out: Tensor) -> None:
        acts.append(out)

    handles = [m.register_forward_hook(keep) for m in _relus(net)]
    try:
        loss = loss_fn(net(batch_x), batch_y)
    finally:
        for h in handles:
            h.remove()
    grads = _grads(loss, acts)
    total = 0.0
    for a, g in zip(acts, grads):
        per_channel = (a.detach() * g).reshape(a.shape[0], a.shape[1], -1).sum(-1) if a.dim() > 2 else a.detach() * g
        total += float(0.5 * per_channel.pow(2).mean(0).sum())
    return total


def jacob_cov(network: nn.Module, batch_x: Tensor, batch_y: Tensor, loss_fn: LossFn) -> float:
    """−Σ_i [log(λ_i + k) + 1/(λ_i + k)], λ the eigenvalues of the correlation matrix of the per-sample
    input Jacobians J_n = ∂(Σ outputs_n)/∂x_n, k = 1e-5 (Mellor et al. 2020, v1). Needs batch size ≥ 2."""
    del batch_y, loss_fn
    net = _copy(network)
    x = batch_x.detach().clone().requires_grad_(True)
    out = net(x)
    (jac,) = torch.autograd.grad(out.sum(), x)
    jac = jac.reshape(jac.shape[0], -1).double()
    corr = torch.corrcoef(jac)
    corr = torch.nan_to_num(corr, nan=0.0)
    eig = torch.linalg.eigvalsh(corr)
    k = 1e-5
    return float(-(torch.log(eig + k) + 1.0 / (eig + k)).sum())


def synflow(network: nn.Module, batch_x: Tensor, batch_y: Tensor, loss_fn: LossFn) -> float:
    """Σ θ ⊙ ∂R/∂θ over conv/linear weights, with every parameter replaced by |θ|, float64, BN in eval mode,
    one all-ones input of the batch's sample shape and R = Σ outputs (Tanaka et al. 2020). Works on a copy,
    so the caller's signs are never touched."""
    del batch_y, loss_fn
    net = copy.deepcopy(network).double()
    net.train()
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    for p in net.parameters():
        p.requires_grad_(True)
    weights = _layer_weights(net)
    ones = torch.ones((1, *batch_x.shape[1:]), dtype=torch.float64, device=batch_x.device)
    grads = _grads(net(ones).sum(), weights)
    return float(sum((w.detach() * g).sum() for w, g in zip(weights, grads)))


def naswot_kernel(codes: Sequence[Tensor]) -> Tensor:
    """K_H = Σ_layers [c cᵀ + (1 − c)(1 − c)ᵀ] for binary codes c (batch × units): N_A minus the Hamming distance."""
    n = codes[0].shape[0]
    k = torch.zeros(n, n, dtype=torch.float64)
    for c in codes:
        c = c.reshape(n, -1).double().cpu()
        k += c @ c.T + (1 - c) @ (1 - c).T
    return k


def naswot(network: nn.Module, batch_x: Tensor, batch_y: Tensor, loss_fn: LossFn) -> float:
    """log |det K_H| of the binary activation-code kernel over every nn.ReLU output (Mellor et al. 2021, v2)."""
    del batch_y, loss_fn
    net = _copy(network)
    codes: list[Tensor] = []

    def keep(_: nn.Module, __: Any, out: Tensor) -> None:
        codes.append((out.detach() > 0).flatten(1))

    handles = [m.register_forward_hook(keep) for m in _relus(net)]
    try:
        with torch.no_grad():
            net(batch_x)
    finally:
        for h in handles:
            h.remove()
    return float(torch.linalg.slogdet(naswot_kernel(codes))[1])


PROXIES: dict[str, Callable[[nn.Module, Tensor, Tensor, LossFn], float]] = {
    "grad_norm": grad_norm,
    "snip": snip,
    "grasp": grasp,
    "fisher": fisher,
    "jacob_cov": jacob_cov,
    "synflow": synflow,
    "naswot": naswot,
    "ntk": ntk,
    "linear_regions": linear_regions,
}


def random_batch(spec: Any, network: nn.Module, batch_size: int, seed: int) -> tuple[Tensor, Tensor]:
    """A seeded batch: standard-normal inputs of the task's input shape and random targets valid for its loss,
    shaped like the network's output (class indices for cross-entropy/focal, {0, 1} for BCE, normal reals else)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch_size, *spec.input_shape), generator=gen)
    was_training = network.training
    network.eval()
    with torch.no_grad():
        shape = network(x).shape
    network.train(was_training)
    if spec.loss in ("cross_entropy", "focal"):
        target_shape = (shape[0], *shape[2:])
        y = torch.randint(0, spec.num_outputs, target_shape, generator=gen)
    elif "bce" in spec.loss:
        y = torch.randint(0, 2, tuple(shape), generator=gen).float()
    else:
        y = torch.randn(tuple(shape), generator=gen)
    return x, y


def compute_proxies(
    network_name: str,
    spec: Any,
    options: Mapping[str, Any] | None = None,
    names: Sequence[str] | None = None,
    batch_size: int = 16,
    seed: int = 0,
    batch: tuple[Tensor, Tensor] | None = None,
) -> dict[str, float]:
    """Build ``network_name`` for ``spec`` (a TaskSpec or task name) with weights seeded by ``seed``, and score it.

    ``batch`` is a real ``(x, y)`` batch; without it a seeded random batch of ``batch_size`` is drawn.
    """
    from nb360.losses import build_loss
    from nb360.models import build_network
    from nb360.tasks import get_task

    if isinstance(spec, str):
        spec = get_task(spec)
    names = list(PROXIES) if names is None else list(names)
    unknown = [n for n in names if n not in PROXIES]
    if unknown:
        raise UsageError(f"unknown proxies {unknown}; choose from: {', '.join(PROXIES)}")
    torch.manual_seed(seed)
    network = build_network(network_name, spec, **dict(options or {}))
    x, y = random_batch(spec, network, batch_size, seed) if batch is None else batch
    loss_fn = build_loss(spec.loss)
    scores = {}
    for name in names:
        torch.manual_seed(seed)
        scores[name] = PROXIES[name](network, x, y, loss_fn)
    return scores


def proxy_correlations(scores: Any, ground_truth: Any, lower_is_better: bool = False) -> dict[str, float]:
    """Spearman ρ and Kendall τ between proxy scores (higher = better) and ground truth; with
    ``lower_is_better`` (an error metric) the ground truth is negated first, so a good proxy correlates positively."""
    from scipy import stats

    s = np.asarray(scores, dtype=float)
    g = np.asarray(ground_truth, dtype=float)
    if lower_is_better:
        g = -g
    rho = stats.spearmanr(s, g)[0]
    tau = stats.kendalltau(s, g)[0]
    return {"spearman": float(rho), "kendall": float(tau)}
