"""NAS-Bench-101 for the multi-trial algorithms: a :class:`Space` of 7-vertex encodings and an evaluator.

An architecture is an *encoding*: 21 edge bits of the 7 x 7 upper triangle (row-major:
0->1, 0->2, ..., 5->6) and 5 interior op codes, as a tuple of 26 ints. It is what the
reference's searches manipulate (the NASBench Colab's ``random_spec`` and ``mutate_spec``
work on the unpruned matrix); many encodings prune to the same cell, and the evaluator
looks up the cell.

* :meth:`NB101SearchSpace.sample`: a uniformly random encoding, redrawn until the spec is
  valid (``random_spec``).
* :meth:`NB101SearchSpace.mutate`: flip every edge with probability ``mutation_rate / 7``
  and resample every op (to a different one) with probability ``mutation_rate / 5``, retried
  until the spec is valid (``mutate_spec``) and, as the algorithm interface requires, the
  encoding differs from the parent.
* :meth:`decode` returns None for encodings that are not valid cells.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nb360.errors import UsageError
from nb360.nb101.spec import INPUT, MAX_VERTICES, OPS, OUTPUT, ModelSpec
from nb360.search.multitrial.base import Evaluation

__all__ = ["NB101SearchSpace", "NB101Evaluator", "EDGES", "encoding_spec", "spec_encoding"]

EDGES = tuple((i, j) for i in range(MAX_VERTICES) for j in range(i + 1, MAX_VERTICES))  # 21 (from, to) pairs
OP_SPOTS = MAX_VERTICES - 2


def encoding_spec(codes: Sequence[int]) -> ModelSpec:
    """The (pruned) spec of a 26-code encoding."""
    matrix = np.zeros((MAX_VERTICES, MAX_VERTICES), dtype=np.int8)
    for (i, j), bit in zip(EDGES, codes[: len(EDGES)]):
        matrix[i, j] = bit
    return ModelSpec(matrix, [INPUT, *(OPS[int(c)] for c in codes[len(EDGES) :]), OUTPUT])


def spec_encoding(spec: Any) -> tuple[int, ...]:
    """The 26-code encoding of a spec (a pruned cell of V < 7 vertices gets isolated conv3x3 vertices before OUT)."""
    spec = ModelSpec.coerce(spec)
    labels = spec.labels()
    n = spec.num_vertices
    assert spec.matrix is not None
    matrix = np.zeros((MAX_VERTICES, MAX_VERTICES), dtype=np.int8)
    keep = [*range(n - 1), MAX_VERTICES - 1]  # vertex v of the cell sits at keep[v]
    matrix[np.ix_(keep, keep)] = spec.matrix
    ops = [0] * OP_SPOTS
    ops[: n - 2] = labels
    return tuple(int(matrix[i, j]) for i, j in EDGES) + tuple(ops)


class NB101SearchSpace:
    """The encodings of NB101 cells for :mod:`nb360.search.multitrial` (``mutation_rate`` 1.0: the Colab's default)."""

    name = "nb101"
    radices = (2,) * len(EDGES) + (len(OPS),) * OP_SPOTS

    def __init__(
        self, mutation_rate: float = 1.0, max_tries: int = 100_000, member: Callable[[tuple[int, ...]], bool] | None = None
    ) -> None:
        if mutation_rate <= 0:
            raise UsageError(f"mutation_rate must be positive, got {mutation_rate}")
        self.mutation_rate = float(mutation_rate)
        self.max_tries = int(max_tries)
        self.member = member  # an extra condition (e.g. the cell has data), as invalid cells are treated

    def __repr__(self) -> str:
        return f"NB101SearchSpace(mutation_rate={self.mutation_rate})"

    def is_valid(self, codes: Sequence[int]) -> bool:
        return encoding_spec(codes).is_valid() and (self.member is None or self.member(tuple(codes)))

    def sample(self, rng: random.Random) -> tuple[int, ...]:
        for _ in range(self.max_tries):
            bits = rng.getrandbits(len(EDGES))
            codes = tuple((bits >> k) & 1 for k in range(len(EDGES))) + tuple(rng.randrange(len(OPS)) for _ in range(OP_SPOTS))
            if self.is_valid(codes):
                return codes
        raise RuntimeError("no valid NB101 cell sampled")  # pragma: no cover - about a third of encodings are valid

    def mutate(self, arch: Sequence[int], rng: random.Random) -> tuple[int, ...]:
        arch = tuple(int(c) for c in arch)
        edge_p, op_p = self.mutation_rate / MAX_VERTICES, self.mutation_rate / OP_SPOTS
        r = rng.random
        for _ in range(self.max_tries):
            codes = list(arch)
            for k in range(len(EDGES)):
                if r() < edge_p:
                    codes[k] = 1 - codes[k]
            for k in range(len(EDGES), len(codes)):
                if r() < op_p:
                    other = rng.randrange(len(OPS) - 1)
                    codes[k] = other if other < codes[k] else other + 1
            new = tuple(codes)
            if new != arch and self.is_valid(new):
                return new
        raise RuntimeError(f"no valid mutation of {arch} found")  # pragma: no cover

    def encode(self, arch: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(c) for c in arch)

    def decode(self, codes: Sequence[int]) -> tuple[int, ...] | None:
        codes = tuple(int(c) for c in codes)
        if len(codes) != len(self.radices) or any(not 0 <= c < r for c, r in zip(codes, self.radices)):
            return None
        return codes if self.is_valid(codes) else None


class NB101Evaluator:
    """An :class:`~nb360.search.multitrial.base.Evaluator` over an :class:`~nb360.nb101.api.NB101Benchmark`.

    The score is the validation accuracy after ``budget`` epochs (a budget of the data:
    4, 12, 36 or 108; None: ``max_budget``), of one random repeat (``seed_mode="random"``, the
    reference's query) or their mean; the cost is that run's training time. :meth:`report` is
    the mean test accuracy of the 108-epoch runs (the paper's protocol). Cells without data
    at a budget raise :class:`~nb360.nb101.spec.OutOfDomainError`.
    """

    metric = "validation_accuracy"
    lower_is_better = False

    def __init__(self, bench: Any, max_budget: int = 108, seed_mode: str = "random", report_epochs: int = 108) -> None:
        if seed_mode not in ("random", "mean"):
            raise UsageError(f"unknown seed mode {seed_mode!r}; choose 'random' or 'mean'")
        if max_budget not in bench.valid_epochs or report_epochs not in bench.valid_epochs:
            raise UsageError(f"budgets must be among the data's epochs {sorted(bench.valid_epochs)}")
        self.bench, self.max_budget, self.seed_mode = bench, int(max_budget), seed_mode
        self._columns: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        test = bench.scores(report_epochs, "test_accuracy")
        runs = (~np.isnan(test)).sum(axis=0)
        self._report = np.where(runs > 0, np.nansum(test, axis=0) / np.maximum(runs, 1), np.nan)  # mean over runs
        self._index: dict[tuple[int, ...], int] = {}

    def space(self, mutation_rate: float = 1.0) -> NB101SearchSpace:
        """The search space restricted to the cells with data at ``max_budget`` (all cells for a complete store)."""
        score, _ = self._column(self.max_budget)
        has = ~np.all(np.isnan(score), axis=0)
        if has.all():
            return NB101SearchSpace(mutation_rate)
        sizes = set((self.bench.space.codes[has] >> 29).tolist())  # vertex counts with data: a cheap first check

        def member(codes: tuple[int, ...]) -> bool:
            return encoding_spec(codes).num_vertices in sizes and bool(has[self.index(codes)])

        return NB101SearchSpace(mutation_rate, member=member)

    def index(self, arch: Sequence[int]) -> int:
        """The cell index of an encoding (cached)."""
        key = tuple(arch)
        i = self._index.get(key)
        if i is None:
            i = self._index[key] = self.bench.space.index(encoding_spec(key))
        return i

    def _column(self, epochs: int) -> tuple[np.ndarray, np.ndarray]:
        if epochs not in self.bench.valid_epochs:
            raise UsageError(f"budget {epochs} is not one of the data's epochs {sorted(self.bench.valid_epochs)}")
        if epochs not in self._columns:
            self._columns[epochs] = (
                self.bench.scores(epochs, "validation_accuracy"),
                self.bench.scores(epochs, "training_time"),
            )
        return self._columns[epochs]

    def evaluate(self, arch: Sequence[int], budget: int | None = None, rng: random.Random | None = None) -> Evaluation:
        from nb360.nb101.spec import OutOfDomainError

        score, cost = self._column(self.max_budget if budget is None else int(budget))
        i = self.index(arch)
        runs = np.flatnonzero(~np.isnan(score[:, i]))
        if not len(runs):
            raise OutOfDomainError(f"cell {self.bench.space.arch(i)} has no {budget or self.max_budget}-epoch data")
        if self.seed_mode == "mean":
            return Evaluation(float(np.mean(score[runs, i])), float(np.mean(cost[runs, i])))
        if rng is None:
            raise UsageError("seed_mode='random' needs an rng")
        s = int(runs[int(rng.random() * len(runs))])
        return Evaluation(float(score[s, i]), float(cost[s, i]))

    def report(self, arch: Sequence[int]) -> float:
        return float(self._report[self.index(arch)])

    def best_report(self) -> tuple[int, float]:
        """``(cell index, mean test accuracy)`` of the best cell with data."""
        k = int(np.nanargmax(self._report))
        return k, float(self._report[k])
