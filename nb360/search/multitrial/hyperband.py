"""Hyperband and BOHB on epoch budgets, as hpbandster runs them for NATS-Bench (``bohb.py``) and NB360 (``hyperband.py``).

**Brackets** (hpbandster's ``HyperBand``/``BOHB`` masters): ``S = -int(log(min/max) / log(eta)) + 1`` budgets
``max * eta**-(S-1) ... max`` (1.33, 4, 12 epochs for eta 3, 1..12); iteration ``i`` runs bracket
``s = S - 1 - (i mod S)`` with ``n0 = floor(S / (s + 1)) * eta**s`` configurations and stage sizes
``max(int(n0 * eta**-k), 1)`` on the last ``s + 1`` budgets. With one worker, as in the references, every
job finishes before the next starts: a stage samples and evaluates its configurations one at a time, then
the best ``n_{k+1}`` by loss (stable order on ties) go on to the next budget. An evaluation on budget ``b``
trains ``int(b)`` epochs from scratch (the reference worker queries epoch ``int(b) - 1`` and is charged the
whole training time, nothing is resumed).

**BOHB's model** (hpbandster's ``BOHB`` config generator with ``statsmodels.KDEMultivariate``), written here
in NumPy because no maintained package runs it on categorical codes without hpbandster's name server and
worker threads. Each budget keeps its (codes, loss) results unless a model exists at a larger budget. Once a
budget has at least ``d + 1`` results and ``n_good = max(d + 1, 15% N)``, ``n_bad = max(d + 1, 85% N)`` split
them (by loss) into a good and a bad set that both have more than ``d`` rows, it fits one KDE to each: an
Aitchison-Aitken kernel per decision (``1 - bw`` on the same code, ``bw / (L - 1)`` on any other, ``L`` the
number of distinct codes in the data column, as statsmodels infers it), normal-reference bandwidths
``1.06 * std * n**(-1/(d+4))`` clipped below at ``min_bandwidth``. A new configuration is the best of
``num_samples`` candidates by ``max(g, 1e-32) / max(l, 1e-32)`` (bad over good density, lower is better), each
drawn from a random good point by keeping every code with probability ``1 - max(bw, min_bandwidth)`` and
resampling it uniformly otherwise; the model of the largest budget is used; with probability
``random_fraction``, or without a model, the configuration is uniform. As in hpbandster, a candidate with a
non-finite ratio is taken at once if its good density is finite.

statsmodels' quirk, kept by default (``kde_levels="data"``) because the published BOHB numbers come from it:
when all good points share one code of a decision, ``L = 1`` and the kernel gives an *infinite* density to
every other code, so a candidate that leaves the good points' consensus gets ratio 0 and is chosen: the model
then steers away from what the good points agree on. ``kde_levels="radix"`` uses the number of choices of
the decision as ``L`` (the textbook Aitchison-Aitken kernel), which concentrates on the good region.
``bandwidth_factor`` widens only continuous kernels in hpbandster, so with categorical codes it has no
effect; it is accepted for the record. The model is refitted after every result, as in hpbandster; the
candidates of one proposal are drawn one by one and their densities computed together.

**Stopping** differs from the references, which run 300 hpbandster iterations regardless of time and then
report the best over the whole run: here, as for the other algorithms, no evaluation starts once the budget
of seconds is used. The incumbent is the best score at *any* budget, as the reference scripts compute it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import numpy as np

from nb360.search.multitrial.base import Evaluator, History, Space, make_rng

__all__ = ["Bracket", "KDEModel", "BOHBSampler", "brackets", "hyperband", "bohb"]


class Bracket(tuple):
    """``(num_configs, budgets)`` of one successive-halving bracket (budgets in epochs, as floats)."""

    @property
    def num_configs(self) -> list[int]:
        return self[0]

    @property
    def budgets(self) -> list[float]:
        return self[1]


def _num_budgets(min_budget: float, max_budget: float, eta: float) -> int:
    return -int(np.log(min_budget / max_budget) / np.log(eta)) + 1


def brackets(min_budget: float, max_budget: float, eta: float = 3) -> list[Bracket]:
    """The brackets of one Hyperband round, in hpbandster's order (most configurations first)."""
    if not 0 < min_budget <= max_budget or eta <= 1:
        raise ValueError("need 0 < min_budget <= max_budget and eta > 1")
    S = _num_budgets(min_budget, max_budget, eta)
    budgets = max_budget * np.power(eta, -np.linspace(S - 1, 0, S))
    out = []
    for i in range(S):
        s = S - 1 - (i % S)
        n0 = int(np.floor(S / (s + 1)) * eta**s)
        ns = [max(int(n0 * eta ** (-k)), 1) for k in range(s + 1)]
        out.append(Bracket((ns, [float(b) for b in budgets[-s - 1 :]])))
    return out


