"""One (dataset, hp) group ready for queries: argument checks, architecture rows, seed reductions, costs.

:class:`GroupView` is what :class:`~nb360.tabular.api.TabularBenchmark` asks. A group's
columns have one row per evaluated architecture; everything here works on rows, and the API
places vectorised results at their architectures (NaN elsewhere).

Every path gives the same numbers, bit for bit: a mean over seeds adds the evaluated seeds
left to right and divides by their number, and a per-epoch time is the stored running sum
(``time_total``) divided by ``epoch + 1``, as NATS-Bench computes them.
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Any

import numpy as np

from nb360.errors import UsageError
from nb360.tabular.store import Group

__all__ = ["MEAN", "RANDOM", "GroupView", "mean", "total"]

NAN = math.nan
MEAN = "mean"
RANDOM = "random"


def total(values: Any) -> float:
    """Left-to-right float sum, as ``np.cumsum`` and seed-by-seed array sums add (Python >= 3.12's ``sum`` compensates)."""
    return functools.reduce(operator.add, values, 0.0)


def mean(values: list[float]) -> float:
    return values[0] if len(values) == 1 else total(values) / len(values)


def _need_rng(rng: Any) -> None:
    if not isinstance(rng, np.random.Generator):
        raise UsageError("seed='random' needs rng=numpy.random.default_rng(seed): queries never sample a seed silently")


class GroupView:
    """Queries on one group: single lookups straight from the columns, and vectorised reductions over rows."""

    def __init__(self, group: Group) -> None:
        self.group = group
        self.name = f"{group.dataset}/hp {group.hp}"
        self.epochs = group.epochs
        self.seeds = group.seeds
        self.sets = group.eval_sets
        self.seed_pos = {s: k for k, s in enumerate(self.seeds)}
        self.evaluated = np.asarray(group.evaluated)  # (seeds, rows)
        self.count = self.evaluated.sum(axis=0)  # (rows,), >= 1: a row exists because it has a run
        self.row_of: list[int] = group.row_of.tolist()  # a list: the fastest scalar lookup
        # each row's evaluated seed positions; rows with the same seeds share one list (do not modify)
        patterns = (self.evaluated * (1 << np.arange(len(self.seeds)))[:, None]).sum(axis=0).tolist()  # bit s: seed s ran
        lists = {p: [s for s in range(len(self.seeds)) if p >> s & 1] for p in set(patterns)}
        self.positions: list[list[int]] = [lists[p] for p in patterns]
        # get_more_info's keys, and for each the column it reads and whether it is divided by epoch + 1
        self.keys: list[str] = []
        self.sources: list[tuple[np.ndarray, bool]] = []
        for set_name in ["train", *self.sets]:
            outputs = [("loss", "loss", False), ("accuracy", "acc1", False)]
            if group.has(set_name, "metric"):
                outputs.append(("metric", "metric", False))
            outputs += [("per-time", "time_total", True), ("all-time", "time_total", False)]
            if set_name != "train":
                outputs.append(("score", group.score.column, False))
            for suffix, column, per_epoch in outputs:
                self.keys.append(f"{set_name}-{suffix}")
                self.sources.append((group.series(set_name, column), per_epoch))
        self.extras = {"score_name": group.score.name, "lower_is_better": group.score.lower_is_better}
        self._last: list[dict[str, Any] | None] | None = None  # get_more_info of every architecture at the last epoch
        self._costs: dict[str, np.ndarray] = {}

    # ---------------------------------------------------------------- arguments
    def epoch(self, iepoch: Any) -> int:
        if iepoch is None:
            return self.epochs - 1
        if isinstance(iepoch, (int, np.integer)) and not isinstance(iepoch, bool) and 0 <= iepoch < self.epochs:
            return int(iepoch)
        raise UsageError(f"epoch {iepoch!r} is out of range for {self.name}: 0..{self.epochs - 1} (None = the last)")

    def row(self, index: int) -> int:
        """The row of architecture ``index``; an error if it has no run here."""
        row = self.row_of[index]
        if row < 0:
            raise UsageError(f"architecture {index} has no run on {self.group.dataset} with hp {self.group.hp}")
        return row

    def seed_position(self, seed: Any) -> int:
        if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool) and int(seed) in self.seed_pos:
            return self.seed_pos[int(seed)]
        raise UsageError(
            f"seed {seed!r} is not one of {self.name}'s seeds {self.seeds}; "
            "use seed='mean' (default), one of those, or 'random' with rng=numpy.random.default_rng(...)"
        )

    def seed_positions(self, index: int, row: int, seed: Any, rng: Any) -> list[int]:
        """The seed positions that a single query of architecture ``index`` (at ``row``) averages over."""
        own = self.positions[row]
        if isinstance(seed, str) and seed == MEAN:
            return own
        if isinstance(seed, str) and seed == RANDOM:
            _need_rng(rng)
            return [own[rng.integers(len(own))]]
        position = self.seed_position(seed)
        if position not in own:
            raise UsageError(
                f"architecture {index} has no run with seed {seed} on {self.name}; its seeds: {[self.seeds[s] for s in own]}"
            )
        return [position]

    # ---------------------------------------------------------------- single queries
    def info(self, e: int, positions: list[int], row: int) -> dict[str, Any]:
        """The ``get_more_info`` dict of one row at epoch ``e``, mean over the seed ``positions``: a few lookups per key."""
        values = []
        for data, per_epoch in self.sources:
            if len(positions) == 1:
                value = data.item(e, positions[0], row)
            else:
                value = mean([data.item(e, s, row) for s in positions])
            values.append(value / (e + 1) if per_epoch else value)
        return dict(zip(self.keys, values, strict=True), **self.extras)

    def last_infos(self) -> list[dict[str, Any] | None]:
        """The ``get_more_info`` dict of every architecture at the last epoch, mean over seeds (None: no run).

        Computed on the first call (vectorised, about 20 ms for 15,625 rows), so that a query
        of the last epoch is a dict copy. Do not modify the dicts.
        """
        if self._last is None:
            columns = [values.tolist() for values in self.table(self.epochs - 1).T]
            columns += [[value] * self.group.rows for value in self.extras.values()]
            keys = [*self.keys, *self.extras]
            last: list[dict[str, Any] | None] = [None] * self.group.num_archs
            for index, row in zip(self.group.archs.tolist(), zip(*columns, strict=True), strict=True):
                last[index] = dict(zip(keys, row, strict=True))
            self._last = last
        return self._last

    def last_info(self, index: int) -> dict[str, Any]:
        """The ``get_more_info`` dict of architecture ``index`` at the last epoch, mean over seeds (a fresh copy)."""
        info = self.last_infos()[index]
        if info is None:
            self.row(index)  # raises: no run
        return info.copy()

    # ---------------------------------------------------------------- vectorised
    def reduce(self, values: np.ndarray, seed: Any = MEAN, rng: Any = None) -> np.ndarray:
        """``(..., seeds, rows) -> (..., rows)``: the mean over each row's runs, one seed's run (NaN if none) or a random run."""
        if isinstance(seed, str) and seed == MEAN:
            summed = np.where(self.evaluated[0], values[..., 0, :], 0.0)
            for s in range(1, len(self.seeds)):  # seed by seed, as the single queries add
                summed = summed + np.where(self.evaluated[s], values[..., s, :], 0.0)
            return summed / self.count
        if isinstance(seed, str) and seed == RANDOM:
            return values[..., self.pick(rng), np.arange(self.group.rows)]
        position = self.seed_position(seed)
        return np.where(self.evaluated[position], values[..., position, :], NAN)

    def pick(self, rng: Any) -> np.ndarray:
        """``(rows,)`` a uniformly chosen run (seed position) per row; one draw per architecture, so any layout picks alike."""
        _need_rng(rng)
        k = np.floor(rng.random(self.group.num_archs)[self.group.archs] * self.count).astype(np.int64)
        chosen = self.evaluated & (np.cumsum(self.evaluated, axis=0) - 1 == k)
        return chosen.argmax(axis=0)

    def table(self, e: int) -> np.ndarray:
        """``(rows, keys)``: every ``get_more_info`` value of every row at epoch ``e``, mean over seeds."""
        out = np.empty((self.group.rows, len(self.keys)))
        for k, (data, per_epoch) in enumerate(self.sources):
            values = self.reduce(data[e])
            out[:, k] = values / (e + 1) if per_epoch else values
        return out

    # ---------------------------------------------------------------- costs
    def costs(self, name: str) -> np.ndarray:
        """``(rows,)`` ``flops``, ``params`` or ``latency`` as :meth:`cost_info` computes them (cached; do not modify)."""
        if name not in self._costs:
            self._costs[name] = self._latencies() if name == "latency" else self._flops_or_params(name)
        return self._costs[name]

    def _flops_or_params(self, name: str) -> np.ndarray:
        values = self.group.column(name)
        out = self.reduce(values)
        if len(self.seeds) > 1 and 888 in self.seed_pos:  # NATS's legacy rule where the seeds disagree
            ev = self.evaluated
            spread = np.where(ev, values, -np.inf).max(axis=0) - np.where(ev, values, np.inf).min(axis=0)
            for row in np.flatnonzero((self.count > 1) & (spread > 0)).tolist():
                out[row] = self.legacy_mean(values, self.positions[row], row)
        return out

    def _latencies(self) -> np.ndarray:
        latency, lengths = self.group.column("latency"), self.group.column("latency_len").astype(np.int64)
        inside = np.arange(latency.shape[0])[:, None, None] < lengths[None]
        with np.errstate(invalid="ignore", divide="ignore"):
            per_run = np.where(inside, latency, 0.0).sum(axis=0) / lengths
        good = self.evaluated & (lengths > 0) & (per_run > 0)
        n = good.sum(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, np.where(good, per_run, 0.0).sum(axis=0) / n, NAN)

    def legacy_mean(self, column: np.ndarray, positions: list[int], row: int) -> float:
        """The mean over the runs; where flops/params disagree between seeds (old NATS files), seed 888's value."""
        values = [column.item(s, row) for s in positions]
        seeds = [self.seeds[s] for s in positions]
        if len(values) > 1 and len({f"{v:.5f}" for v in values}) > 1 and 888 in seeds:
            return values[seeds.index(888)]
        return mean(values)

    def latency(self, row: int) -> float:
        """The mean of the positive per-run mean latencies (NaN if there is none)."""
        latency, lengths = self.group.column("latency"), self.group.column("latency_len")
        per_run = []
        for s in self.positions[row]:
            n = int(lengths[s, row])
            if n > 0:
                per_run.append(total(latency[:n, s, row].tolist()) / n)
        positive = [v for v in per_run if v > 0]
        return mean(positive) if positive else NAN

    def cost_info(self, row: int) -> dict[str, float]:
        """``get_cost_info`` of one row (see :meth:`~nb360.tabular.api.TabularBenchmark.get_cost_info`)."""
        positions = self.positions[row]
        info = {
            "flops": self.legacy_mean(self.group.column("flops"), positions, row),
            "params": self.legacy_mean(self.group.column("params"), positions, row),
            "latency": self.latency(row),
        }
        for set_name in ["train", *self.sets]:
            data = self.group.series(set_name, "time")
            per_epoch, totals = [], []
            for s in positions:
                times = data[:, s, row].tolist()
                present = [t for t in times if not math.isnan(t)] if set_name == "train" else times
                if not present or (set_name != "train" and any(math.isnan(t) for t in present)):
                    per_epoch.append(NAN)
                    totals.append(NAN)
                else:
                    totals.append(total(present))
                    per_epoch.append(totals[-1] / len(present))
            info[f"T-{set_name}@epoch"] = mean(per_epoch)
            info[f"T-{set_name}@total"] = mean(totals)
        return info
