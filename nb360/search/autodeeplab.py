"""Auto-DeepLab (``--method autodeeplab``): hierarchical search of a cell and of a network path, dense 2-D tasks only.

:class:`AutoDeepLabSearchModule` trains the lattice supernet of
:mod:`nb360.models.autodeeplab.search` in nb360's bilevel loop: SGD with a cosine schedule for
the weights, and from epoch ``warmup_epochs`` on a first-order Adam step on the cell-level
``alphas`` and the network-level ``betas`` together (the reference's ``alpha_epoch``). The
derived architecture is the DARTS-style cell genotype and the Viterbi path over the betas;
it is retrained from scratch as network ``autodeeplab``. The reference settings of NB360's
``autodeeplab/`` (``train_autodeeplab.py``, ``train.py``) are the defaults; see
``configs/methods/autodeeplab.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from nb360.methods import Method, register_method
from nb360.models.autodeeplab.architecture import Architecture, transition_weights
from nb360.models.autodeeplab.draw import draw_architecture
from nb360.models.autodeeplab.search import AutoDeepLabSearchNetwork
from nb360.models.darts.ops import PRIMITIVES
from nb360.models.darts.supernet import node_slices
from nb360.run import RunContext
from nb360.search.bilevel import SearchModule
from nb360.search.pipeline import SearchStages, add_stage_arguments, search_then_evaluate
from nb360.search.train import TrainModule
from nb360.tasks import TaskSpec

__all__ = ["AutoDeepLabSearchModule", "AutoDeepLabEval", "applies_to"]


def applies_to(spec: TaskSpec) -> str | None:
    """Auto-DeepLab's space is a 2-D segmentation lattice: dense 2-D tasks only (Darcy Flow, PSICOV, Cosmic)."""
    if spec.kind != "dense":
        return f"Auto-DeepLab searches dense (per-pixel) models; {spec.name} is a {spec.kind} task (one prediction per input)"
    if spec.dims != 2:
        return f"Auto-DeepLab searches 2-D dense models; {spec.name} has {spec.dims} spatial dimension(s)"
    return None


