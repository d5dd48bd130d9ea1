"""Random search without weight sharing (NATS-Bench's ``random_wo_share.py``).

Uniform samples, with repetition, each evaluated with the full budget, until the time budget is spent.
"""

from __future__ import annotations

import random

from nb360.search.multitrial.base import Evaluator, History, Space, make_rng

__all__ = ["run"]


def run(space: Space, evaluator: Evaluator, budget_seconds: float, rng: random.Random | int | None = None) -> History:
    """Sample and evaluate until ``budget_seconds`` of (simulated) time are used; the crossing trial counts."""
    rng = make_rng(rng)
    history = History(budget_seconds, evaluator.lower_is_better)
    sample, evaluate, add = space.sample, evaluator.evaluate, history.add
    while not history.exhausted:
        arch = sample(rng)
        add(arch, None, evaluate(arch, None, rng))
    return history
