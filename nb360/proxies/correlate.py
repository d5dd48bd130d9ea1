"""``python -m nb360.proxies correlate``: zero-cost proxies of NB201 cells against a tabular benchmark's final scores.

    python -m nb360.proxies correlate --benchmark data/nb201/NATS-tss-v1_0-daa55.nb360 --task ninapro \\
        --archs 200 --proxies all --batch real --data.root data/ninapro -o reports/proxies-ninapro

Samples ``--archs N`` evaluated cells of the store (seeded by ``--seed``) or takes ``--all``, builds each one's
NB201 network for the task (``--channels``/``--cells``, NB201's C = 16, N = 5 by default), scores it with
:func:`nb360.proxies.compute_proxies` on one batch (the same for every cell: the task's first training batch with
``--batch real``, :func:`nb360.proxies.random_batch` with ``--batch random``), averaged over ``--repeats`` weight
initialisations (seeds ``seed .. seed + repeats - 1``), and correlates every proxy with the store's final score
(its direction respected: an error is negated, so a good proxy correlates positively). Writes ``scores.csv``,
``correlations.json``, ``correlations.md`` and ``correlations.png`` under ``-o``.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nb360.errors import DataError, UsageError, run_command

__all__ = ["main", "correlate", "select_archs", "ground_truth"]

#: task name -> the dataset keys a store may use for it, in order of preference (as nb360.search.tabular)
TASK_KEYS = {"ninapro": ("ninapro",), "darcy": ("darcyflow", "darcy"), "darcyflow": ("darcyflow", "darcy")}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m nb360.proxies correlate",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--benchmark", required=True, help="an nb360-tabular store (or NATS file) of the NB201 topology space")
    p.add_argument("--task", required=True, help="the task (ninapro, darcy, ...); its dataset must be in the store")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--archs", type=int, default=None, metavar="N", help="score N evaluated cells, sampled with --seed")
    which.add_argument("--all", action="store_true", help="score every evaluated cell")
    p.add_argument("--proxies", default="all", help="comma-separated proxy names, or 'all' (default)")
    p.add_argument("--batch", choices=("real", "random"), default="real", help="the task's first training batch or a random one")
    p.add_argument("--data.root", dest="data_root", default=None, help="the task's data directory (--batch real)")
    p.add_argument("--batch_size", "--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="seeds the sample of cells, the random batch and the weights")
    p.add_argument("--repeats", type=int, default=1, help="average each proxy over this many weight initialisations")
    p.add_argument("--channels", type=int, default=16, help="C of the NB201 network (NB201: 16)")
    p.add_argument("--cells", type=int, default=5, help="N cells per stage (NB201: 5)")
    p.add_argument("--hp", default=None, help="the store's training protocol (default: '200' if stored, else the longest)")
    p.add_argument("--eval_set", "--eval-set", default=None, help="default: x-test if stored, else ori-test, else the first")
    p.add_argument("--no_progress", "--no-progress", action="store_true")
    p.add_argument("-o", "--output", required=True, help="output directory")
    return p


# ---------------------------------------------------------------------------- inputs
def _dataset(bench: Any, task: str) -> str:
    for key in TASK_KEYS.get(task, (task,)):
        if key in bench.datasets:
            return key
    raise UsageError(f"task {task!r} is not in this benchmark; it holds: {', '.join(bench.datasets)}")


def _hp_key(hp: str) -> tuple[int, float, str]:
    return (1, float(hp), hp) if hp.replace(".", "", 1).isdigit() else (0, 0.0, hp)


def _pick(choices: Sequence[str], preferred: Sequence[str], what: str, given: str | None, fallback: str) -> str:
    if given is not None:
        if given not in choices:
            raise UsageError(f"unknown {what} {given!r}; choose one of: {', '.join(choices)}")
        return given
    return next((c for c in preferred if c in choices), fallback)


def ground_truth(bench: Any, task: str, hp: str | None = None, eval_set: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """``(num_archs,)`` final scores (NaN where not evaluated) of ``task`` in ``bench`` and what was chosen."""
    dataset = _dataset(bench, task)
    hps = sorted(bench.hps(dataset), key=_hp_key)
    hp = _pick(hps, ("200",), "hp", hp, hps[-1])
    sets = bench.eval_sets(dataset, hp)
    eval_set = _pick(sets, ("x-test", "ori-test"), "eval_set", eval_set, sets[0])
    values = np.asarray(bench.scores(dataset, hp, eval_set), dtype=float)
    values = np.where(bench.evaluated(dataset, hp), values, np.nan)
    info = bench.score_info(dataset)
    return values, {
        "dataset": dataset,
        "hp": hp,
        "eval_set": eval_set,
        "score": info["name"],
        "unit": info.get("unit"),
        "lower_is_better": bool(info["lower_is_better"]),
    }


def select_archs(values: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Indices (ascending) of ``n`` evaluated cells sampled without replacement with ``seed``, or all with ``n=None``."""
    evaluated = np.flatnonzero(~np.isnan(values))
    if n is None:
        return evaluated
    if n < 1:
        raise UsageError(f"--archs must be at least 1, not {n}")
    if n > len(evaluated):
        raise UsageError(f"--archs {n} is more than the {len(evaluated)} evaluated architectures of the store; use --all")
    return np.sort(np.random.default_rng(seed).choice(evaluated, size=n, replace=False))


