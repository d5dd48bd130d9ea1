"""REINFORCE with a factorised categorical policy, as NATS-Bench's ``reinforce.py`` (in NumPy, no PyTorch).

Reference settings: one row of logits per decision, initialised to ``1e-3 * N(0, 1)``; an architecture is one
independent draw per row from its softmax; Adam (lr 0.01, betas 0.9/0.999, eps 1e-8, PyTorch's update rule)
on the loss ``-(sum of the draws' log-probabilities) * (reward - baseline)``; the baseline is a bias-corrected
exponential moving average (momentum 0.9) that is updated with the reward *before* the advantage is taken.
The reward is the raw search score (accuracy in %, not normalised), negated when lower is better (the
reference's Darcy reward, 1 - relative l2, differs from that by a constant, which the baseline cancels:
the updates are identical). The gradient is written out: for a softmax row ``p`` and draw ``a``,
``d(-log p_a)/d logits = p - onehot(a)``. Rows of spaces with fewer choices than the widest decision are
padded with logits of -inf. Computations are in float64 (the reference uses float32).

A drawn code tuple that the space rejects (``decode`` gives None) is drawn again without cost.
"""

from __future__ import annotations

import random

import numpy as np

from nb360.search.multitrial.base import Evaluator, History, Space, make_rng

__all__ = ["Policy", "run"]


class Policy:
    """Per-decision softmax logits with a NumPy Adam optimiser (PyTorch's ``torch.optim.Adam`` arithmetic)."""

    def __init__(self, radices: tuple[int, ...], rng: np.random.Generator, lr: float = 0.01) -> None:
        self.radices = radices
        width = max(radices)
        self.mask = np.arange(width)[None, :] < np.asarray(radices)[:, None]
        self.logits = np.where(self.mask, 1e-3 * rng.standard_normal((len(radices), width)), -np.inf)
        self.lr, self.beta1, self.beta2, self.eps = lr, 0.9, 0.999, 1e-8
        self.m = np.zeros_like(self.logits)
        self.v = np.zeros_like(self.logits)
        self.steps = 0
        self._rows = np.arange(len(radices))
        self._last = np.asarray(radices) - 1

    def probs(self) -> np.ndarray:
        z = np.exp(self.logits - self.logits.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def sample(self, probs: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One choice per decision from uniform numbers ``u`` (inverse CDF)."""
        actions = (u[:, None] >= np.cumsum(probs, axis=1)).sum(axis=1)
        return np.minimum(actions, self._last)  # guards against a cumulative sum just below 1

    def step(self, probs: np.ndarray, actions: np.ndarray, advantage: float) -> None:
        """One Adam step on ``-sum(log p[actions]) * advantage``."""
        grad = probs * advantage
        grad[self._rows, actions] -= advantage
        grad[~self.mask] = 0.0
        self.steps += 1
        self.m = self.beta1 * self.m + (1 - self.beta1) * grad
        self.v = self.beta2 * self.v + (1 - self.beta2) * grad * grad
        bias1 = 1 - self.beta1**self.steps
        bias2 = 1 - self.beta2**self.steps
        denom = np.sqrt(self.v) / np.sqrt(bias2) + self.eps
        self.logits = np.where(self.mask, self.logits - (self.lr / bias1) * self.m / denom, -np.inf)


def run(
    space: Space,
    evaluator: Evaluator,
    budget_seconds: float,
    rng: random.Random | int | None = None,
    *,
    learning_rate: float = 0.01,
    ema_momentum: float = 0.9,
    policy: Policy | None = None,
) -> History:
    """REINFORCE until ``budget_seconds`` are used; ``policy`` (optional) is trained in place, for inspection."""
    rng = make_rng(rng)
    np_rng = np.random.default_rng(rng.getrandbits(64))
    history = History(budget_seconds, evaluator.lower_is_better)
    policy = policy or Policy(space.radices, np_rng, learning_rate)
    sign = -1.0 if evaluator.lower_is_better else 1.0
    numerator = denominator = 0.0
    n = len(space.radices)
    while not history.exhausted:
        probs = policy.probs()
        while True:
            actions = policy.sample(probs, np_rng.random(n))
            arch = space.decode(actions.tolist())
            if arch is not None:
                break
        reward = sign * history.add(arch, None, evaluator.evaluate(arch, None, rng))
        numerator = ema_momentum * numerator + (1 - ema_momentum) * reward
        denominator = ema_momentum * denominator + (1 - ema_momentum)
        policy.step(probs, actions, reward - numerator / denominator)
    return history
