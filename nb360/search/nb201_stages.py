"""The stages of a search in the NATS spaces (topology ``nb201`` and size ``nats_sss``), shared by their methods.

What the NB201 weight-sharing methods (:mod:`nb360.search.nb201_ws`) and the size-space
methods have in common on top of :mod:`nb360.search.pipeline`:

* the command-line options: the stage options, ``--benchmark`` (a tabular store or a NATS
  file: look the derived architecture up instead of retraining it), ``--benchmark_hp`` and
  ``--benchmark_set`` (which of the benchmark's protocols and evaluation sets), and the
  retraining settings ``--eval.*`` (:class:`NB201Eval`, the NB201 training protocol);
* the architecture file: ``genotype.json`` holds ``{"space": ..., "arch": "<string>"}``,
  drawn beside it as ``genotype.png``/``.svg`` (the cell, or the widths of the size space);
* :func:`run_nb201_search`: search, derive, then retrain or look up.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only

from nb360.errors import DataError, UsageError
from nb360.io import atomic_path, write_json
from nb360.run import RunContext, versions
from nb360.search.pipeline import ARCHITECTURE_FILE, SearchStages, add_stage_arguments, search_then_evaluate
from nb360.tasks import TaskSpec

__all__ = [
    "BENCHMARK_DATASETS",
    "NB201Eval",
    "add_nb201_arguments",
    "arch_record",
    "benchmark_lookup",
    "draw_architecture",
    "eval_defaults",
    "run_nb201_search",
    "stages_for",
]

#: a task's dataset key in a NATS-format benchmark, most specific first
BENCHMARK_DATASETS = {"darcy": ("darcy", "darcyflow")}
#: evaluation sets of a benchmark that hold test results, preferred first
TEST_SETS = ("ori-test", "x-test", "test")


@dataclass
class NB201Eval:
    """Retraining of the derived architecture with the NAS-Bench-201 protocol (SGD Nesterov, cosine).

    Attributes:
        channels, cells: C and N of the topology network (the size space's widths are the architecture; unused there).
        lr, momentum, weight_decay, min_lr: SGD with Nesterov momentum, cosine from ``lr`` to ``min_lr``.
        batch_size: training and evaluation batch size (default: the task's reference batch size).
        grad_clip: L2 norm the gradients are clipped to (0: none, as NB201).
    """

    channels: int = 16
    cells: int = 5
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    min_lr: float = 0.0
    batch_size: int = 256
    grad_clip: float = 0.0


def add_nb201_arguments(parser: Any, search_epochs: int, eval_epochs: int) -> None:
    """Stage options, benchmark lookup options and ``--eval.*`` of a NATS-space search method."""
    add_stage_arguments(parser, search_epochs=search_epochs, eval_epochs=eval_epochs)
    parser.add_argument(
        "--benchmark",
        type=str | None,
        default=None,
        help="look the derived architecture up in this tabular store or NATS file instead of retraining",
    )
    parser.add_argument(
        "--benchmark_hp", type=str | None, default=None, help="the benchmark's training protocol (default: its largest hp)"
    )
    parser.add_argument(
        "--benchmark_set",
        type=str | None,
        default=None,
        help=f"the benchmark's test set (default: the first of {', '.join(TEST_SETS)})",
    )
    parser.add_class_arguments(NB201Eval, "eval", help="retraining of the derived architecture (NB201 protocol)")


def eval_defaults(spec: TaskSpec) -> dict[str, Any]:
    """Per-task defaults of the retraining: the task's reference batch size."""
    return {"eval.batch_size": spec.reference.batch_size}


# ------------------------------------------------------------------------------------------ architecture files
def _space(space_name: str) -> Any:
    from nb360.spaces import get_space

    return get_space(space_name)


def arch_record(space_name: str, arch: str) -> dict[str, Any]:
    """The JSON form of an architecture: ``{"space": name, "arch": string}`` (the string checked and normalised)."""
    space = _space(space_name)
    return {"space": space.name, "arch": space.to_string(arch)}


def _parse(space_name: str, data: Any) -> str:
    space = _space(space_name)
    if isinstance(data, str):
        data = {"arch": data}
    if not isinstance(data, dict) or not isinstance(data.get("arch"), str):
        raise UsageError(
            f'a {space.name} architecture file holds {{"space": "{space.name}", "arch": "<string>"}}, got {str(data)[:80]}'
        )
    if "space" in data and _space(data["space"]).name != space.name:
        raise UsageError(f"architecture of space {data['space']!r} given to a {space.name} method")
    return space.to_string(data["arch"])


def _load(space_name: str, path: Path) -> str:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"architecture file {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise UsageError(f"architecture file {path} is not valid JSON ({err.msg}, line {err.lineno})") from None
    return _parse(space_name, data)


def draw_architecture(space_name: str, arch: str, path_stem: Path) -> list[Path]:
    """``<stem>.png`` and ``<stem>.svg``: the NB201 cell (4 nodes, 6 labelled edges, ``none`` dashed) or the widths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    space = _space(space_name)
    if space.name == "nats_sss":
        widths = space.widths(arch)
        fig, ax = plt.subplots(figsize=(4.5, 3.0))
        ax.bar(range(len(widths)), widths, color="#9ecae1", edgecolor="0.3")
        ax.set_xticks(range(len(widths)), [f"c{k}" for k in range(len(widths))])
        ax.set_ylabel("channels")
        ax.set_title(arch, fontsize=10)
    else:
        from nb360.spaces.nb201 import cell_edges

        fig, ax = plt.subplots(figsize=(6.0, 3.4))
        positions = {0: (0.0, 0.0), 1: (1.0, 0.8), 2: (2.0, -0.8), 3: (3.0, 0.0)}
        for i, j, op in cell_edges(arch):
            (x0, y0), (x1, y1) = positions[i], positions[j]
            rad = 0.7 if (i, j) == (0, 3) else 0.0
            style = {"arrowstyle": "->", "color": "0.75" if op == "none" else "0.3", "ls": "--" if op == "none" else "-"}
            ax.annotate(
                "",
                xy=(x1, y1),
                xytext=(x0, y0),
                arrowprops={**style, "shrinkA": 14, "shrinkB": 14, "connectionstyle": f"arc3,rad={rad}"},
            )
            lx, ly = (x0 + x1) / 2 + rad * (y1 - y0) / 2, (y0 + y1) / 2 - rad * (x1 - x0) / 2
            colour = "0.55" if op == "none" else "black"
            ax.text(
                lx,
                ly,
                op,
                fontsize=7,
                color=colour,
                ha="center",
                va="center",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none"},
            )
        for node, (x, y) in positions.items():
            colour = "#9ecae1" if node == 0 else "#fdd0a2" if node == 3 else "#c7e9c0"
            ax.text(
                x,
                y,
                str(node),
                ha="center",
                va="center",
                fontsize=10,
                bbox={"boxstyle": "circle,pad=0.3", "fc": colour, "ec": "0.3"},
            )
        ax.set_xlim(-0.4, 3.4)
        ax.set_ylim(-1.3, 1.1)
        ax.axis("off")
        ax.set_title(arch, fontsize=7)
    fig.tight_layout()
    written = []
    for suffix in (".png", ".svg"):
        target = Path(path_stem).with_suffix(suffix)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=120)
        written.append(target)
    plt.close(fig)
    return written


def _save(space_name: str, arch: str, folder: Path) -> None:
    write_json(folder / ARCHITECTURE_FILE, arch_record(space_name, arch))
    draw_architecture(space_name, arch, (folder / ARCHITECTURE_FILE).with_suffix(""))


def _evaluation(space_name: str, ctx: RunContext, arch: str) -> tuple[pl.LightningModule, pl.LightningDataModule, dict[str, Any]]:
    from nb360.search.train import TrainModule

    settings: NB201Eval = ctx.args.eval
    if _space(space_name).name == "nats_sss":
        network, options = "nats_sss", {"arch": arch}
    else:
        network, options = "nb201", {"arch": arch, "channels": settings.channels, "cells": settings.cells}
    module = TrainModule(
        task=ctx.task.name,
        network=network,
        network_options=options,
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        nesterov=True,
        schedule="cosine",
        min_lr=settings.min_lr,
        metric_options=ctx.model.hparams.get("metric_options"),
    )
    datamodule = ctx.make_datamodule(split="final", batch_size=settings.batch_size, eval_batch_size=settings.batch_size)
    return module, datamodule, ({"gradient_clip_val": settings.grad_clip} if settings.grad_clip > 0 else {})


def stages_for(space_name: str) -> SearchStages:
    """The :class:`SearchStages` of a NATS space (``nb201``/``tss`` or ``nats_sss``/``sss``); architectures are strings."""
    name = _space(space_name).name
    return SearchStages(
        parse=lambda data: _parse(name, data),
        load=lambda path: _load(name, path),
        save=lambda arch, folder: _save(name, arch, folder),
        to_dict=lambda arch: arch_record(name, arch),
        evaluation=lambda ctx, arch: _evaluation(name, ctx, arch),
    )


# ------------------------------------------------------------------------------------------ benchmark lookup
def _benchmark_dataset(bench: Any, task: str) -> str:
    candidates = BENCHMARK_DATASETS.get(task, (task,))
    for dataset in candidates:
        if dataset in bench.datasets:
            return dataset
    looked, holds = ", ".join(candidates), ", ".join(bench.datasets)
    raise UsageError(f"benchmark {bench.store.path} has no results for task {task!r} (looked for {looked}; it holds {holds})")


def _largest_hp(hps: list[str]) -> str:
    return max(hps, key=lambda h: (0, int(h), h) if h.isdigit() else (-1, 0, h))


def benchmark_lookup(
    path: str | Path, space_name: str, task: str, arch: str, hp: str | None = None, eval_set: str | None = None
) -> dict[str, Any]:
    """The benchmark's test value of ``arch`` on ``task`` (mean over its seeds, last epoch) with what it is.

    Returns ``{metric, value, lower_is_better, benchmark, benchmark_dataset, benchmark_hp, benchmark_set, arch_index}``.
    """
    from nb360.tabular.api import create

    bench = create(path, search_space=space_name, progress=False)
    dataset = _benchmark_dataset(bench, task)
    hp = hp if hp is not None else _largest_hp(bench.hps(dataset))
    sets = bench.eval_sets(dataset, hp)
    if eval_set is None:
        eval_set = next((s for s in TEST_SETS if s in sets), None)
        if eval_set is None:
            raise UsageError(
                f"benchmark {path} ({dataset}, hp {hp}) has no test set among {', '.join(sets)}; choose one with --benchmark_set"
            )
    index = bench.query_index_by_arch(arch)
    value = bench.score(index, dataset, hp, eval_set) if index >= 0 else math.nan
    if math.isnan(value):
        raise UsageError(
            f"benchmark {path} has no {dataset}/{hp}/{eval_set} result for {arch}; run without --benchmark to retrain it"
        )
    info = bench.score_info(dataset)
    return {
        "metric": info["name"],
        "value": float(value),
        "lower_is_better": bool(info["lower_is_better"]),
        "benchmark": str(path),
        "benchmark_dataset": dataset,
        "benchmark_hp": hp,
        "benchmark_set": eval_set,
        "arch_index": int(index),
    }


def _lookup_results(space_name: str, ctx: RunContext, arch: str, search_time: float) -> dict[str, Any]:
    import torch.distributed as dist

    args = ctx.args
    distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    found: Any = None
    if not distributed or dist.get_rank() == 0:  # one process opens (and, from a NATS file, converts) the benchmark
        try:
            found = benchmark_lookup(args.benchmark, space_name, ctx.task.name, arch, args.benchmark_hp, args.benchmark_set)
        except (UsageError, DataError) as err:  # raised on every process, not only here
            found = err
    if distributed:
        shared = [found]
        dist.broadcast_object_list(shared, src=0)
        found = shared[0]
    if isinstance(found, Exception):
        raise found
    results = {
        "task": ctx.task.name,
        "method": ctx.method,
        "seed": ctx.seed,
        "metric": found.pop("metric"),
        "value": found.pop("value"),
        "lower_is_better": found.pop("lower_is_better"),
        "split": found["benchmark_set"],
        "source": "benchmark",
        **found,
        "wall_time_s": round(search_time, 3),
        "genotype": arch_record(space_name, arch),
        "stage": "all",
        "run_dir": str(ctx.run_dir),
        "versions": versions(),
    }
    if rank_zero_only.rank == 0:
        write_json(ctx.run_dir / "results.json", results)
    return results


def run_nb201_search(ctx: RunContext, space_name: str, search: Any = None) -> dict[str, Any]:
    """Search, derive and save; then look the architecture up in ``--benchmark`` if given, else retrain it.

    ``search`` replaces the one-shot search (see :func:`nb360.search.pipeline.search_then_evaluate`).
    """
    stages = stages_for(space_name)
    if getattr(ctx.args, "benchmark", None) is None:
        return search_then_evaluate(ctx, stages, search=search)
    from nb360.tabular.api import create

    create(ctx.args.benchmark, search_space=space_name, progress=False)  # a missing or corrupt benchmark fails before the search
    lookup = lambda c, arch, t: _lookup_results(space_name, c, arch, t)  # noqa: E731
    return search_then_evaluate(ctx, stages, evaluate=lookup, search=search)
