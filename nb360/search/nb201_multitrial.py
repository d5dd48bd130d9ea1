"""Multi-trial NAS with real training: ``python train.py --task T --method nb201_rea`` (also random, reinforce, hyperband, bohb).

The algorithms are those of :mod:`nb360.search.multitrial`, the ones that run on tabular
benchmarks; here their evaluator trains every proposed architecture on the task's search
split (train -> validation) through the same Trainer as every other run, and returns the
validation metric and the wall time the trial took. The search budget is counted in
``epochs`` trained (default), ``trials`` or wall-clock ``seconds`` (``--search.budget_unit``);
epochs and trials make a search reproducible on any machine. The best architecture is then
retrained on the final split (or looked up with ``--benchmark``), as after a one-shot search.

``--model.*`` is the training protocol of every trial (NB201's: SGD Nesterov, lr 0.1, cosine,
weight decay 5e-4; its network options are unused), ``--search.*`` the space, the trial
network, the algorithm and its budget, ``--eval.*`` the retraining. Every finished trial is appended to
``trials.jsonl`` in the run directory; ``--ckpt_path last`` replays them (the algorithms are
deterministic given the seed) and resumes the interrupted trial from its checkpoint.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from nb360.errors import UsageError
from nb360.methods import Method, register_method
from nb360.metrics import metric_class, metric_lower_is_better
from nb360.run import RunContext
from nb360.search.multitrial import ALGORITHMS, Evaluation, History, make_rng, product_space
from nb360.search.nb201_stages import add_nb201_arguments, eval_defaults, run_nb201_search
from nb360.search.pipeline import SearchStages, record_search
from nb360.search.train import TrainModule
from nb360.search.trials import TrialLog, remove_trial_folders, train_trial
from nb360.tasks import TaskSpec

__all__ = ["SearchSettings", "TrainingEvaluator"]

TRAIN_ARGUMENTS = set(inspect.signature(TrainModule).parameters)
RESNET_CELL = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"


@dataclass
class SearchSettings:
    """The multi-trial search.

    Attributes:
        space: ``nb201`` (topology, 15,625 cells) or ``nats_sss`` (size, 32,768 width strings).
        channels, cells: C and N of each trial's topology network (the size space's widths are the architecture).
        epochs: epochs of a full trial (NB201's short protocol: 12); Hyperband's largest budget.
        min_epochs: Hyperband's and BOHB's smallest budget.
        budget: how much search there is, in ``budget_unit``.
        budget_unit: ``epochs`` (trained, summed over trials), ``trials``, or wall-clock ``seconds``.
        options: the algorithm's hyperparameters (e.g. ``{"population_size": 10, "sample_size": 3}``
            for REA); the defaults are NATS-Bench's.
    """

    space: Literal["nb201", "nats_sss"] = "nb201"
    channels: int = 16
    cells: int = 5
    epochs: int = 12
    min_epochs: int = 1
    budget: float = 240.0
    budget_unit: Literal["epochs", "trials", "seconds"] = "epochs"
    options: dict[str, Any] = field(default_factory=dict)


class TrainingEvaluator:
    """Trains an architecture for ``budget`` epochs (of a schedule of ``settings.epochs``) on the search split.

    Score: the validation metric after the last epoch; cost: the budget's unit (epochs trained, 1 trial,
    or measured seconds). Finished trials are replayed from ``trials.jsonl`` on resume.
    """

    def __init__(self, ctx: RunContext, settings: SearchSettings, to_string: Any) -> None:
        self.ctx, self.settings, self.to_string = ctx, settings, to_string
        self.max_budget = settings.epochs
        self.metric = ctx.model.metric_name
        self.lower_is_better = metric_lower_is_better(metric_class(ctx.task.metric))
        self.log = TrialLog(ctx)
        self.count = 0
        self.wall_s = 0.0

    def report(self, arch: Any) -> float:
        return math.nan  # no test score during a real search: the retraining (or --benchmark) gives it

    def evaluate(self, arch: Any, budget: int | None, rng: Any) -> Evaluation:
        epochs = int(budget or self.max_budget)
        arch_string = self.to_string(arch)
        number, self.count = self.count, self.count + 1
        record = self.log.replay(number, arch=arch_string, epochs=epochs)
        if record is not None:
            return Evaluation(record["score"], record["cost"])
        start = time.perf_counter()
        score = self._train(arch_string, epochs, number)
        wall = time.perf_counter() - start
        cost = {"epochs": float(epochs), "trials": 1.0, "seconds": wall}[self.settings.budget_unit]
        record = {"trial": number, "arch": arch_string, "epochs": epochs, "score": score, "cost": cost, "wall_s": round(wall, 3)}
        self.log.append(record)
        self.wall_s += wall
        print(f"trial {number}: {arch_string} x {epochs} epochs: val {self.metric} = {score:.6g} ({wall:.1f} s)", flush=True)
        return Evaluation(score, cost)

    def _train(self, arch: str, epochs: int, number: int) -> float:
        ctx, h = self.ctx, dict(self.ctx.model.hparams)
        settings = self.settings
        options = (
            {"arch": arch}
            if settings.space == "nats_sss"
            else {"arch": arch, "channels": settings.channels, "cells": settings.cells}
        )
        network = "nats_sss" if settings.space == "nats_sss" else "nb201"
        arguments = {k: v for k, v in h.items() if k in TRAIN_ARGUMENTS}
        module = TrainModule(**{**arguments, "network": network, "network_options": options, "schedule_epochs": self.max_budget})
        return train_trial(ctx, module, number, epochs)


def _search(ctx: RunContext, stages: SearchStages) -> tuple[str, dict[str, Any]]:
    settings: SearchSettings = ctx.args.search
    if settings.epochs < 1 or not 1 <= settings.min_epochs <= settings.epochs:
        raise UsageError(
            f"--search.epochs {settings.epochs} and --search.min_epochs {settings.min_epochs}: need 1 <= min_epochs <= epochs"
        )
    from nb360.spaces import get_space

    space = get_space(settings.space)
    codes = product_space(space)
    evaluator = TrainingEvaluator(ctx, settings, codes.to_string)
    algo = ctx.method.removeprefix("nb201_")
    options = dict(settings.options)
    if algo in ("hyperband", "bohb"):
        options = {"min_budget": settings.min_epochs, "max_budget": settings.epochs, **options}
    accepted = set(inspect.signature(ALGORITHMS[algo]).parameters) - {"space", "evaluator", "budget_seconds", "rng"}
    if unknown := sorted(set(options) - accepted):
        raise UsageError(f"--search.options: {algo} has no option {', '.join(unknown)}; it takes {', '.join(sorted(accepted))}")
    history: History = ALGORITHMS[algo](codes, evaluator, settings.budget, make_rng(ctx.seed), **options)
    remove_trial_folders(ctx)
    arch = codes.to_string(history.best_arch)
    best = history.scores[history.best[-1]]
    extra = {"trials": len(history), "budget": settings.budget, "budget_unit": settings.budget_unit, "budget_used": history.total}
    return arch, record_search(ctx, stages, arch, float(best), evaluator.wall_s, extra)


def _run(ctx: RunContext) -> dict[str, Any]:
    return run_nb201_search(ctx, ctx.args.search.space, search=_search)


def _defaults(spec: TaskSpec) -> dict[str, Any]:
    return {
        "data.split": "search",
        "model.network": "nb201",
        "model.network_options": {"arch": RESNET_CELL},  # a template: every trial builds its own network
        "model.lr": 0.1,
        "model.momentum": 0.9,
        "model.weight_decay": 5e-4,
        "model.nesterov": True,
        "model.schedule": "cosine",
        **eval_defaults(spec),
    }


def _arguments(parser: Any) -> None:
    add_nb201_arguments(parser, search_epochs=0, eval_epochs=200)  # --search_epochs is unused: --search.* sets the budget
    parser.add_class_arguments(
        SearchSettings, "search", help="the multi-trial search: space, trial epochs, budget, algorithm options"
    )


for _algo, _description in (
    ("random", "random search: uniform samples, each trained on the search split"),
    ("rea", "regularised evolution (population 10, tournament 3), each child trained on the search split"),
    ("reinforce", "REINFORCE over the architecture's choices (Adam 0.01, moving-average baseline), real training"),
    ("hyperband", "Hyperband over trial epochs (eta 3), real training"),
    ("bohb", "BOHB: Hyperband with a kernel density model of good architectures, real training"),
):
    register_method(
        Method(
            name=f"nb201_{_algo}",
            description=_description,
            module=TrainModule,
            run=_run,
            defaults=_defaults,
            add_arguments=_arguments,
        )
    )