def _run_brackets(
    space: Space,
    evaluator: Evaluator,
    budget_seconds: float,
    rng: random.Random,
    propose: Callable[[float], object],
    observe: Callable[[object, float, float], None],
    min_budget: float,
    max_budget: float | None,
    eta: float,
) -> History:
    """Successive halving over Hyperband's brackets until the time budget is used."""
    history = History(budget_seconds, evaluator.lower_is_better)
    max_budget = float(evaluator.max_budget if max_budget is None else max_budget)
    sign = 1.0 if evaluator.lower_is_better else -1.0  # loss = sign * score, lower is better
    schedule = brackets(min_budget, max_budget, eta)
    iteration = 0
    while not history.exhausted:
        ns, budgets = schedule[iteration % len(schedule)]
        configs: list[object] = []
        losses: list[float] = []
        for stage, (n, budget) in enumerate(zip(ns, budgets)):
            if stage > 0:  # the n best by loss go on, in their original order (hpbandster's ranks < n)
                keep = sorted(sorted(range(len(configs)), key=losses.__getitem__)[:n])
                configs, losses = [configs[k] for k in keep], []
            epochs = max(int(budget), 1)
            for k in range(n):
                if history.exhausted:
                    return history
                if stage == 0:
                    configs.append(propose(budget))
                arch = configs[k]
                loss = sign * history.add(arch, epochs, evaluator.evaluate(arch, epochs, rng))
                loss = math.inf if math.isnan(loss) else loss
                losses.append(loss)
                observe(arch, budget, loss)
        iteration += 1
    return history


def hyperband(
    space: Space,
    evaluator: Evaluator,
    budget_seconds: float,
    rng: random.Random | int | None = None,
    *,
    min_budget: float = 1,
    max_budget: float | None = None,
    eta: float = 3,
) -> History:
    """Hyperband (uniform configurations) until ``budget_seconds`` are used; ``max_budget`` defaults to a full evaluation."""
    rng = make_rng(rng)
    return _run_brackets(
        space, evaluator, budget_seconds, rng, lambda b: space.sample(rng), lambda a, b, loss: None, min_budget, max_budget, eta
    )


class KDEModel:
    """A product Aitchison-Aitken KDE over categorical codes (statsmodels ``KDEMultivariate`` with ``var_type='u'*d``)."""

    def __init__(self, data: np.ndarray, min_bandwidth: float, radices: Sequence[int], levels: str = "data") -> None:
        self.data = np.asarray(data, dtype=np.int64)  # (n, d)
        n, d = self.data.shape
        std = self.data.std(axis=0)
        self.bw = np.clip(1.06 * std * n ** (-1.0 / (4 + d)), min_bandwidth, None)
        same = self.data.T[:, None, :] == np.arange(max(radices))[None, :, None]  # (d, codes, n)
        # statsmodels infers the number of levels from the data; "radix" uses the number of choices
        self.levels = same.any(axis=2).sum(axis=1) if levels == "data" else np.asarray(radices)
        with np.errstate(divide="ignore"):
            other = self.bw / (self.levels - 1)  # inf for a column with one level, as statsmodels
        # kernel value of every (decision, code, data point): a density is a product of d rows and a mean
        self.table = np.where(same, (1.0 - self.bw)[:, None, None], other[:, None, None])
        self._decisions = np.arange(d)

    def pdfs(self, x: np.ndarray) -> np.ndarray:
        """Densities at the rows of ``x`` (k, d): the mean over data points of the product of per-decision kernels."""
        with np.errstate(invalid="ignore"):
            return self.table[self._decisions, np.asarray(x)].prod(axis=1).mean(axis=-1)

    def pdf(self, x: Sequence[int]) -> float:
        return float(self.pdfs(np.asarray(x)[None, :])[0])


