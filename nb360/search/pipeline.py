"""Search, derive, retrain: the stages of a one-shot search method in one ``train.py`` call.

``--stage all`` (default) searches on the task's search split (train -> validation),
derives the architecture, saves it (``genotype.json`` and a picture) in the run
directory, then retrains the derived network from scratch on the final split and scores
the test set. ``--stage search`` stops after the architecture (``results.json`` then
reports the supernet's validation metric); ``--stage eval`` retrains the architecture of
a finished search in the same run directory, or the one given with ``--genotype FILE``.
``--ckpt_path last`` resumes the stage that was running when a run was interrupted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Timer

from nb360.errors import UsageError
from nb360.io import write_json
from nb360.metrics import metric_class, metric_lower_is_better
from nb360.run import RunContext, versions

__all__ = ["SearchStages", "add_stage_arguments", "record_search", "search_then_evaluate"]

ARCHITECTURE_FILE = "genotype.json"
SEARCH_SUMMARY = "search.json"


def add_stage_arguments(parser: Any, search_epochs: int, eval_epochs: int) -> None:
    """The command-line options shared by search methods (names from the CLI contract)."""
    parser.add_argument("--stage", type=Literal["all", "search", "eval"], default="all", help="run the search, the retraining, or both")
    parser.add_argument("--search_epochs", type=int, default=search_epochs, help="epochs of the search stage")
    parser.add_argument("--eval_epochs", type=int, default=eval_epochs, help="epochs of the retraining stage")
    parser.add_argument("--genotype", type=str | None, default=None, help="retrain this architecture (JSON file) instead of searching")


@dataclass(frozen=True)
class SearchStages:
    """What distinguishes one search method's stages from another's.

    Attributes:
        parse: an architecture from the JSON data the search module's ``derive()`` returns.
        load: an architecture from a file.
        save: writes an architecture (JSON and pictures) into a folder.
        to_dict: an architecture as JSON data (for ``results.json``).
        evaluation: ``(ctx, architecture) -> (module, datamodule, trainer options)`` of the retraining.
    """

    parse: Callable[[dict[str, Any]], Any]
    load: Callable[[Path], Any]
    save: Callable[[Any, Path], None]
    to_dict: Callable[[Any], dict[str, Any]]
    evaluation: Callable[[RunContext, Any], tuple[pl.LightningModule, pl.LightningDataModule, dict[str, Any]]]


def _elapsed(trainer: pl.Trainer) -> float:
    timer = next(cb for cb in trainer.callbacks if isinstance(cb, Timer))
    return sum(timer.time_elapsed(stage) for stage in ("train", "validate"))


def _search(ctx: RunContext, stages: SearchStages) -> tuple[Any, dict[str, Any]]:
    """Train the supernet, derive the architecture (identical on every process), save it; return it and a summary."""
    from nb360.search.bilevel import BilevelDataModule

    ctx.check_fresh("search")
    trainer = ctx.trainer(datamodule=ctx.datamodule, stage="search", max_epochs=ctx.args.search_epochs, check_val_every_n_epoch=1)
    trainer.fit(ctx.model, datamodule=BilevelDataModule(ctx.datamodule), ckpt_path=ctx.resume_path("search"))
    architecture = stages.parse(ctx.model.derive())
    value = trainer.callback_metrics.get(f"val/{ctx.model.metric_name}")
    extra = {"params": ctx.model.num_parameters, "epochs": trainer.current_epoch, "processes": trainer.world_size}
    value = float(value) if value is not None else math.nan
    summary = record_search(ctx, stages, architecture, value, _elapsed(trainer), extra, write=trainer.is_global_zero)
    return architecture, summary


def record_search(
    ctx: RunContext,
    stages: SearchStages,
    architecture: Any,
    value: float,
    wall_time_s: float,
    extra: dict[str, Any],
    write: bool = True,
) -> dict[str, Any]:
    """Save a finished search: its architecture and summary (``search.json``; ``results.json`` with ``--stage search``)."""
    summary = {
        "task": ctx.task.name,
        "method": ctx.method,
        "seed": ctx.seed,
        "stage": "search",
        "metric": ctx.model.metric_name,
        "value": None if math.isnan(value) else value,  # null (strict JSON) for searches without a validation score
        "lower_is_better": metric_lower_is_better(metric_class(ctx.task.metric)),
        "split": getattr(ctx.datamodule, "eval_split", "val"),
        "wall_time_s": round(wall_time_s, 3),
        "genotype": stages.to_dict(architecture),
        **extra,
        "run_dir": str(ctx.run_dir),
        "versions": versions(),
    }
    if write:
        stages.save(architecture, ctx.run_dir)
        write_json(ctx.run_dir / SEARCH_SUMMARY, summary)
        if ctx.args.stage == "search":
            write_json(ctx.run_dir / "results.json", summary)
    return summary


def search_then_evaluate(
    ctx: RunContext,
    stages: SearchStages,
    evaluate: Callable[[RunContext, Any, float], dict[str, Any]] | None = None,
    search: Callable[[RunContext, SearchStages], tuple[Any, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Run the requested stages; return the content of ``results.json``.

    ``evaluate(ctx, architecture, search_time_s)``, if given, replaces the retraining stage
    (e.g. a tabular benchmark's lookup of the derived architecture) and returns the results.
    ``search(ctx, stages) -> (architecture, summary)``, if given, replaces the one-shot search
    (e.g. a multi-trial search that trains every candidate); it ends with :func:`record_search`.
    """
    args = ctx.args
    saved = ctx.run_dir / ARCHITECTURE_FILE
    search_time = 0.0
    if args.genotype is not None:
        architecture = stages.load(Path(args.genotype))
    elif saved.is_file() and args.stage != "search":  # a finished search of this run: retrain its result
        architecture = stages.load(saved)
        summary = ctx.run_dir / SEARCH_SUMMARY
        search_time = float(json.loads(summary.read_text()).get("wall_time_s", 0.0)) if summary.is_file() else 0.0
    elif args.stage == "eval":
        raise UsageError(f"--stage eval needs --genotype FILE or a finished search in {ctx.run_dir} ({ARCHITECTURE_FILE})")
    else:
        architecture, summary = (search or _search)(ctx, stages)
        if args.stage == "search":
            return summary
        search_time = summary["wall_time_s"]
    if evaluate is not None:
        return evaluate(ctx, architecture, search_time)
    ctx.check_fresh("eval")
    module, datamodule, options = stages.evaluation(ctx, architecture)
    trainer = ctx.trainer(datamodule=datamodule, stage="eval", model=module, max_epochs=args.eval_epochs, **options)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ctx.resume_path("eval"))
    scores = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    return ctx.finish(trainer, scores, module, datamodule, stages.to_dict(architecture), wall_time_s=search_time, extra={"stage": "all"})
