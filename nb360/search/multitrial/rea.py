"""Regularized evolution, i.e. aging evolution (Real et al. 2019), as NATS-Bench's ``regularized_ea.py`` runs it.

Reference settings: population 10, tournament of 3 drawn with replacement, the parent is the best of the
tournament (the first one on ties), the child changes one decision to a different choice, and the oldest
member dies. The initial population is evaluated in full before the budget is first checked; then a cycle
runs while the time used is below the budget. The reference takes ``--ea_cycles 200`` but never reads it
(only the time budget stops it); ``cycles`` here is that optional cap, off by default.

One deviation: the reference's topology mutation picks a node, then one of its incoming edges (so the edge
into node 1 changes with probability 1/3, each edge into node 3 with 1/9); here the space's ``mutate``
decides, which for a product space is a uniform decision. (The reference's size-space mutation may redraw
the same width; here a mutation always changes the architecture.)
"""

from __future__ import annotations

import collections
import random

from nb360.search.multitrial.base import Evaluator, History, Space, make_rng

__all__ = ["run"]


def run(
    space: Space,
    evaluator: Evaluator,
    budget_seconds: float,
    rng: random.Random | int | None = None,
    *,
    population_size: int = 10,
    sample_size: int = 3,
    cycles: int | None = None,
) -> History:
    """Aging evolution until ``budget_seconds`` are used (or ``cycles`` children, if given)."""
    rng = make_rng(rng)
    history = History(budget_seconds, evaluator.lower_is_better)
    sign = -1.0 if evaluator.lower_is_better else 1.0  # fitness: higher is better
    sample, mutate, evaluate, add, r = space.sample, space.mutate, evaluator.evaluate, history.add, rng.random
    population: collections.deque[tuple[float, object]] = collections.deque()
    for _ in range(population_size):
        arch = sample(rng)
        population.append((sign * add(arch, None, evaluate(arch, None, rng)), arch))
    cycle = 0
    while not history.exhausted and (cycles is None or cycle < cycles):
        size = len(population)
        parent = population[int(r() * size)]
        for _ in range(sample_size - 1):
            candidate = population[int(r() * size)]
            if candidate[0] > parent[0]:
                parent = candidate
        child = mutate(parent[1], rng)
        population.append((sign * add(child, None, evaluate(child, None, rng)), child))
        population.popleft()
        cycle += 1
    return history
