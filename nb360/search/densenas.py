"""DenseNAS (``--method densenas``) and its random-search baseline (``--method densenas_random``).

``densenas`` trains the supernet of :mod:`nb360.models.densenas` with the shared bilevel loop
(:class:`~nb360.search.bilevel.SearchModule`): SGD with a cosine schedule on 80 % of the training
part for the weights, Adam on the other 20 % for the path (beta) and operation (alpha)
parameters from epoch 10 on, whose loss adds the FLOPs sub-objective
``factor * log(E[MACs]) / log(log_base)``. The derived network (Viterbi path, argmax operations)
is retrained from scratch as network ``densenas``.

``densenas_random`` samples networks of the same space uniformly (a random walk along the paths,
a random operation per stacked layer), trains each for ``--search.epochs`` on the search split
through the run's Trainer and retrains the one with the best validation metric.
The reference settings of NB360's DenseNAS (``densenas/{point,dense}``, ``densenas_1d``) are the defaults.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from nb360.errors import UsageError
from nb360.io import write_json
from nb360.methods import Method, register_method
from nb360.metrics import metric_class, metric_lower_is_better
from nb360.models.densenas import Arch, Space, SuperNetwork, default_space
from nb360.models.densenas.draw import draw_arch
from nb360.models.densenas.space import random_choice
from nb360.run import RunContext
from nb360.search.bilevel import SearchModule
from nb360.search.pipeline import SearchStages, add_stage_arguments, record_search, search_then_evaluate
from nb360.search.train import TrainModule
from nb360.search.trials import TrialLog, remove_trial_folders, train_trial
from nb360.tasks import TaskSpec, get_task

__all__ = ["DenseNASSearchModule", "DenseNASEval", "RandomSettings", "STAGES"]


def task_space(spec: TaskSpec, space: dict[str, Any] | None) -> Space:
    return Space.from_dict(space) if space else default_space(spec)


class DenseNASSearchModule(SearchModule):
    """One-shot DenseNAS search.

    Args:
        task: the task; its spec picks 1-D/2-D and point/dense (no reduction, per-position head).
        space: the space as a dict of :class:`~nb360.models.densenas.space.Space` (default: the reference's for the task kind).
        lr, momentum, weight_decay, min_lr, grad_clip: weight SGD, cosine from lr to min_lr, clipping (0: none, as the reference).
        arch_lr, arch_betas, arch_weight_decay: Adam on alpha and beta.
        warmup_epochs: epochs before the first architecture step (reference ``arch_update_epoch``: 10).
        flops_factor, flops_log_base: the FLOPs sub-objective ``factor * log(E[MMACs]) / log(base)`` (0.2, 3500).
        arch_fraction: share of the training part used for the architecture steps (20 %).
    """

    def __init__(
        self,
        task: str = "cifar100",
        space: dict[str, Any] | None = None,
        lr: float = 0.2,
        momentum: float = 0.9,
        weight_decay: float = 4e-5,
        min_lr: float = 1e-4,
        grad_clip: float = 0.0,
        arch_lr: float = 3e-4,
        arch_betas: tuple[float, float] = (0.5, 0.999),
        arch_weight_decay: float = 1e-3,
        warmup_epochs: int = 10,
        flops_factor: float = 0.2,
        flops_log_base: float = 3500.0,
        arch_fraction: float = 0.2,
        metric_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(task, warmup_epochs, grad_clip, False, metric_options)
        self.save_hyperparameters()
        spec = self.spec
        self.arch_fraction = arch_fraction
        self.net = SuperNetwork(
            spec.dims, spec.kind, spec.input_shape[0], spec.num_outputs, task_space(spec, space), spec.input_shape[1:]
        )

    def configure_optimizers(self) -> Any:
        return self.sgd_and_adam()

    def cost_loss(self) -> Tensor:
        h = self.hparams
        return h.flops_factor * torch.log(self.net.expected_macs()) / math.log(h.flops_log_base)

    def arch_step(self, batch: dict[str, dict[str, Tensor]]) -> None:
        weight_opt, arch_opt = self.optimizers()
        arch_opt.zero_grad()
        loss = self.batch_loss(batch["arch"])
        total = loss + self.cost_loss() if self.hparams.flops_factor else loss
        self.manual_backward(total)
        self.step_architecture()
        size = len(batch["arch"]["x"])
        self.log("train/arch_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=size, sync_dist=True)

    def arch_summary(self) -> dict[str, float]:
        summary = {"arch/expected_mmacs": float(self.net.expected_macs().detach())}
        summary.update({f"arch/path_{i}_{j}": float(p.detach()) for (i, j), p in self.net.path_probs().items()})
        return summary

    def derive_local(self) -> dict[str, Any]:
        return self.net.derive().to_dict()


@dataclass
class DenseNASEval:
    """Retraining of the derived network (reference: SGD 0.5 (dense: 0.001), cosine to 1e-5, momentum 0.9, decay 4e-5)."""

    lr: float = 0.5
    momentum: float = 0.9
    weight_decay: float = 4e-5
    min_lr: float = 1e-5
    grad_clip: float = 0.0
    batch_size: int = 256


def _train_module(
    ctx: RunContext,
    arch: Arch,
    lr: float,
    momentum: float,
    weight_decay: float,
    min_lr: float,
    schedule_epochs: int | None = None,
) -> TrainModule:
    return TrainModule(
        task=ctx.task.name,
        network="densenas",
        network_options={"arch": arch.to_dict()},
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        nesterov=False,
        schedule="cosine",
        min_lr=min_lr,
        metric_options=ctx.model.hparams.get("metric_options"),
        schedule_epochs=schedule_epochs,
    )


def _evaluation(ctx: RunContext, arch: Arch) -> tuple[pl.LightningModule, pl.LightningDataModule, dict[str, Any]]:
    e: DenseNASEval = ctx.args.eval
    module = _train_module(ctx, arch, e.lr, e.momentum, e.weight_decay, e.min_lr)
    datamodule = ctx.make_datamodule(split="final", batch_size=e.batch_size, eval_batch_size=e.batch_size)
    return module, datamodule, ({"gradient_clip_val": e.grad_clip} if e.grad_clip > 0 else {})


def _load(path: Path) -> Arch:
    try:
        return Arch.from_dict(json.loads(Path(path).read_text()))
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"cannot read a DenseNAS architecture from {path}: {error}") from None


def _save(arch: Arch, folder: Path) -> None:
    write_json(folder / "genotype.json", arch.to_dict())
    draw_arch(arch, folder / "genotype")


STAGES = SearchStages(parse=Arch.from_dict, load=_load, save=_save, to_dict=Arch.to_dict, evaluation=_evaluation)

# reference batch sizes (search / retrain YAMLs); tasks not named use 64 (point) or 2 (dense) for the search
SEARCH_BATCH = {"ecg": 32, "deepsea": 32, "satellite": 1024}
EVAL_BATCH = {
    "cifar100": 256,
    "spherical": 256,
    "ninapro": 256,
    "fsd50k": 512,
    "darcy": 8,
    "psicov": 8,
    "cosmic": 16,
    "ecg": 128,
    "deepsea": 128,
    "satellite": 4096,
}


def _defaults(spec: TaskSpec) -> dict[str, Any]:
    search = SEARCH_BATCH.get(spec.name, 2 if spec.kind == "dense" else 64)
    return {
        "data.batch_size": search,
        "data.eval_batch_size": search,
        "data.split": "search",
        "eval.batch_size": EVAL_BATCH.get(spec.name, spec.reference.batch_size),
        "eval.lr": 0.001 if spec.kind == "dense" else 0.5,
    }


def _arguments(parser: Any) -> None:
    add_stage_arguments(parser, search_epochs=70, eval_epochs=240)
    parser.add_class_arguments(DenseNASEval, "eval", help="retraining of the derived network")


def _run(ctx: RunContext) -> dict[str, Any]:
    return search_then_evaluate(ctx, STAGES)


# ---------------------------------------------------------------- random search
@dataclass
class RandomSettings:
    """The random search.

    Attributes:
        trials: networks sampled and trained.
        epochs: epochs of each trial (reference: 10).
        seconds: stop sampling once this much training time is spent (the reference matches DenseNAS' search time).
        max_mmacs: resample networks above this many million MACs per sample (a soft cap on the size).
        space: the space as a dict of ``Space`` (default: the reference's for the task kind).
    """

    trials: int = 20
    epochs: int = 10
    seconds: float | None = None
    max_mmacs: float | None = None
    space: dict[str, Any] | None = None


def _sample(space: Space, spec: TaskSpec, generator: torch.Generator, max_mmacs: float | None) -> Arch:
    stride = 1 if spec.kind == "dense" else 2
    for _ in range(1000):
        arch = Arch.from_choice(space, *random_choice(space, generator))
        if (
            max_mmacs is None
            or arch.macs(spec.dims, spec.input_shape[0], spec.input_shape[1:], stride, spec.num_outputs) <= max_mmacs
        ):
            return arch
    raise UsageError(f"--search.max_mmacs {max_mmacs}: no sampled network of the space is that small")


def _random_search(ctx: RunContext, stages: SearchStages) -> tuple[Arch, dict[str, Any]]:
    settings: RandomSettings = ctx.args.search
    if settings.trials < 1 or settings.epochs < 1:
        raise UsageError("--search.trials and --search.epochs must be at least 1")
    log = TrialLog(ctx)
    spec = get_task(ctx.task.name)
    space = task_space(spec, settings.space)
    generator = torch.Generator().manual_seed(ctx.seed)
    lower = metric_lower_is_better(metric_class(ctx.task.metric))
    h = ctx.model.hparams
    best: tuple[float, Arch] | None = None
    wall = sum(r["wall_s"] for r in log.done)
    for number in range(settings.trials):
        if settings.seconds is not None and wall >= settings.seconds:
            break
        arch = _sample(space, spec, generator, settings.max_mmacs)
        record = log.replay(number, arch=arch.to_dict())
        if record is not None:
            score = record["score"]
        else:
            start = time.perf_counter()
            module = _train_module(ctx, arch, h.lr, h.momentum, h.weight_decay, h.min_lr, schedule_epochs=settings.epochs)
            score = train_trial(ctx, module, number, settings.epochs)
            seconds = time.perf_counter() - start
            wall += seconds
            log.append({"trial": number, "arch": arch.to_dict(), "score": score, "wall_s": round(seconds, 3)})
            print(f"trial {number}: val {ctx.model.metric_name} = {score:.6g} ({seconds:.1f} s)", flush=True)
        if not math.isnan(score) and (best is None or (score < best[0] if lower else score > best[0])):
            best = (score, arch)
    if best is None:
        raise UsageError("the random search produced no finite validation score")
    remove_trial_folders(ctx)
    extra = {"trials": len(log), "trial_epochs": settings.epochs}
    return best[1], record_search(ctx, stages, best[1], float(best[0]), wall, extra)


def _random_defaults(spec: TaskSpec) -> dict[str, Any]:
    template = default_space(spec)
    arch = Arch(template.chs[0], [], template.last_dim)  # a template: every trial builds its own network
    dense = spec.kind == "dense"
    return {
        **_defaults(spec),
        "model.network": "densenas",
        "model.network_options": {"arch": arch.to_dict()},
        "model.lr": 0.001 if dense else 0.5,
        "model.momentum": 0.9,
        "model.weight_decay": 4e-5,
        "model.nesterov": False,
        "model.schedule": "cosine",
        "model.min_lr": 1e-5,
    }


def _random_arguments(parser: Any) -> None:
    add_stage_arguments(parser, search_epochs=0, eval_epochs=240)  # --search_epochs is unused: --search.* sets the budget
    parser.add_class_arguments(
        RandomSettings, "search", help="the random search: trials, epochs per trial, time budget, size cap"
    )
    parser.add_class_arguments(DenseNASEval, "eval", help="retraining of the best network")


def _random_run(ctx: RunContext) -> dict[str, Any]:
    return search_then_evaluate(ctx, STAGES, search=_random_search)


register_method(
    Method(
        name="densenas",
        description="DenseNAS: ResNet-based routing blocks, densely connected paths, FLOPs-aware bilevel search",
        module=DenseNASSearchModule,
        run=_run,
        defaults=_defaults,
        add_arguments=_arguments,
    )
)
register_method(
    Method(
        name="densenas_random",
        description="random search in the DenseNAS space: sampled networks trained for 10 epochs each, the best retrained",
        module=TrainModule,
        run=_random_run,
        defaults=_random_defaults,
        add_arguments=_random_arguments,
    )
)
