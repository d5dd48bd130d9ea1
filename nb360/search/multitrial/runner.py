"""Repeating a search many times and summarising it the way NATS-Bench's figures do.

A run's trajectory is read at report times ``report_every, 2 * report_every, ..., budget`` (simulated
seconds): at time ``t`` it is the incumbent (best search score) among the trials finished by ``t``, and the
reported value is that architecture's ``evaluator.report`` (e.g. its 200-epoch test score); before the first
trial finishes there is none (NaN). NATS's plotting script interpolates linearly between the two trials
nearest in time instead; a step function is what a user stopping at ``t`` would get. The *final* value is
the incumbent of the whole run, including the trial that crossed the budget, as the reference scripts
report it. Regret is ``|best reported value in the table - value|``. Means and standard deviations are over
runs (``numpy``'s population std, ddof 0, as NATS's summaries).

Outputs (:func:`write_outputs`): ``results.json`` (settings, final mean ± std, the trajectory summary and
each run's final architecture), ``trajectory.csv`` (the summary per report time), ``trajectory.npz`` (every
run's incumbent index and value at every report time) and ``trajectory.png``; :func:`plot` draws several
algorithms together.
"""

from __future__ import annotations

import csv
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nb360.io import atomic_open, write_json
from nb360.search.multitrial.base import Evaluator, History, Space

__all__ = ["SearchResults", "run_searches", "summarise", "write_outputs", "plot", "report_times"]


def report_times(budget_seconds: float, report_every: float) -> np.ndarray:
    """``report_every, 2 * report_every, ...`` up to and including ``budget_seconds``."""
    steps = max(1, math.ceil(budget_seconds / report_every - 1e-9))
    return np.minimum(np.arange(1, steps + 1) * report_every, budget_seconds)


def run_seed(seed: int, run: int) -> random.Random:
    """The random generator of run ``run`` of a search seeded ``seed`` (independent streams via SeedSequence)."""
    return random.Random(int(np.random.SeedSequence([seed, run]).generate_state(1, np.uint64)[0]))


@dataclass
class SearchResults:
    """Every run of one algorithm, read at the report times."""

    algo: str
    times: np.ndarray  # (T,) simulated seconds
    index: np.ndarray  # (runs, T) incumbent's benchmark index (-1: none yet)
    value: np.ndarray  # (runs, T) incumbent's reported value (NaN: none yet)
    final_index: np.ndarray  # (runs,)
    final_value: np.ndarray  # (runs,)
    trials: np.ndarray  # (runs,) evaluations per run
    used_seconds: np.ndarray  # (runs,) simulated seconds used (the crossing trial included)
    wall_seconds: float
    hyperparameters: dict[str, Any] = field(default_factory=dict)


def _trajectory(history: History, evaluator: Evaluator, times: np.ndarray, arch_id: Callable[[Any], int]) -> tuple:
    k = np.searchsorted(np.asarray(history.times), times, side="right") - 1
    best = np.asarray(history.best, dtype=np.int64)
    index = np.full(times.shape, -1, dtype=np.int64)
    value = np.full(times.shape, np.nan)
    for pos in np.unique(best[k[k >= 0]]).tolist():
        arch = history.archs[pos]
        hit = (k >= 0) & (best[np.maximum(k, 0)] == pos)
        index[hit], value[hit] = arch_id(arch), evaluator.report(arch)
    final = history.best_arch
    return index, value, arch_id(final), evaluator.report(final)