class BOHBSampler:
    """BOHB's configuration generator (hpbandster's defaults: ``top_n_percent`` 15, ``min_points_in_model`` d + 1)."""

    def __init__(
        self,
        space: Space,
        rng: random.Random,
        *,
        num_samples: int = 64,
        random_fraction: float = 1 / 3,
        bandwidth_factor: float = 3,
        min_bandwidth: float = 1e-3,
        top_n_percent: int = 15,
        kde_levels: str = "data",
    ) -> None:
        if kde_levels not in ("data", "radix"):
            raise ValueError(f"kde_levels is 'data' or 'radix', not {kde_levels!r}")
        self.space, self.rng = space, rng
        self.kde_levels = kde_levels
        self.radices = tuple(space.radices)
        self.num_samples, self.random_fraction = num_samples, random_fraction
        self.bandwidth_factor, self.min_bandwidth, self.top_n_percent = bandwidth_factor, min_bandwidth, top_n_percent
        self.min_points = len(self.radices) + 1
        self.configs: dict[float, list[tuple[int, ...]]] = {}
        self.losses: dict[float, list[float]] = {}
        self.models: dict[float, tuple[KDEModel, KDEModel]] = {}

    def observe(self, arch: object, budget: float, loss: float) -> None:
        """Record a result and refit the budget's model when it has enough points (hpbandster's ``new_result``)."""
        self.configs.setdefault(budget, [])
        self.losses.setdefault(budget, [])
        if self.models and max(self.models) > budget:
            return
        self.configs[budget].append(tuple(self.space.encode(arch)))
        self.losses[budget].append(loss)
        n = len(self.configs[budget])
        if n <= self.min_points - 1:
            return
        data, losses = np.array(self.configs[budget]), np.array(self.losses[budget])
        n_good = max(self.min_points, (self.top_n_percent * n) // 100)
        n_bad = max(self.min_points, ((100 - self.top_n_percent) * n) // 100)
        order = np.argsort(losses, kind="stable")
        good, bad = data[order[:n_good]], data[order[n_good : n_good + n_bad]]
        d = data.shape[1]
        if good.shape[0] <= d or bad.shape[0] <= d:
            return
        levels, radices = self.kde_levels, self.radices
        self.models[budget] = (
            KDEModel(good, self.min_bandwidth, radices, levels),
            KDEModel(bad, self.min_bandwidth, radices, levels),
        )

    def propose(self, budget: float) -> object:
        """A configuration for a new bracket (hpbandster's ``get_config``)."""
        rng = self.rng
        if not self.models or rng.random() < self.random_fraction:
            return self.space.sample(rng)
        good, bad = self.models[max(self.models)]
        bws = np.maximum(good.bw, self.min_bandwidth).tolist()
        vectors = []
        for _ in range(self.num_samples):
            datum = good.data[int(rng.random() * len(good.data))].tolist()
            vectors.append([m if rng.random() < 1 - bw else int(rng.random() * t) for m, bw, t in zip(datum, bws, self.radices)])
        lxs, gxs = good.pdfs(vectors).tolist(), bad.pdfs(vectors).tolist()  # all candidates at once
        best, best_vector = math.inf, None
        for vector, lx, gx in zip(vectors, lxs, gxs):  # hpbandster's loop over the candidates, in order
            value = max(1e-32, gx) / max(lx, 1e-32)
            if not math.isfinite(value) and math.isfinite(lx):
                best_vector = vector
                break
            if value < best:
                best, best_vector = value, vector
        arch = None if best_vector is None else self.space.decode(best_vector)
        return self.space.sample(rng) if arch is None else arch


def bohb(
    space: Space,
    evaluator: Evaluator,
    budget_seconds: float,
    rng: random.Random | int | None = None,
    *,
    min_budget: float = 1,
    max_budget: float | None = None,
    eta: float = 3,
    num_samples: int = 4,
    random_fraction: float = 0.0,
    bandwidth_factor: float = 3,
    min_bandwidth: float = 0.3,
    kde_levels: str = "data",
    sampler: BOHBSampler | None = None,
) -> History:
    """BOHB with NATS-Bench's settings (num_samples 4, random_fraction 0, bandwidth_factor 3, min_bandwidth 0.3)."""
    rng = make_rng(rng)
    sampler = sampler or BOHBSampler(
        space,
        rng,
        num_samples=num_samples,
        random_fraction=random_fraction,
        bandwidth_factor=bandwidth_factor,
        min_bandwidth=min_bandwidth,
        kde_levels=kde_levels,
    )
    return _run_brackets(space, evaluator, budget_seconds, rng, sampler.propose, sampler.observe, min_budget, max_budget, eta)