def _proxy_names(text: str) -> list[str]:
    from nb360.proxies import PROXIES

    if text.strip() == "all":
        return list(PROXIES)
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError("--proxies is empty; give names separated by commas, or 'all'")
    unknown = [n for n in names if n not in PROXIES]
    if unknown:
        raise UsageError(f"unknown proxy {unknown[0]!r}; choose from: {', '.join(PROXIES)}, or 'all'")
    if len(set(names)) != len(names):
        raise UsageError(f"--proxies names a proxy twice: {text}")
    return names


def real_batch(spec: Any, root: str | None, batch_size: int) -> tuple[Any, Any]:
    """The first training batch ``(x, y)`` of the task's DataModule (final split), data fetched/verified as for training."""
    dm = spec.require_datamodule()(root=root, batch_size=batch_size)
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    return batch["x"], batch["y"]


# ---------------------------------------------------------------------------- scoring
def correlate(
    bench: Any,
    task: str,
    archs: Sequence[int],
    names: Sequence[str],
    batch: tuple[Any, Any],
    *,
    options: Mapping[str, Any] | None = None,
    seed: int = 0,
    repeats: int = 1,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """``{proxy: (len(archs),) scores}`` of the NB201 networks of ``archs``, the mean over ``repeats`` weight seeds."""
    from tqdm.auto import tqdm

    from nb360.proxies import compute_proxies

    out = {name: np.zeros(len(archs)) for name in names}
    for k, index in enumerate(tqdm(archs, desc=f"proxies on {task}", unit="arch", disable=not progress)):
        arch = bench.arch(int(index))
        for r in range(repeats):
            scores = compute_proxies("nb201", task, {"arch": arch, **dict(options or {})}, names, seed=seed + r, batch=batch)
            for name in names:
                out[name][k] += scores[name] / repeats
    return out


def correlations(scores: Mapping[str, np.ndarray], truth: np.ndarray, lower_is_better: bool) -> dict[str, dict[str, Any]]:
    """Spearman ρ and Kendall τ of every proxy over the cells where its score is finite; ``n`` counts them."""
    from nb360.proxies import proxy_correlations

    result: dict[str, dict[str, Any]] = {}
    for name, values in scores.items():
        ok = np.isfinite(values) & np.isfinite(truth)
        n = int(ok.sum())
        corr = (
            proxy_correlations(values[ok], truth[ok], lower_is_better) if n >= 2 else {"spearman": math.nan, "kendall": math.nan}
        )
        result[name] = {**{k: (None if math.isnan(v) else v) for k, v in corr.items()}, "n": n}
    return result


# ---------------------------------------------------------------------------- outputs
def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _markdown(corr: Mapping[str, Mapping[str, Any]], settings: Mapping[str, Any]) -> str:
    gt = f"{settings['score']} on {settings['dataset']} / hp {settings['hp']} / {settings['eval_set']}"
    direction = "lower is better, negated" if settings["lower_is_better"] else "higher is better"
    lines = [
        f"# Zero-cost proxies vs {settings['store']}",
        "",
        f"Task {settings['task']}, {settings['n']} architectures, ground truth: {gt} ({direction}); "
        f"{settings['batch']} batch of {settings['batch_size']}, C = {settings['channels']}, N = {settings['cells']}, "
        f"seed {settings['seed']}, {settings['repeats']} repeat(s).",
        "",
        "| proxy | Spearman ρ | Kendall τ | n |",
        "|---|---|---|---|",
    ]
    lines += [f"| {name} | {_fmt(c['spearman'])} | {_fmt(c['kendall'])} | {c['n']} |" for name, c in corr.items()]
    return "\n".join(lines) + "\n"


def _plot(scores: Mapping[str, np.ndarray], truth: np.ndarray, corr: Mapping[str, Any], settings: Mapping[str, Any], path: Path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from nb360.io import atomic_path

    names = list(scores)
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(3.2 * cols, 2.8 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    unit = f" ({settings['unit']})" if settings.get("unit") else ""
    for k, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, k + 1)
        ok = np.isfinite(scores[name])
        x = scores[name][ok]
        ax.scatter(x, truth[ok], s=6, alpha=0.6, linewidths=0)
        if x.size and (x > 0).all() and x.max() > 1e3 * x.min():  # heavy-tailed scores (synflow): a log axis
            ax.set_xscale("log")
        ax.set_title(f"{name}: ρ = {_fmt(corr[name]['spearman'])}", fontsize="medium")
        ax.set_xlabel(name)
        if k % cols == 0:
            ax.set_ylabel(f"{settings['score']}{unit}")
    fig.suptitle(f"{settings['task']}: {settings['n']} NB201 cells", fontsize="medium")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")


def write_outputs(
    out: Path,
    archs: Sequence[int],
    arch_strings: Sequence[str],
    truth: np.ndarray,
    scores: Mapping[str, np.ndarray],
    corr: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> list[Path]:
    from nb360.io import atomic_open, write_json

    out.mkdir(parents=True, exist_ok=True)
    names = list(scores)
    with atomic_open(out / "scores.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "arch", "ground_truth", *names])
        for k, (index, arch) in enumerate(zip(archs, arch_strings)):
            writer.writerow([int(index), arch, repr(float(truth[k])), *(repr(float(scores[n][k])) for n in names)])
    write_json(out / "correlations.json", {**settings, "proxies": dict(corr)})
    with atomic_open(out / "correlations.md", "w", encoding="utf-8") as f:
        f.write(_markdown(corr, settings))
    _plot(scores, truth, corr, settings, out / "correlations.png")
    return [out / n for n in ("scores.csv", "correlations.json", "correlations.md", "correlations.png")]


# ---------------------------------------------------------------------------- command
def _run(args: argparse.Namespace) -> None:
    from nb360.tabular import create
    from nb360.tasks import get_task

    if args.archs is None and not args.all:
        raise UsageError("give --archs N (a seeded sample of evaluated cells) or --all")
    if args.repeats < 1:
        raise UsageError(f"--repeats must be at least 1, not {args.repeats}")
    if args.batch_size < 2:
        raise UsageError(f"--batch_size must be at least 2 (jacob_cov and naswot compare samples), not {args.batch_size}")
    if args.channels < 1 or args.cells < 1:
        raise UsageError(f"--channels and --cells must be positive, not {args.channels} and {args.cells}")
    names = _proxy_names(args.proxies)
    spec = get_task(args.task)
    bench = create(args.benchmark, progress=not args.no_progress)
    if bench.space.name != "nb201":
        raise UsageError(
            f"{args.benchmark} is a {bench.space.name} benchmark; proxies are correlated on the NB201 topology space"
        )
    values, chosen = ground_truth(bench, args.task, args.hp, args.eval_set)
    archs = select_archs(values, None if args.all else args.archs, args.seed)
    if len(archs) < 2:
        raise DataError(f"{args.benchmark}: {len(archs)} evaluated architecture(s) for {chosen['dataset']}; need at least 2")
    options = {"channels": args.channels, "cells": args.cells}
    if args.batch == "real":
        batch = real_batch(spec, args.data_root, args.batch_size)
    else:
        import torch

        from nb360.models import build_network
        from nb360.proxies import random_batch

        torch.manual_seed(args.seed)
        network = build_network("nb201", spec, arch=bench.arch(int(archs[0])), **options)
        batch = random_batch(spec, network, args.batch_size, args.seed)
    scores = correlate(
        bench,
        spec.name,
        archs,
        names,
        batch,
        options=options,
        seed=args.seed,
        repeats=args.repeats,
        progress=not args.no_progress,
    )
    truth = values[archs]
    corr = correlations(scores, truth, chosen["lower_is_better"])
    settings = {
        "store": str(args.benchmark),
        "task": spec.name,
        **chosen,
        "n": len(archs),
        "sample": "all" if args.all else args.archs,
        "batch": args.batch,
        "batch_size": int(batch[0].shape[0]),
        "data_root": args.data_root if args.batch == "real" else None,
        "channels": args.channels,
        "cells": args.cells,
        "seed": args.seed,
        "repeats": args.repeats,
    }
    written = write_outputs(Path(args.output), archs, [bench.arch(int(i)) for i in archs], truth, scores, corr, settings)
    for name, c in corr.items():
        print(f"{name}: spearman {_fmt(c['spearman'])}, kendall {_fmt(c['kendall'])} (n = {c['n']})")
    for path in written:
        print(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_command(lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
