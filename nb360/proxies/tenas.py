"""TE-NAS' two training-free measures (Chen et al., ICLR 2021): the NTK condition number and the linear-region count.

Both follow the proxy signature of :mod:`nb360.proxies` (``proxy(network, batch_x, batch_y, loss_fn)``;
``batch_y`` and ``loss_fn`` are unused) and work on a deep copy in train mode, so BatchNorm
normalises with the batch's statistics, as the reference measures them.

* :func:`ntk_condition_number` is ``kappa = lambda_max / lambda_min`` of the empirical NTK; lower is
  better (TE-NAS). :func:`ntk` returns ``-kappa`` so that, like every proxy of :data:`nb360.proxies.PROXIES`,
  higher is better.
* :func:`linear_regions` is the number of distinct ReLU activation patterns over the batch; higher is better.

Formulas and the search protocol are in ``docs/proxies.md`` (section TE-NAS).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from nb360.proxies import LossFn

__all__ = [
    "NAN_CONDITION",
    "condition_number",
    "count_regions",
    "linear_regions",
    "ntk",
    "ntk_condition_number",
    "ntk_parameters",
]

#: the condition number reported when the eigenvalue ratio is not a number (the reference's replacement value)
NAN_CONDITION = 100000.0


def ntk_parameters(net: nn.Module, which: str = "weights") -> list[Tensor]:
    """The parameters the NTK differentiates: those named ``*weight*`` (conv, linear, affine BN scales; the
    reference's choice) with ``which="weights"``, or every trainable parameter with ``which="all"``."""
    if which not in ("weights", "all"):
        raise ValueError(f"which must be 'weights' or 'all', got {which!r}")
    return [
        p for name, p in net.named_parameters() if p.requires_grad and (which == "all" or "weight" in name.rsplit(".", 1)[-1])
    ]


def ntk_condition_number(
    network: nn.Module, batch_x: Tensor, batch_y: Tensor | None = None, loss_fn: LossFn | None = None, which: str = "weights"
) -> float:
    """``lambda_max / lambda_min`` of the empirical NTK ``Theta = J J^T`` (float64 ``eigvalsh``).

    Row ``n`` of ``J`` is the gradient, with respect to the parameters of :func:`ntk_parameters`, of the sum of
    sample ``n``'s outputs (every class or position), from one forward pass over the whole batch followed by one
    backward pass per sample (as TE-NAS; run batched where autograd can). A ratio that is not a number is
    reported as :data:`NAN_CONDITION`. Needs batch size >= 2; lower is better.
    """
    from nb360.proxies import _copy  # here: nb360.proxies imports this module

    del batch_y, loss_fn
    return condition_number(_copy(network), batch_x, which)


def condition_number(net: nn.Module, batch_x: Tensor, which: str = "weights") -> float:
    """:func:`ntk_condition_number` of ``net`` itself, in its current mode (no copy; its ``.grad`` stay untouched)."""
    from nb360.proxies import _grads

    params = ntk_parameters(net, which)
    out = net(batch_x)
    n = out.shape[0]
    try:  # every sample's backward pass at once (vmap over the output gradients)
        eye = torch.eye(n, dtype=out.dtype, device=out.device).reshape(n, n, *[1] * (out.dim() - 1)).expand(n, *out.shape)
        grads = torch.autograd.grad(out, params, grad_outputs=eye, is_grads_batched=True, allow_unused=True, retain_graph=True)
        jac = torch.cat(
            [torch.zeros(n, p.numel(), device=out.device) if g is None else g.reshape(n, -1) for p, g in zip(params, grads)], 1
        )
    except RuntimeError:  # an operation without a batching rule: one backward pass per sample
        rows = []
        for i in range(n):
            rows.append(torch.cat([g.reshape(-1) for g in _grads(out[i].sum(), params, retain_graph=i < n - 1)]))
        jac = torch.stack(rows)
    jac = jac.detach().double()
    eig = torch.linalg.eigvalsh(jac @ jac.T)  # ascending
    cond = float(eig[-1] / eig[0])
    return NAN_CONDITION if np.isnan(cond) else cond


def ntk(network: nn.Module, batch_x: Tensor, batch_y: Tensor, loss_fn: LossFn) -> float:
    """``-kappa`` of :func:`ntk_condition_number`: higher is better, like every proxy of ``PROXIES``."""
    return -ntk_condition_number(network, batch_x, batch_y, loss_fn)


def linear_regions(
    network: nn.Module,
    batch_x: Tensor,
    batch_y: Tensor | None = None,
    loss_fn: LossFn | None = None,
    batch_size: int | None = None,
) -> float:
    """The number of distinct activation patterns over the samples of ``batch_x``.

    A sample's pattern is the sign (``> 0``) of the input of every unit of every ``nn.ReLU`` module that runs,
    concatenated over modules; two samples lie in the same linear region iff their patterns agree. With
    ``batch_size`` the batch is forwarded in chunks of that size (BatchNorm then normalises each chunk with its
    own statistics: the reference forwards 3 batches of 1000 inputs and counts over all 3000). Higher is better.
    """
    from nb360.proxies import _copy

    del batch_y, loss_fn
    return count_regions(_copy(network), batch_x, batch_size)


def count_regions(net: nn.Module, batch_x: Tensor, batch_size: int | None = None) -> float:
    """:func:`linear_regions` of ``net`` itself, in its current mode (no copy; its ReLUs are made out-of-place)."""
    from nb360.proxies import _relus

    codes: list[Tensor] = []

    def keep(_: nn.Module, __: Any, out: Tensor) -> None:
        codes.append((out.detach() > 0).flatten(1).cpu())

    patterns = []
    handles = [m.register_forward_hook(keep) for m in _relus(net)]
    try:
        with torch.no_grad():
            for chunk in batch_x.split(batch_size or len(batch_x)):
                codes.clear()
                net(chunk)
                if codes:
                    patterns.append(torch.cat(codes, dim=1))
    finally:
        for h in handles:
            h.remove()
    if not patterns:
        return 1.0  # no ReLU ran: the network is linear, one region
    packed = np.packbits(torch.cat(patterns).numpy(), axis=1)
    return float(np.unique(packed, axis=0).shape[0])
