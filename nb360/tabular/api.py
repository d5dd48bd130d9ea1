"""Querying a tabular benchmark: NATS-Bench's calls with explicit names, plus a vectorised interface.

Differences from ``nats_bench`` (each fixes a known pitfall):

* ``hp`` (the training protocol: ``'12'``, ``'200'``, ...) is required; there is no silent
  default of 12 epochs.
* results are keyed by the stored set names (``ori-test-accuracy``, ``x-valid-loss``); nothing
  is renamed to ``valid``/``test``/``valtest``, and validation and test are never aliased.
* ``seed="mean"`` (the mean over the evaluated seeds) is the default; one seed is picked at
  random only with ``seed="random"`` and an explicit ``numpy.random.Generator``.
* every dataset works everywhere (``simulate_train_eval`` and ``statistics`` included), and
  the task score (``<set>-score``) carries its name and direction: NB360's Darcy score is
  the relative l2 error, lower is better.
* whole-space questions (``scores``, ``curves``, ``costs``, ``find_best``) are array
  operations on memory-mapped columns, not loops over per-architecture objects.

Single queries read the columns directly (``all-time`` is a stored running sum); the one
exception is the most common query, the last epoch averaged over seeds, whose dicts are
computed for all architectures on its first call (see :meth:`GroupView.last_info`). The
per-group machinery lives in :mod:`nb360.tabular.views`. Nothing here imports PyTorch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from nb360.errors import DataError, UsageError
from nb360.tabular.store import Store
from nb360.tabular.views import MEAN, NAN, GroupView

__all__ = ["TabularBenchmark", "create", "open_benchmark"]

#: the key suffixes of get_more_info (and "-time", the per-epoch time) -> (stored column, divided by epoch + 1)
_SUFFIXES: dict[str, tuple[str | None, bool]] = {
    "loss": ("loss", False),
    "accuracy": ("acc1", False),
    "metric": ("metric", False),
    "score": (None, False),  # the group's score column
    "time": ("time", False),
    "per-time": ("time_total", True),
    "all-time": ("time_total", False),
}


def _choices(values: Any) -> str:
    return ", ".join(repr(v) for v in values)


class TabularBenchmark:
    """A tabular NAS benchmark opened from an ``nb360-tabular`` store.

    Use :func:`create`. Architectures are addressed by index, by their string, by
    codes or by any object with ``tostr()``. ``hp`` names the training protocol and is
    always required; a dataset is the training set (``cifar10-valid``, ``ninapro``,
    ``darcyflow``, ...), an evaluation set one of :meth:`eval_sets`.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.space = store.space
        self._n = store.num_archs
        self._views: dict[tuple[Any, Any], GroupView] = {}
        self._last: dict[tuple[Any, Any], list[dict[str, Any] | None]] = {}  # (dataset, hp) -> GroupView.last_infos()
        self._score_lists: dict[tuple[Any, ...], list[float]] = {}
        self._evaluated_any: np.ndarray | None = None
        self._used_time = 0.0

    # ------------------------------------------------------------------ container
    def __len__(self) -> int:
        return self._n

    def __getitem__(self, index: int) -> str:
        return self.arch(index)

    def __iter__(self) -> Iterator[str]:
        return iter(self.space.archs)

    def __repr__(self) -> str:
        groups = ", ".join(f"{d}/{h}" for d, h in self.store.groups)
        return f"TabularBenchmark({self.space.name}, {self._n} architectures, groups [{groups}], path={str(self.store.path)!r})"

    def arch(self, index: int) -> str:
        return self.space.arch(self._index(index))

    @property
    def datasets(self) -> list[str]:
        return self.store.datasets

    def hps(self, dataset: str) -> list[str]:
        self._dataset(dataset)
        return [h for d, h in self.store.groups if d == dataset]

    def eval_sets(self, dataset: str, hp: Any = None) -> list[str]:
        return list(self._view(dataset, hp).sets)

    def score_info(self, dataset: str) -> dict[str, Any]:
        """``{column, name, unit, lower_is_better}``: which stored column is ``dataset``'s task score."""
        group = next(g for (d, _), g in self.store.groups.items() if d == self._dataset(dataset))
        return group.score.as_dict()

    @property
    def used_time(self) -> float:
        """Seconds of simulated training and evaluation accumulated by :meth:`simulate_train_eval`."""
        return self._used_time

    def reset_time(self) -> None:
        self._used_time = 0.0

    # ------------------------------------------------------------------ arguments
    def _dataset(self, dataset: str) -> str:
        if dataset not in self.store.datasets:
            raise UsageError(f"unknown dataset {dataset!r}; this benchmark holds: {_choices(self.store.datasets)}")
        return dataset

    def _view(self, dataset: str, hp: Any) -> GroupView:
        try:
            return self._views[(dataset, hp)]
        except (KeyError, TypeError):  # not seen yet, or an unhashable hp
            pass
        self._dataset(dataset)
        hps = [h for d, h in self.store.groups if d == dataset]
        if hp is None:
            raise UsageError(f"hp is required (the training protocol, e.g. '200' for 200 epochs); {dataset} has: {_choices(hps)}")
        key = str(hp) if isinstance(hp, (str, int)) and not isinstance(hp, bool) else None
        if key not in hps:
            raise UsageError(f"unknown hp {hp!r} for dataset {dataset!r}; choose one of: {_choices(hps)}")
        view = self._views.get((dataset, key)) or GroupView(self.store.groups[(dataset, key)])
        self._views[(dataset, key)] = self._views[(dataset, hp)] = view
        return view

    def _index(self, index: Any) -> int:
        if isinstance(index, (int, np.integer)) and not isinstance(index, bool):
            if 0 <= index < self._n:
                return int(index)
            raise UsageError(f"architecture index {index} is out of range 0..{self._n - 1}")
        if isinstance(index, bool):
            raise UsageError(f"an architecture is an index, a string or codes, not {index!r}")
        return self.space.index(index)

    def _set(self, view: GroupView, eval_set: str | None, allow_train: bool = False) -> str:
        if eval_set in view.sets or (allow_train and eval_set == "train"):
            return eval_set
        choices = _choices(view.sets + (["train"] if allow_train else []))
        if eval_set is None:
            raise UsageError(f"eval_set is required; {view.name} has: {choices}")
        raise UsageError(f"unknown evaluation set {eval_set!r} for {view.name}; choose one of: {choices}")

    def query_index_by_arch(self, arch: Any) -> int:
        """The index of ``arch`` (index, string, codes or ``tostr()`` object); -1 if valid but never evaluated here."""
        index = self._index(arch)
        if self._evaluated_any is None:
            evaluated = np.zeros(self._n, dtype=bool)
            for group in self.store.groups.values():
                evaluated[group.archs] = True
            self._evaluated_any = evaluated
        return index if self._evaluated_any[index] else -1

    # ------------------------------------------------------------------ single queries
    def score(self, index: Any, dataset: str, hp: Any, eval_set: str, epoch: int | None = None) -> float:
        """The task score of one architecture (mean over seeds, last epoch by default); NaN if not evaluated.

        The cheap accessor: after the first call for a (dataset, hp, set, epoch) it is a dict
        lookup and a list index.
        """
        key = (dataset, hp, eval_set, epoch)
        values = self._score_lists.get(key)
        if values is None:
            values = self._score_lists[key] = self.scores(dataset, hp, eval_set, epoch=epoch).tolist()
        if type(index) is not int or not 0 <= index < self._n:
            index = self._index(index)
        return values[index]

    def get_more_info(
        self, index: Any, dataset: str, hp: Any = None, *, iepoch: int | None = None, seed: Any = MEAN, rng: Any = None
    ) -> dict[str, Any]:
        """Training and evaluation results of one architecture after epoch ``iepoch`` (default: the last).

        Keys: ``train-loss, train-accuracy, train-per-time, train-all-time`` and, for every
        stored evaluation set ``<set>``, ``<set>-loss, <set>-accuracy, <set>-per-time,
        <set>-all-time, <set>-score``, plus ``score_name`` and ``lower_is_better``; where the
        group stores the task's own metric, also ``train-metric`` and ``<set>-metric``. Times
        are in seconds: ``all-time`` sums epochs ``0..iepoch``, ``per-time`` is that sum divided
        by ``iepoch + 1`` (as in NATS-Bench). ``seed``: ``"mean"`` over the evaluated seeds,
        one seed, or ``"random"`` with ``rng`` (a ``numpy.random.Generator``).
        """
        if iepoch is None and seed is MEAN and type(index) is int and index >= 0:  # the common query: a copy of a ready dict
            try:
                return self._last[(dataset, hp)][index].copy()
            except (KeyError, TypeError, IndexError, AttributeError):
                pass  # not computed yet, or an argument to check below (unhashable hp, index out of range, no run: None)
        view = self._view(dataset, hp)
        index = self._index(index)
        if iepoch is None and (seed is MEAN or (isinstance(seed, str) and seed == MEAN)):
            self._last[(dataset, hp)] = view.last_infos()
            return view.last_info(index)
        row = view.row(index)
        return view.info(view.epoch(iepoch), view.seed_positions(index, row, seed, rng), row)

    def get_cost_info(self, index: Any, dataset: str, hp: Any = None) -> dict[str, float]:
        """``flops`` (M), ``params`` (M), ``latency`` (s) and ``T-train@epoch/total``, ``T-<set>@epoch/total`` (s).

        As in NATS-Bench: the mean over the evaluated seeds; when flops/params disagree
        between seeds (a legacy issue of the NATS files), seed 888's value; ``latency`` is
        the mean of the positive per-run latencies (NaN if there is none).
        """
        view = self._view(dataset, hp)
        return view.cost_info(view.row(self._index(index)))

    def get_latency(self, index: Any, dataset: str, hp: Any = None) -> float:
        """Mean latency in seconds (NaN if none was measured)."""
        view = self._view(dataset, hp)
        return view.latency(view.row(self._index(index)))

    def simulate_train_eval(
        self,
        arch: Any,
        dataset: str,
        hp: Any = None,
        eval_set: str | None = None,
        iepoch: int | None = None,
        account_time: bool = True,
        *,
        seed: Any = MEAN,
        rng: Any = None,
    ) -> tuple[float, float, float, float]:
        """``(score, latency, time_cost, used_time)``: train ``arch`` for ``iepoch + 1`` epochs, score it on ``eval_set``.

        ``time_cost`` = the training time up to ``iepoch`` plus one evaluation of ``eval_set``
        (its mean per-epoch time); it is added to :attr:`used_time` when ``account_time``.
        The score follows the dataset's metric (see :meth:`score_info`). Works for every
        stored dataset, NB360's ``ninapro`` and ``darcyflow`` included.
        """
        view = self._view(dataset, hp)
        self._set(view, eval_set)
        info = self.get_more_info(arch, dataset, hp, iepoch=iepoch, seed=seed, rng=rng)
        time_cost = info["train-all-time"] + info[f"{eval_set}-per-time"]
        latency = self.get_latency(arch, dataset, hp)
        if account_time:
            self._used_time += time_cost
        return info[f"{eval_set}-score"], latency, time_cost, self._used_time

    # ------------------------------------------------------------------ vectorised
    def scores(
        self,
        dataset: str,
        hp: Any = None,
        eval_set: str | None = None,
        *,
        epoch: int | None = None,
        seed: Any = MEAN,
        rng: Any = None,
    ) -> np.ndarray:
        """``(num_archs,)`` task scores on ``eval_set`` (or ``"train"``) after ``epoch`` (default: the last); NaN where none."""
        view = self._view(dataset, hp)
        eval_set = self._set(view, eval_set, allow_train=True)
        values = view.group.series(eval_set, view.group.score.column)[view.epoch(epoch)]
        return view.group.scatter(view.reduce(values, seed, rng))

    def curves(self, dataset: str, hp: Any = None, column: str | None = None, *, seed: Any = MEAN, rng: Any = None) -> np.ndarray:
        """``(num_archs, epochs)`` learning curves of ``column``; NaN rows where not evaluated.

        ``column`` is an output key of :meth:`get_more_info` (``train-loss``,
        ``ori-test-accuracy``, ``x-valid-score``, ``train-all-time``, ...), ``<set>-time`` (the
        time of each epoch) or a stored column id ``<set>.<column>`` (``train.acc5``,
        ``ori-test.metric``, ``train.time_total``). ``seed="random"`` follows one run per
        architecture through all epochs.
        """
        view = self._view(dataset, hp)
        set_name, stored, per_epoch = self._parse_column(view, column)
        values = view.reduce(view.group.series(set_name, stored), seed, rng)  # (epochs, rows)
        if per_epoch:
            values = values / np.arange(1, view.epochs + 1)[:, None]
        out = np.full((self._n, view.epochs), NAN)
        out[view.group.archs] = values.T
        return out

    def _parse_column(self, view: GroupView, column: Any) -> tuple[str, str, bool]:
        """``(set, stored column, divided by epoch + 1)`` of a :meth:`curves` column name."""
        group, sets = view.group, ["train", *view.sets]
        if isinstance(column, str) and "." in column:
            set_name, stored = column.rsplit(".", 1)
            if set_name in sets and group.has(set_name, stored):
                return set_name, stored, False
        for suffix in sorted(_SUFFIXES, key=len, reverse=True):
            set_name = column[: -len(suffix) - 1] if isinstance(column, str) else None
            if isinstance(column, str) and column.endswith(f"-{suffix}") and set_name in sets:
                stored, per_epoch = _SUFFIXES[suffix]
                stored = stored or group.score.column
                if group.has(set_name, stored):
                    return set_name, stored, per_epoch
        names = [f"{s}-{x}" for s in sets for x, (c, _) in _SUFFIXES.items() if group.has(s, c or group.score.column)]
        raise UsageError(
            f"unknown column {column!r} for {view.name}; choose one of: {', '.join(names)}, or '<set>.<stored column>'"
        )

    def costs(self, dataset: str, name: str, *, hp: Any = None) -> np.ndarray:
        """``(num_archs,)`` ``flops`` (M), ``params`` (M) or ``latency`` (s), as :meth:`get_cost_info` computes them.

        NaN where not evaluated.

        Without ``hp``, each architecture's value comes from the first of :meth:`hps` that evaluated it.
        """
        if name not in ("flops", "params", "latency"):
            raise UsageError(f"unknown cost {name!r}; choose one of: 'flops', 'params', 'latency'")
        if hp is None:
            out = np.full(self._n, NAN)
            for h in self.hps(dataset):
                values = self.costs(dataset, name, hp=h)
                out = np.where(np.isnan(out), values, out)
            return out
        view = self._view(dataset, hp)
        return view.group.scatter(view.costs(name))

    def evaluated(self, dataset: str, hp: Any = None) -> np.ndarray:
        """``(num_archs,)`` bool: the architectures with at least one run on ``dataset`` with ``hp``."""
        return self._view(dataset, hp).group.row_of >= 0

    def find_best(
        self,
        dataset: str,
        eval_set: str | None = None,
        hp: Any = None,
        flop_max: float | None = None,
        param_max: float | None = None,
        *,
        epoch: int | None = None,
    ) -> tuple[int, float]:
        """``(index, score)`` of the best evaluated architecture on ``eval_set`` (ties: the lowest index); ``(-1, nan)`` if none.

        "Best" follows the dataset's metric direction (the lowest relative l2 for Darcy).
        ``flop_max``/``param_max`` (M) exclude architectures above them.
        """
        view = self._view(dataset, hp)
        values = self.scores(dataset, hp, eval_set, epoch=epoch)
        ok = ~np.isnan(values)
        if flop_max is not None:
            ok &= self.costs(dataset, "flops", hp=hp) <= flop_max
        if param_max is not None:
            ok &= self.costs(dataset, "params", hp=hp) <= param_max
        if not ok.any():
            return -1, NAN
        if view.group.score.lower_is_better:
            best = int(np.argmin(np.where(ok, values, np.inf)))
        else:
            best = int(np.argmax(np.where(ok, values, -np.inf)))
        return best, float(values[best])

    # ------------------------------------------------------------------ the rest of NATS's API
    def get_net_config(self, index: Any, dataset: str) -> dict[str, Any]:
        """The network config NATS-Bench gives for ``xautodl.models.get_cell_based_tiny_net``."""
        index = self._index(index)
        self._dataset(dataset)
        group = next((g for (d, _), g in self.store.groups.items() if d == dataset and g.arch_config is not None), None)
        if group is None:
            raise DataError(f"{self.store.path}: no network config (arch_config) stored for dataset {dataset!r}")
        arch = self.space.arch(index)
        config = {k: (arch if k in group.arch_keys else v) for k, v in group.arch_config.items()}
        if config.get("name") == "infer.shape.tiny":
            return {
                "name": "infer.shape.tiny",
                "channels": config["channels"],
                "genotype": config["genotype"],
                "num_classes": config["class_num"],
            }
        return {
            "name": "infer.tiny",
            "C": config["channel"],
            "N": config["num_cells"],
            "arch_str": arch,
            "num_classes": config["class_num"],
        }

    def statistics(self, dataset: str, hp: Any = None) -> dict[int, int]:
        """``{number of seeds: number of architectures}`` over the architectures evaluated anywhere in this benchmark."""
        view = self._view(dataset, hp)
        self.query_index_by_arch(0)  # fills the evaluated-anywhere mask
        count = view.group.scatter(view.count, fill=0)
        counts = np.bincount(count[self._evaluated_any], minlength=len(view.seeds) + 1)
        return {k: int(v) for k, v in enumerate(counts) if v}

    def show(self, index: Any) -> None:
        """Print what the benchmark holds about one architecture."""
        index = self._index(index)
        print(f"[{index}] {self.space.arch(index)}")
        for (dataset, hp), group in self.store.groups.items():
            view = self._view(dataset, hp)
            if view.row_of[index] < 0:
                continue
            info = self.get_more_info(index, dataset, hp)
            cost = self.get_cost_info(index, dataset, hp)
            seeds = [view.seeds[s] for s in view.positions[view.row(index)]]
            sets = ", ".join(f"{s} {info[f'{s}-score']:.4g}" for s in view.sets)
            print(
                f"  {dataset} hp {hp} ({view.epochs} epochs, seeds {seeds}): {group.score.name} [{sets}], "
                f"train loss {info['train-loss']:.4g}, {cost['flops']:.4g} MFLOPs, {cost['params']:.4g} M params"
            )


def create(path: str | os.PathLike[str], search_space: str | None = None, *, progress: bool = True) -> TabularBenchmark:
    """Open a benchmark: an ``nb360-tabular`` store, or a NATS file/directory (converted once to a store beside it).

    Opening the store directory takes milliseconds; given the NATS file, the file's SHA-256 is
    checked against the store's record first (a fraction of a second for NB360's files).
    ``search_space`` (optional: ``tss``/``nb201``, ``sss``) is checked against the store's.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(
            f"{path} does not exist; download a benchmark with `python -m nb360.data download --benchmark NAME --root DIR`"
        )
    if not (path / "meta.json").is_file() and (path.is_file() or (path / "meta.pickle.pbz2").is_file()):
        from nb360.tabular.nats import ensure_store

        path, _ = ensure_store(path, space=search_space, progress=progress)
    store = Store.open(path)
    if search_space is not None:
        from nb360.spaces import get_space

        wanted = get_space(search_space)
        if wanted.name != store.space.name:
            raise UsageError(f"{path} holds space {store.space.name}, not {wanted.name} ({search_space!r})")
    return TabularBenchmark(store)


open_benchmark = create
