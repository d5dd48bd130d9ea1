"""The interface between multi-trial search algorithms, search spaces and evaluators.

An algorithm is a function ``run(space, evaluator, budget_seconds, rng, **hyperparameters) -> History``. It
knows nothing about where architectures or scores come from; it sees only these two protocols:

* :class:`Space`: ``sample(rng)``, ``mutate(arch, rng)`` (a *different* architecture), ``encode(arch)``
  (a tuple of categorical codes, one per decision), ``radices`` (the number of choices of each decision) and
  ``decode(codes)`` (the architecture, or ``None`` when the codes name an invalid one, as NAS-Bench-101 has).
  Architectures must be hashable. :class:`CodesSpace` is a space whose architectures *are* their code tuples;
  :func:`product_space` turns any :class:`nb360.spaces.ProductSpace` into one (optionally restricted to the
  architectures a benchmark evaluated).
* :class:`Evaluator`: ``evaluate(arch, budget, rng) -> Evaluation(score, cost)`` trains (or looks up) ``arch``
  for ``budget`` epochs (``None`` = the full protocol, ``max_budget`` epochs) and says how many seconds that
  took; ``lower_is_better`` and ``metric`` describe the score; ``report(arch)`` is the value reported after
  the search (e.g. the test score of the 200-epoch run) and costs no search time.
  :class:`nb360.search.multitrial.tabular.TabularEvaluator` looks everything up in a tabular benchmark; an
  evaluator that really trains implements the same four members and returns its measured wall time as ``cost``.

Random numbers come from a :class:`random.Random` (``rng``): scalar draws from it cost a fraction of a
microsecond, where a NumPy ``Generator`` call costs microseconds, and a search draws a few per trial.
:func:`make_rng` derives one from a seed; an evaluator that needs a seed of its own takes ``rng.getrandbits(32)``.

**Time accounting** (as NATS-Bench's ``exps/NATS-algos``): every evaluation adds its ``cost`` to a running
total (left to right, like NATS's ``api.used_time``), and an algorithm stops *after* the first evaluation that
brings the total to ``budget_seconds`` or beyond: a search starts an evaluation while ``total < budget`` and
that last evaluation counts in the history. REA evaluates its whole initial population before it first looks
at the budget, as the reference does.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from nb360.errors import UsageError

__all__ = [
    "Arch",
    "CodesSpace",
    "Evaluation",
    "Evaluator",
    "History",
    "Space",
    "Trial",
    "make_rng",
    "product_space",
]

Arch = Hashable


@runtime_checkable
class Space(Protocol):
    """What a search algorithm needs from a search space."""

    radices: tuple[int, ...]

    def sample(self, rng: random.Random) -> Arch: ...

    def mutate(self, arch: Arch, rng: random.Random) -> Arch: ...

    def encode(self, arch: Arch) -> tuple[int, ...]: ...

    def decode(self, codes: Sequence[int]) -> Arch | None: ...


class Evaluation(NamedTuple):
    """One evaluation: the search score and the seconds it took (simulated or measured)."""

    score: float
    cost: float


@runtime_checkable
class Evaluator(Protocol):
    """What a search algorithm needs from whatever trains or looks up an architecture."""

    max_budget: int  # epochs of a full evaluation (budget=None)
    lower_is_better: bool
    metric: str  # the name of the search score

    def evaluate(self, arch: Arch, budget: int | None, rng: random.Random) -> Evaluation: ...

    def report(self, arch: Arch) -> float: ...


def make_rng(seed: int | random.Random | np.random.Generator | None) -> random.Random:
    """A :class:`random.Random` from an int, a NumPy generator (one draw from it) or an existing one."""
    if isinstance(seed, random.Random):
        return seed
    if isinstance(seed, np.random.Generator):
        return random.Random(int(seed.integers(2**63)))
    return random.Random(seed)


class CodesSpace:
    """A space whose architectures are tuples of codes, optionally restricted to ``members`` (the valid ones).

    Without ``members`` every code tuple is valid. With them (e.g. the architectures a partial benchmark
    evaluated), sampling draws from the product and rejects invalid tuples, falling back to a uniform draw
    from the members when they are sparse; a mutation changes one decision to a different choice and tries
    the single-decision neighbours in random order until it finds a valid one (a sampled architecture if
    none is valid).
    """

    def __init__(
        self,
        radices: Sequence[int],
        members: Sequence[Sequence[int]] | None = None,
        *,
        name: str = "codes",
        to_string: Callable[[tuple[int, ...]], str] | None = None,
    ) -> None:
        self.radices = tuple(int(r) for r in radices)
        if not self.radices or min(self.radices) < 1:
            raise ValueError("a space needs at least one decision, each with at least one choice")
        self.name = name
        self._to_string = to_string
        self._members: list[tuple[int, ...]] | None = None
        self._valid: frozenset[tuple[int, ...]] | None = None
        if members is not None:
            self._members = sorted({tuple(int(c) for c in m) for m in members})
            if not self._members:
                raise UsageError(f"space {name}: no valid architecture")
            self._valid = frozenset(self._members)
        size = int(np.prod(self.radices))
        self._dense = self._members is None or len(self._members) * 4 >= size  # rejection sampling is cheap

    def __len__(self) -> int:
        return int(np.prod(self.radices)) if self._members is None else len(self._members)

    def __repr__(self) -> str:
        return f"CodesSpace({self.name!r}, radices={self.radices}, {len(self)} architectures)"

    def is_valid(self, codes: tuple[int, ...]) -> bool:
        return self._valid is None or codes in self._valid

    def sample(self, rng: random.Random) -> tuple[int, ...]:
        if self._dense:
            r = rng.random
            while True:
                codes = tuple(int(r() * n) for n in self.radices)
                if self._valid is None or codes in self._valid:
                    return codes
        return self._members[int(rng.random() * len(self._members))]

    def mutate(self, arch: tuple[int, ...], rng: random.Random) -> tuple[int, ...]:
        r, radices = rng.random, self.radices
        d = int(r() * len(radices))
        other = int(r() * (radices[d] - 1))
        if other >= arch[d]:
            other += 1
        child = arch[:d] + (other,) + arch[d + 1 :]
        if self._valid is None or child in self._valid:
            return child
        neighbours = [arch[:d] + (c,) + arch[d + 1 :] for d, n in enumerate(radices) for c in range(n) if c != arch[d]]
        rng.shuffle(neighbours)
        for child in neighbours:
            if child in self._valid:
                return child
        while len(self) > 1:
            child = self.sample(rng)
            if child != arch:
                return child
        return arch

    def encode(self, arch: tuple[int, ...]) -> tuple[int, ...]:
        return arch

    def decode(self, codes: Sequence[int]) -> tuple[int, ...] | None:
        codes = tuple(int(c) for c in codes)
        if len(codes) != len(self.radices) or any(not 0 <= c < n for c, n in zip(codes, self.radices)):
            return None
        return codes if self.is_valid(codes) else None

    def to_string(self, arch: tuple[int, ...]) -> str:
        return self._to_string(arch) if self._to_string is not None else ",".join(map(str, arch))


def product_space(space: Any, members: Sequence[Sequence[int]] | None = None) -> CodesSpace:
    """A :class:`CodesSpace` over an :class:`nb360.spaces.ProductSpace` (architectures = its code tuples)."""
    return CodesSpace(space.radices, members, name=space.name, to_string=space.format)


@dataclass(frozen=True)
class Trial:
    """One evaluation in a search: the architecture, its budget (epochs, None = full), score, cost and the running time."""

    arch: Arch
    budget: int | None
    score: float
    cost: float
    time: float  # cumulative simulated seconds after this trial


class History:
    """Every evaluation of one search, in order, with the running time and the incumbent after each.

    The incumbent is the best search score so far at any budget (first seen wins ties), as the NATS
    scripts compute ``max(history, key=accuracy)``. Stored as parallel lists so that a trial costs a few
    appends; :meth:`trials` gives :class:`Trial` records.
    """

    __slots__ = ("budget_seconds", "lower_is_better", "archs", "budgets", "scores", "costs", "times", "best", "total", "_best")

    def __init__(self, budget_seconds: float, lower_is_better: bool) -> None:
        if not budget_seconds > 0:
            raise UsageError(f"the search budget must be a positive number of seconds, not {budget_seconds!r}")
        self.budget_seconds = float(budget_seconds)
        self.lower_is_better = bool(lower_is_better)
        self.archs: list[Arch] = []
        self.budgets: list[int | None] = []
        self.scores: list[float] = []
        self.costs: list[float] = []
        self.times: list[float] = []
        self.best: list[int] = []  # position of the incumbent after each trial
        self.total = 0.0
        self._best = -1

    def add(self, arch: Arch, budget: int | None, evaluation: Evaluation) -> float:
        """Record one evaluation; returns its score."""
        score, cost = evaluation
        self.total += cost
        n = len(self.scores)
        best = self._best
        current = self.scores[best] if best >= 0 else math.nan
        if current != current or (score < current if self.lower_is_better else score > current):  # NaN: none yet
            best = self._best = n
        self.archs.append(arch)
        self.budgets.append(budget)
        self.scores.append(score)
        self.costs.append(cost)
        self.times.append(self.total)
        self.best.append(best)
        return score

    @property
    def exhausted(self) -> bool:
        """True once the running time reached the budget: no further evaluation starts."""
        return self.total >= self.budget_seconds

    def __len__(self) -> int:
        return len(self.scores)

    def trials(self) -> Iterator[Trial]:
        return map(Trial, self.archs, self.budgets, self.scores, self.costs, self.times)

    @property
    def best_arch(self) -> Arch | None:
        """The incumbent after the last trial (None before any)."""
        return self.archs[self._best] if self._best >= 0 else None

    def incumbent_at(self, time: float) -> Arch | None:
        """The incumbent among the trials finished by ``time`` (None if none had)."""
        k = int(np.searchsorted(np.asarray(self.times), time, side="right")) - 1
        return self.archs[self.best[k]] if k >= 0 else None
