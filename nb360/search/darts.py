"""DARTS-space search: GAEA PC-DARTS (``--method gaea``), DARTS first order (``darts``) and second order (``darts2``).

One LightningModule, :class:`DartsSearchModule`, covers the three: the supernet of
:mod:`nb360.models.darts.supernet`, SGD with a cosine schedule for the weights, and for
the architecture either GAEA's exponentiated-gradient update or DARTS' Adam, with a
first-order or an unrolled second-order gradient. The method configs
(``configs/methods/{gaea,darts,darts2}.yaml``) choose; the reference settings of NB360's
GAEA (``darts/gaea*/search``, ``eval``) are this module's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor

from nb360.methods import Method, register_method
from nb360.models.darts.draw import draw_genotype
from nb360.models.darts.genotype import Genotype
from nb360.models.darts.ops import PRIMITIVES
from nb360.models.darts.supernet import SearchNetwork, node_slices
from nb360.run import RunContext
from nb360.search.bilevel import SearchModule
from nb360.search.pipeline import SearchStages, add_stage_arguments, search_then_evaluate
from nb360.search.train import TrainModule, build_scheduler
from nb360.tasks import TaskSpec

__all__ = ["ExponentiatedGradient", "DartsSearchModule", "DartsEval", "DropPathSchedule"]


class ExponentiatedGradient(torch.optim.Optimizer):
    """GAEA's architecture update: ``p <- p * exp(-lr * grad)``, then each row (last axis) rescaled to sum to 1."""

    def __init__(self, params: Any, lr: float) -> None:
        if lr < 0:
            raise ValueError(f"invalid learning rate {lr}")
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.mul_(torch.exp(-group["lr"] * p.grad))
                    p.div_(p.sum(dim=-1, keepdim=True))
        return loss


