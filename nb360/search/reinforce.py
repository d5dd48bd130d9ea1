"""REINFORCE with a moving-average baseline for controller-based searches (ENAS-style), written once.

:class:`Reinforce` keeps the baseline and the sample count as buffers (so they are checkpointed
with the search module) and accumulates the policy gradients of ``aggregate`` samples before it
hands them to the caller's architecture optimiser (the shared
:meth:`~nb360.search.bilevel.SearchModule.step_architecture`, which averages them over processes).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["Reinforce"]


class Reinforce(nn.Module):
    """Policy-gradient bookkeeping.

    Args:
        baseline_decay: ``b <- decay * b + (1 - decay) * reward`` (the first reward starts it).
        aggregate: samples whose gradients are summed before one optimiser step.
        grad_clip: L2 norm the summed gradients are clipped to (0: none).
    """

    def __init__(self, baseline_decay: float = 0.99, aggregate: int = 20, grad_clip: float = 0.0) -> None:
        super().__init__()
        self.baseline_decay, self.aggregate, self.grad_clip = baseline_decay, aggregate, grad_clip
        self.register_buffer("baseline", torch.tensor(math.nan))
        self.register_buffer("samples", torch.tensor(0))
        self._accumulated: list[Tensor] | None = None

    def advantage(self, reward: float) -> tuple[float, float]:
        """Update the baseline with ``reward``; return ``(reward - baseline, baseline)``."""
        previous = float(self.baseline)
        baseline = reward if math.isnan(previous) else previous - (1 - self.baseline_decay) * (previous - reward)
        self.baseline.fill_(baseline)
        return reward - baseline, baseline

    def accumulate(self, loss: Tensor, params: list[nn.Parameter]) -> bool:
        """Add the gradients of one sample's ``loss`` (already scaled by the caller); when ``aggregate`` samples are
        in, write their (clipped) sum into ``p.grad`` and return True: the caller then steps its optimiser."""
        grads = torch.autograd.grad(loss / self.aggregate, params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
        self._accumulated = grads if self._accumulated is None else [a + g for a, g in zip(self._accumulated, grads)]
        self.samples += 1
        if int(self.samples) % self.aggregate:
            return False
        for p, g in zip(params, self._accumulated):
            p.grad = g
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        self._accumulated = None
        return True