def run_searches(
    algo: str,
    search: Callable[..., History],
    space: Space,
    evaluator: Evaluator,
    budget_seconds: float,
    *,
    runs: int,
    seed: int = 0,
    report_every: float = 1.0,
    hyperparameters: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> SearchResults:
    """Run ``search`` ``runs`` times (run ``r`` seeded by ``(seed, r)``) and read each at the report times."""
    from tqdm import tqdm

    hyperparameters = dict(hyperparameters or {})
    times = report_times(budget_seconds, report_every)
    arch_id = getattr(evaluator, "index", None) or (lambda arch: -1)
    index = np.full((runs, times.size), -1, dtype=np.int64)
    value = np.full((runs, times.size), np.nan)
    final_index, final_value = np.full(runs, -1, dtype=np.int64), np.full(runs, np.nan)
    trials, used = np.zeros(runs, dtype=np.int64), np.zeros(runs)
    start = time.perf_counter()
    for r in tqdm(range(runs), desc=algo, disable=not progress, leave=False):
        history = search(space, evaluator, budget_seconds, run_seed(seed, r), **hyperparameters)
        index[r], value[r], final_index[r], final_value[r] = _trajectory(history, evaluator, times, arch_id)
        trials[r], used[r] = len(history), history.total
    wall = time.perf_counter() - start
    return SearchResults(algo, times, index, value, final_index, final_value, trials, used, wall, hyperparameters)


def _mean_std(values: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    count = (~np.isnan(values)).sum(axis=axis)
    safe = np.where(np.isnan(values), 0.0, values)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = safe.sum(axis=axis) / count
        var = (np.where(np.isnan(values), 0.0, (values - np.expand_dims(mean, axis)) ** 2)).sum(axis=axis) / count
    return mean, np.sqrt(var)


def summarise(results: SearchResults, best_value: float) -> dict[str, Any]:
    """Mean ± std over runs of the reported value and of the regret, per report time and at the end."""
    regret = np.abs(best_value - results.value)
    value_mean, value_std = _mean_std(results.value)
    regret_mean, regret_std = _mean_std(regret)
    final_regret = np.abs(best_value - results.final_value)
    return {
        "final": {
            "value_mean": float(np.mean(results.final_value)),
            "value_std": float(np.std(results.final_value)),
            "regret_mean": float(np.mean(final_regret)),
            "regret_std": float(np.std(final_regret)),
        },
        "trials": {
            "mean": float(results.trials.mean()),
            "min": int(results.trials.min()),
            "max": int(results.trials.max()),
        },
        "used_seconds_mean": float(results.used_seconds.mean()),
        "trajectory": {
            "time": results.times.tolist(),
            "value_mean": value_mean.tolist(),
            "value_std": value_std.tolist(),
            "regret_mean": regret_mean.tolist(),
            "regret_std": regret_std.tolist(),
            "runs_with_result": (~np.isnan(results.value)).sum(axis=0).tolist(),
        },
    }


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None, so that results.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_outputs(out: Path, results: SearchResults, summary: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
    """``results.json``, ``trajectory.csv``, ``trajectory.npz`` and ``trajectory.png`` under ``out`` (each written atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "algo": results.algo,
        "hyperparameters": results.hyperparameters,
        **settings,
        **summary,
        "wall_seconds": results.wall_seconds,
        "per_run": {
            "final_index": results.final_index.tolist(),
            "final_value": results.final_value.tolist(),
            "trials": results.trials.tolist(),
        },
    }
    write_json(out / "results.json", _json_safe(record))
    trajectory = summary["trajectory"]
    with atomic_open(out / "trajectory.csv", "w", newline="") as f:
        writer = csv.writer(f)
        keys = list(trajectory)
        writer.writerow(keys)
        writer.writerows(zip(*(trajectory[k] for k in keys)))
    with atomic_open(out / "trajectory.npz", "wb") as f:
        np.savez(
            f,
            time=results.times,
            index=results.index,
            value=results.value,
            final_index=results.final_index,
            final_value=results.final_value,
            trials=results.trials,
            used_seconds=results.used_seconds,
        )
    plot({results.algo: summary}, out / "trajectory.png", settings)


def plot(summaries: Mapping[str, Mapping[str, Any]], path: Path, settings: Mapping[str, Any]) -> None:
    """Mean ± std of the reported value and of the regret against simulated time, one line per algorithm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, summary in summaries.items():
        t = np.asarray(summary["trajectory"]["time"])
        for ax, key in zip(axes, ("value", "regret")):
            mean = np.asarray(summary["trajectory"][f"{key}_mean"], dtype=float)
            std = np.asarray(summary["trajectory"][f"{key}_std"], dtype=float)
            (line,) = ax.plot(t, mean, label=name)
            ax.fill_between(t, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    metric = settings.get("metric", "value")
    axes[0].set_ylabel(f"{settings.get('report_set', '')} {metric} (hp {settings.get('report_hp', '')})")
    axes[1].set_ylabel("regret")
    for ax in axes:
        ax.set_xlabel("simulated time (s)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"{settings.get('dataset', '')}: mean ± std over {settings.get('runs', '?')} runs")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def compare(directories: Sequence[Path], path: Path) -> None:
    """One plot of the ``results.json`` of several output directories."""
    import json

    summaries, settings = {}, {}
    for directory in directories:
        record = json.loads((Path(directory) / "results.json").read_text())
        name = record["algo"] if record["algo"] not in summaries else f"{record['algo']} ({directory})"
        summaries[name] = {
            "trajectory": {k: [math.nan if v is None else v for v in vs] for k, vs in record["trajectory"].items()}
        }
        settings = record
    plot(summaries, path, settings)