class AutoDeepLabSearchModule(SearchModule):
    """One-shot search of Auto-DeepLab's cell and network path.

    Args:
        task: a 2-D dense task.
        layers, filter_multiplier, block_multiplier, steps, levels: the lattice (reference 12, 8, 5, 5, 4).
        pad_pow2: pad inputs to power-of-two sides, crop outputs back (the reference pads Darcy to 128 x 128).
        lr, momentum, weight_decay, min_lr, grad_clip: weight SGD with a cosine schedule from lr to min_lr.
        arch_lr, arch_weight_decay, arch_betas: Adam on alphas and betas (first order).
        warmup_epochs: epochs of weight steps only (the reference's ``alpha_epoch``: 20).
    """

    def __init__(
        self,
        task: str = "darcy",
        layers: int = 12,
        filter_multiplier: int = 8,
        block_multiplier: int = 5,
        steps: int = 5,
        levels: int = 4,
        pad_pow2: bool = True,
        lr: float = 0.025,
        momentum: float = 0.9,
        weight_decay: float = 3e-4,
        min_lr: float = 0.001,
        grad_clip: float = 0.0,
        arch_lr: float = 3e-3,
        arch_weight_decay: float = 1e-3,
        arch_betas: tuple[float, float] = (0.9, 0.999),
        warmup_epochs: int = 20,
        metric_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(task, warmup_epochs, grad_clip, False, metric_options)
        self.save_hyperparameters()
        reason = applies_to(self.spec)
        if reason is not None:
            raise ValueError(reason)
        self.net = AutoDeepLabSearchNetwork(
            self.spec.in_channels, self.spec.num_outputs, layers, filter_multiplier, block_multiplier, steps, levels, pad_pow2
        )

    def configure_optimizers(self) -> Any:
        return self.sgd_and_adam()

    def arch_summary(self) -> dict[str, float]:
        summary = {}
        op_weights = torch.softmax(self.net.alphas.detach(), dim=-1)
        for node, edges in enumerate(node_slices(self.net.steps)):
            for j, e in enumerate(range(edges.start, edges.stop)):
                summary.update(
                    {f"arch/cell/node{node}_input{j}/{op}": float(op_weights[e, o]) for o, op in enumerate(PRIMITIVES)}
                )
        moves = transition_weights(self.net.betas.detach())
        for layer in range(self.net.layers):
            for level in self.net.layer_levels(layer - 1):
                for r, move in enumerate(("finer", "same", "coarser")):
                    if 0 <= level - 1 + r < self.net.levels:
                        summary[f"arch/path/layer{layer}_level{level}/{move}"] = float(moves[layer, level, r])
        return summary

    def derive_local(self) -> dict[str, Any]:
        return self.net.architecture().to_dict()


@dataclass
class AutoDeepLabEval:
    """Retraining of the derived architecture (reference ``train.py``: F 32, B 5, initial_fm 128; SGD 0.05, momentum 0.9, wd 1e-4)

    Attributes:
        schedule: learning-rate schedule (the reference's per-iteration poly decay is not among nb360's; cosine to min_lr).
        batch_size: training and evaluation batch size (reference 14).
    """

    filter_multiplier: int = 32
    block_multiplier: int = 5
    stem_channels: int = 128
    pad_pow2: bool = True
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    min_lr: float = 0.0
    grad_clip: float = 0.0
    batch_size: int = 14


def _evaluation(ctx: RunContext, arch: Architecture) -> tuple[pl.LightningModule, pl.LightningDataModule, dict[str, Any]]:
    settings: AutoDeepLabEval = ctx.args.eval
    options = {
        "arch": arch.to_dict(),
        "filter_multiplier": settings.filter_multiplier,
        "block_multiplier": settings.block_multiplier,
        "stem_channels": settings.stem_channels,
        "pad_pow2": settings.pad_pow2,
    }
    module = TrainModule(
        task=ctx.task.name,
        network="autodeeplab",
        network_options=options,
        lr=settings.lr,
        momentum=settings.momentum,
        weight_decay=settings.weight_decay,
        nesterov=False,
        schedule="cosine",
        min_lr=settings.min_lr,
        metric_options=ctx.model.hparams.metric_options,
    )
    datamodule = ctx.make_datamodule(split="final", batch_size=settings.batch_size, eval_batch_size=settings.batch_size)
    return module, datamodule, {"gradient_clip_val": settings.grad_clip or None}


def _save(arch: Architecture, folder: Path) -> None:
    arch.save(folder / "genotype.json")
    draw_architecture(arch, folder / "genotype")


STAGES = SearchStages(
    parse=Architecture.from_dict, load=Architecture.load, save=_save, to_dict=Architecture.to_dict, evaluation=_evaluation
)


def _defaults(spec: TaskSpec) -> dict[str, Any]:
    # reference search and retraining batch sizes (train_autodeeplab.py: 8, train.py: 14) for every task
    return {"data.batch_size": 8, "data.eval_batch_size": 8, "data.split": "search"}


def _arguments(parser: Any) -> None:
    add_stage_arguments(parser, search_epochs=40, eval_epochs=4000)
    parser.add_class_arguments(AutoDeepLabEval, "eval", help="retraining of the derived architecture")


def _run(ctx: RunContext) -> dict[str, Any]:
    return search_then_evaluate(ctx, STAGES)


register_method(
    Method(
        name="autodeeplab",
        description="Auto-DeepLab: DARTS search of a cell and of a network path over four resolutions (2-D dense tasks)",
        module=AutoDeepLabSearchModule,
        run=_run,
        applies_to=applies_to,
        defaults=_defaults,
        add_arguments=_arguments,
    )
)
