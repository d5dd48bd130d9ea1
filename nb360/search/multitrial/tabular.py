"""Evaluating architectures by lookup in a tabular benchmark, with NATS-Bench's simulated time.

One evaluation of ``arch`` for ``budget`` epochs returns the search score after epoch ``budget - 1`` of the
search protocol (``hp``) and the seconds NATS-Bench's ``simulate_train_eval`` charges for it: the training
time of epochs ``0..budget-1`` plus one evaluation of the search set (its mean per-epoch time). Nothing is
trained, so a search spends its time in the algorithm; to keep that small, everything an evaluation needs is
turned into Python lists of ready :class:`Evaluation` records when first used (one per budget), and a query
is a dict lookup (code tuple -> benchmark index) and a list index.

Seeds: ``seed_mode="random"`` (default, NATS's ``is_random=True``) picks one of the architecture's runs per
query with the search's ``rng``; ``"mean"`` uses the mean over runs. The reported value (``report``) is always
the mean over runs, as NATS's ``is_random=False`` reporting.
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np

from nb360.errors import UsageError
from nb360.search.multitrial.base import CodesSpace, Evaluation, product_space

__all__ = ["TabularEvaluator"]

SEED_MODES = ("random", "mean")


class TabularEvaluator:
    """An :class:`~nb360.search.multitrial.base.Evaluator` backed by a :class:`nb360.tabular.TabularBenchmark`.

    Args:
        bench: the benchmark.
        dataset: the training set key (``ninapro``, ``darcyflow``, ``cifar10-valid``, ...).
        hp: the search protocol (``'12'`` in NATS-Bench); budgets are its epochs.
        search_set: the evaluation set that gives the search score.
        report_set, report_hp: what :meth:`report` returns (default: the search set and hp).
        seed_mode: ``"random"`` (a random run per query, as NATS) or ``"mean"``.
        epochs: the epochs of a full evaluation (``budget=None``); default: all of ``hp``'s epochs.

    Architectures are code tuples of the benchmark's space (see :meth:`space`).
    """

    def __init__(
        self,
        bench: Any,
        dataset: str,
        hp: Any,
        search_set: str,
        report_set: str | None = None,
        report_hp: Any = None,
        seed_mode: str = "random",
        epochs: int | None = None,
    ) -> None:
        if seed_mode not in SEED_MODES:
            raise UsageError(f"unknown seed mode {seed_mode!r}; choose one of: {', '.join(SEED_MODES)}")
        self.bench, self.dataset, self.hp = bench, dataset, str(hp)
        self.report_hp = self.hp if report_hp is None else str(report_hp)
        self.search_set, self.report_set = search_set, report_set or search_set
        self.seed_mode = seed_mode
        info = bench.score_info(dataset)
        self.metric, self.lower_is_better = str(info["name"]), bool(info["lower_is_better"])
        self.epochs = bench.curves(dataset, self.hp, f"{search_set}-score").shape[1]  # checks dataset, hp and set
        self.max_budget = self.epochs if epochs is None else int(epochs)
        if not 1 <= self.max_budget <= self.epochs:
            raise UsageError(f"epochs must be in 1..{self.epochs} for {dataset} with hp {self.hp}, not {epochs}")
        report = bench.scores(dataset, self.report_hp, self.report_set)
        searched = bench.evaluated(dataset, self.hp)
        self.indexes = np.flatnonzero(searched & ~np.isnan(report))  # architectures a search may visit
        if self.indexes.size == 0:
            raise UsageError(f"no architecture has both a {self.hp}-run and a {self.report_hp}-run on {dataset}")
        codes = bench.space.codes_array[self.indexes].tolist()
        self._index: dict[tuple[int, ...], int] = {tuple(c): int(i) for c, i in zip(codes, self.indexes.tolist())}
        self._report: list[float] = report.tolist()
        self._columns: dict[int, list[Any]] = {}
        group = bench.store.groups[(dataset, self.hp)]
        self._seeds = list(group.seeds) if seed_mode == "random" else ["mean"]

    # ------------------------------------------------------------------ the space it covers
    def space(self) -> CodesSpace:
        """The benchmark's space as code tuples, restricted to the architectures evaluated here (if not all)."""
        space = self.bench.space
        members = None if len(self._index) == len(space) else list(self._index)
        return product_space(space, members)

    def index(self, arch: tuple[int, ...]) -> int:
        """The benchmark index of ``arch``."""
        return self._index[arch]

    # ------------------------------------------------------------------ evaluation
    def _column(self, epochs: int) -> list[Any]:
        """Per benchmark index: the Evaluation (mean mode) or the tuple of one Evaluation per run (random mode)."""
        if not 1 <= epochs <= self.epochs:
            raise UsageError(f"budget {epochs} is out of range 1..{self.epochs} epochs for {self.dataset} with hp {self.hp}")
        e, bench, ds, hp = epochs - 1, self.bench, self.dataset, self.hp
        per_seed = []
        for seed in self._seeds:
            seed_arg = "mean" if seed == "mean" else int(seed)
            score = bench.curves(ds, hp, f"{self.search_set}-score", seed=seed_arg)[:, e]
            train = bench.curves(ds, hp, "train-all-time", seed=seed_arg)[:, e]
            evaluation = bench.curves(ds, hp, f"{self.search_set}-per-time", seed=seed_arg)[:, e]
            per_seed.append((score.tolist(), (train + evaluation).tolist()))
        column: list[Any] = [None] * len(self._report)
        for i in self._index.values():
            runs = tuple(Evaluation(s[i], c[i]) for s, c in per_seed if not math.isnan(s[i]))
            column[i] = runs[0] if self.seed_mode == "mean" or len(runs) == 1 else runs
        self._columns[epochs] = column
        return column

    def evaluate(self, arch: tuple[int, ...], budget: int | None = None, rng: random.Random | None = None) -> Evaluation:
        """``(score, seconds)`` after ``budget`` epochs (None: ``max_budget``), as ``simulate_train_eval`` gives them."""
        epochs = self.max_budget if budget is None else budget
        column = self._columns.get(epochs)
        if column is None:
            column = self._column(epochs)
        result = column[self._index[arch]]
        if type(result) is tuple:  # several runs (an Evaluation is a tuple subclass, not a tuple): pick one
            if rng is None:
                raise UsageError("seed_mode='random' needs an rng")
            return result[int(rng.random() * len(result))]
        return result

    def report(self, arch: tuple[int, ...]) -> float:
        """The reported value of ``arch`` (``report_set`` score of ``report_hp``, last epoch, mean over runs)."""
        return self._report[self._index[arch]]

    def report_by_index(self) -> np.ndarray:
        """``(num_archs,)`` reported values (NaN where not evaluated)."""
        return np.asarray(self._report)

    def best_report(self) -> tuple[int, float]:
        """``(index, value)`` of the best reported value over the architectures a search can visit."""
        values = np.asarray(self._report)[self.indexes]
        k = int(np.argmin(values) if self.lower_is_better else np.argmax(values))
        return int(self.indexes[k]), float(values[k])