class DartsSearchModule(SearchModule):
    """One-shot search in the DARTS cell space.

    Args:
        task: the task; its spec picks 1-D/2-D and point/dense (no reduction cells, per-position head).
        channels, layers, steps, multiplier: supernet size (reference: 16 channels, 8 cells, 4 nodes, 4).
        partial_channels: PC-DARTS' k (1/k of the channels through the candidates; 1 = DARTS).
        edge_normalization: weight a node's input edges by softmax(beta) (PC-DARTS).
        lr, momentum, weight_decay, min_lr, grad_clip: weight SGD, cosine from lr to min_lr, clipping.
        arch_optimizer: ``eg`` (GAEA's exponentiated gradient) or ``adam`` (DARTS).
        arch_lr, arch_weight_decay, arch_betas: architecture learning rate; Adam's decay and betas.
        order: 1 (first-order architecture gradient) or 2 (DARTS' unrolled gradient).
        warmup_epochs: epochs without architecture steps (GAEA reference: 11, i.e. ``epoch_idx > 10``).
        arch_first: architecture step before the weight step (DARTS) or after it (GAEA).
        unroll_eps: DARTS' finite-difference step, ``eps = unroll_eps / ||grad||``.
    """

    def __init__(
        self,
        task: str = "cifar100",
        channels: int = 16,
        layers: int = 8,
        steps: int = 4,
        multiplier: int = 4,
        partial_channels: int = 4,
        edge_normalization: bool = True,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 3e-4,
        min_lr: float = 0.0,
        grad_clip: float = 5.0,
        arch_optimizer: Literal["eg", "adam"] = "eg",
        arch_lr: float = 0.1,
        arch_weight_decay: float = 0.0,
        arch_betas: tuple[float, float] = (0.5, 0.999),
        order: Literal[1, 2] = 1,
        warmup_epochs: int = 11,
        arch_first: bool = False,
        unroll_eps: float = 0.01,
        metric_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(task, warmup_epochs, grad_clip, arch_first, metric_options)
        self.save_hyperparameters()
        spec = self.spec
        self.net = SearchNetwork(
            spec.dims, spec.kind, spec.in_channels, spec.num_outputs, channels, layers, steps, multiplier,
            k=partial_channels, edge_normalization=edge_normalization, shift=spec.dims == 2,
        )  # fmt: skip

    def configure_optimizers(self) -> Any:
        h = self.hparams
        weights = torch.optim.SGD(self.net.weight_parameters(), lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay)
        arch_params = self.net.arch_parameters()
        if h.arch_optimizer == "eg":
            arch: torch.optim.Optimizer = ExponentiatedGradient(arch_params, lr=h.arch_lr)
        else:
            arch = torch.optim.Adam(arch_params, lr=h.arch_lr, betas=tuple(h.arch_betas), weight_decay=h.arch_weight_decay)
        return [weights, arch], [build_scheduler(weights, "cosine", self.trainer.max_epochs, h.min_lr)]

    def arch_step(self, batch: dict[str, dict[str, Tensor]]) -> None:
        if self.hparams.order == 1:
            super().arch_step(batch)
        else:
            self.unrolled_arch_step(batch)

    def arch_summary(self) -> dict[str, float]:
        summary = {}
        for cell in self.net.cell_kinds:
            op_weights, edge_weights = self.net.cell_weights(cell)
            for node, edges in enumerate(node_slices(self.net.steps)):
                for j, e in enumerate(range(edges.start, edges.stop)):
                    key = f"arch/{cell}/node{node}_input{j}"
                    summary[f"{key}/edge"] = float(edge_weights[e])
                    summary.update({f"{key}/{op}": float(op_weights[e, o]) for o, op in enumerate(PRIMITIVES)})
        return summary

    def derive_local(self) -> dict[str, Any]:
        return self.net.genotype().to_dict()


@dataclass
class DartsEval:
    """Retraining of the derived cell (reference GAEA eval: 36 channels, 20 cells, SGD 0.025, cosine, drop-path 0.3).

    Attributes:
        batch_size: training and evaluation batch size (default: the task's reference eval batch).
        grad_clip: L2 norm the gradients are clipped to.
        drop_path: final drop-path probability, ramped linearly from 0 over the epochs.
    """

    channels: int = 36
    layers: int = 20
    lr: float = 0.025
    momentum: float = 0.9
    weight_decay: float = 3e-4
    min_lr: float = 0.0
    grad_clip: float = 5.0
    drop_path: float = 0.3
    batch_size: int = 128


class DropPathSchedule(pl.Callback):
    """Sets the network's drop-path probability to ``max_prob * epoch / epochs`` at every epoch start (the reference ramp)."""

    def __init__(self, max_prob: float) -> None:
        self.max_prob = max_prob

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.net.drop_path_prob = self.max_prob * trainer.current_epoch / max(trainer.max_epochs or 1, 1)


def _evaluation(ctx: RunContext, genotype: Genotype) -> tuple[pl.LightningModule, pl.LightningDataModule, dict[str, Any]]:
    settings: DartsEval = ctx.args.eval
    module = TrainModule(
        task=ctx.task.name,
        network="darts",
        network_options={"genotype": genotype.to_dict(), "channels": settings.channels, "layers": settings.layers},
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        nesterov=False,
        schedule="cosine",
        min_lr=settings.min_lr,
        metric_options=ctx.model.hparams.metric_options,
    )
    datamodule = ctx.make_datamodule(split="final", batch_size=settings.batch_size, eval_batch_size=settings.batch_size)
    return module, datamodule, {"gradient_clip_val": settings.grad_clip, "callbacks": [DropPathSchedule(settings.drop_path)]}


def _save(genotype: Genotype, folder: Path) -> None:
    genotype.save(folder / "genotype.json")
    draw_genotype(genotype, folder / "genotype")


STAGES = SearchStages(
    parse=Genotype.from_dict, load=Genotype.load, save=_save, to_dict=Genotype.to_dict, evaluation=_evaluation
)

# search and eval batch sizes of the reference (GAEA search and eval YAMLs per task)
SEARCH_BATCH = {"cifar100": 256, "spherical": 64, "ninapro": 256, "fsd50k": 32, "darcy": 4, "psicov": 8, "cosmic": 8, "ecg": 128, "deepsea": 128, "satellite": 4096}
EVAL_BATCH = {"cifar100": 128, "spherical": 64, "ninapro": 128, "fsd50k": 32, "darcy": 4, "psicov": 4, "cosmic": 4, "ecg": 180, "deepsea": 64, "satellite": 1024}
EVAL_CHANNELS = {"fsd50k": 16}


def _defaults(spec: TaskSpec, search_batch_divisor: int = 1) -> dict[str, Any]:
    search = SEARCH_BATCH.get(spec.name, spec.reference.batch_size)
    defaults = {
        "data.batch_size": max(1, search // search_batch_divisor),
        "data.eval_batch_size": max(1, search // search_batch_divisor),
        "data.split": "search",
        "eval.batch_size": EVAL_BATCH.get(spec.name, spec.reference.batch_size),
    }
    if spec.name in EVAL_CHANNELS:
        defaults["eval.channels"] = EVAL_CHANNELS[spec.name]
    return defaults


def _arguments(parser: Any) -> None:
    add_stage_arguments(parser, search_epochs=50, eval_epochs=150)
    parser.add_class_arguments(DartsEval, "eval", help="retraining of the derived architecture")


def _run(ctx: RunContext) -> dict[str, Any]:
    return search_then_evaluate(ctx, STAGES)


for _name, _description, _divisor in (
    ("gaea", "GAEA PC-DARTS: partial channels, edge normalisation, exponentiated-gradient architecture updates", 1),
    ("darts", "DARTS, first order: plain mixed operations, Adam architecture updates", 4),
    ("darts2", "DARTS, second order: the unrolled architecture gradient", 4),
):
    register_method(
        Method(
            name=_name,
            description=_description,
            module=DartsSearchModule,
            run=_run,
            defaults=lambda spec, d=_divisor: _defaults(spec, d),
            add_arguments=_arguments,
        )
    )
