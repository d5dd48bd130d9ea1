"""Training losses of the NB360 tasks, named in each TaskSpec.

Every loss takes ``(preds, target, **extras)`` where ``extras`` are the other keys of
the batch (for example Cosmic's ``ignore`` mask); losses ignore keys they do not use.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nb360.errors import UsageError

__all__ = ["LOSSES", "build_loss", "relative_l2"]


def relative_l2(preds: Tensor, target: Tensor) -> Tensor:
    """Per-sample relative l2 error ||preds - target|| / ||target||, flattened over all but the batch axis."""
    n = target.shape[0]
    diff = torch.linalg.vector_norm(preds.reshape(n, -1) - target.reshape(n, -1), dim=1)
    return diff / torch.linalg.vector_norm(target.reshape(n, -1), dim=1)


class CrossEntropy(nn.Module):
    def forward(self, preds: Tensor, target: Tensor, **_: Any) -> Tensor:
        return F.cross_entropy(preds, target)


class BCEWithLogits(nn.Module):
    """Binary cross-entropy on logits, averaged over all elements (multi-label and per-pixel tasks)."""

    def forward(self, preds: Tensor, target: Tensor, **_: Any) -> Tensor:
        return F.binary_cross_entropy_with_logits(preds, target.to(preds.dtype))


class MaskedBCEWithLogits(nn.Module):
    """Cosmic's loss: ``BCE(logits * (1 - ignore), mask * (1 - ignore))`` averaged over all pixels.

    Ignored pixels still count, at the constant log 2 of a zero logit, as in the reference.
    """

    def forward(self, preds: Tensor, target: Tensor, ignore: Tensor | None = None, **_: Any) -> Tensor:
        if ignore is not None:
            keep = 1 - ignore.to(preds.dtype)
            preds, target = preds * keep, target * keep
        return F.binary_cross_entropy_with_logits(preds, target.to(preds.dtype))


class RelativeL2Sum(nn.Module):
    """Darcy Flow's training loss: the sum over the batch of per-sample relative l2 errors.

    The reference sums rather than averages (``LpLoss(size_average=False)``); the sum
    sets the effective learning rate, so it is kept. ``sums_over_batch`` tells the training
    modules to keep it a sum over the global batch under DDP (see ``TaskModule.batch_loss``).
    """

    sums_over_batch = True

    def forward(self, preds: Tensor, target: Tensor, **_: Any) -> Tensor:
        return relative_l2(preds, target).sum()


class MSE(nn.Module):
    def forward(self, preds: Tensor, target: Tensor, **_: Any) -> Tensor:
        return F.mse_loss(preds, target.to(preds.dtype))


class Focal(nn.Module):
    """NinaPro's expert loss (its Keras ``FocalLoss``): ``alpha * (1 - p_t)^gamma * -log(p_t)``, averaged over the batch.

    ``p_t`` is the softmax probability of the true class plus 1e-9, as in the reference (which
    takes softmax outputs; ``preds`` here are logits). ``alpha`` is a plain factor on every
    class, not a class weight.
    """

    def __init__(self, gamma: float = 3.0, alpha: float = 6.0, eps: float = 1e-9) -> None:
        super().__init__()
        self.gamma, self.alpha, self.eps = gamma, alpha, eps

    def forward(self, preds: Tensor, target: Tensor, **_: Any) -> Tensor:
        p_t = preds.float().softmax(dim=1).gather(1, target.long()[:, None]).squeeze(1) + self.eps
        # the reference keeps the largest per-class term, 0 for the other classes: clamp at 0
        return (self.alpha * (1 - p_t) ** self.gamma * -torch.log(p_t)).clamp(min=0).mean()


class LogCosh(nn.Module):
    """PSICOV's expert loss (Keras ``logcosh``): ``log(cosh(preds - target))`` averaged over all elements.

    Computed as ``|d| + softplus(-2 |d|) - log 2``, which does not overflow for large differences.
    """

    def forward(self, preds: Tensor, target: Tensor, **_: Any) -> Tensor:
        d = (preds - target.to(preds.dtype)).abs()
        return (d + F.softplus(-2 * d) - math.log(2.0)).mean()


LOSSES: dict[str, Callable[[], nn.Module]] = {
    "cross_entropy": CrossEntropy,
    "bce_with_logits": BCEWithLogits,
    "masked_bce_with_logits": MaskedBCEWithLogits,
    "relative_l2_sum": RelativeL2Sum,
    "mse": MSE,
    "focal": Focal,
    "logcosh": LogCosh,
}


def build_loss(name: str) -> nn.Module:
    try:
        return LOSSES[name]()
    except KeyError:
        raise UsageError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}") from None
