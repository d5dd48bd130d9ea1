"""The evaluation network of a DARTS genotype: the searched cells stacked deeper and wider, with drop-path.

Same skeleton as the supernet (stem of ``3 C`` channels; point tasks reduce at 1/3 and
2/3 of the depth, dense tasks never), each cell computing only the operations its
genotype keeps. ``drop_path_prob`` (set per epoch by
:class:`nb360.search.darts.DropPathSchedule`) drops whole samples of each non-identity
operation's output during training.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from nb360.models import register_network
from nb360.models.darts.genotype import Cell, Genotype
from nb360.models.darts.ops import BatchNormSettings, FactorizedReduce, ReLUConvBN, drop_path, make_op, reduction_layers, stem
from nb360.models.heads import build_head
from nb360.tasks import TaskSpec

__all__ = ["DartsNetwork", "REFERENCE_BN"]

REFERENCE_BN = BatchNormSettings(momentum=0.999, eps=0.001)  # the reference evaluation code's BN settings


class EvalCell(nn.Module):
    def __init__(
        self,
        dim: int,
        cell: Cell,
        concat: tuple[int, ...],
        c_pp: int,
        c_p: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
        op_bn: BatchNormSettings,
        preprocess_bn: BatchNormSettings,
        shift: bool,
    ) -> None:
        super().__init__()
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(dim, c_pp, c, op_bn, shift)
        else:
            self.preprocess0 = ReLUConvBN(dim, c_pp, c, 1, 1, 0, preprocess_bn)
        self.preprocess1 = ReLUConvBN(dim, c_p, c, 1, 1, 0, preprocess_bn)
        self.inputs = [index for _, index in cell]
        self.concat = concat
        self.ops = nn.ModuleList(make_op(op, dim, c, 2 if reduction and index < 2 else 1, op_bn, shift) for op, index in cell)

    @property
    def multiplier(self) -> int:
        return len(self.concat)

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for node in range(len(self.ops) // 2):
            total = 0
            for edge in (2 * node, 2 * node + 1):
                h = self.ops[edge](states[self.inputs[edge]])
                if self.training and drop_prob > 0 and not isinstance(self.ops[edge], nn.Identity):
                    h = drop_path(h, drop_prob)
                total = total + h
            states.append(total)
        return torch.cat([states[i] for i in self.concat], dim=1)


class DartsNetwork(nn.Module):
    """Genotype ``genotype`` as a network of ``layers`` cells with ``channels`` initial channels."""

    def __init__(
        self,
        dim: int,
        kind: str,
        in_channels: int,
        num_outputs: int,
        genotype: Genotype,
        channels: int = 36,
        layers: int = 20,
        stem_multiplier: int = 3,
        op_bn: BatchNormSettings = REFERENCE_BN,
        preprocess_bn: BatchNormSettings = REFERENCE_BN,
        shift: bool = True,
    ) -> None:
        super().__init__()
        genotype.validate()
        if kind == "point" and genotype.reduce is None:
            raise ValueError("a point task's network needs a genotype with a reduction cell")
        self.drop_path_prob = 0.0
        c = stem_multiplier * channels
        self.stem = stem(dim, in_channels, c)
        c_pp, c_p, c = c, c, channels
        cells, reduction_prev, reducing = [], False, reduction_layers(kind, layers)
        for i in range(layers):
            reduction = i in reducing
            if reduction:
                c *= 2
            cell, concat = (genotype.reduce, genotype.reduce_concat) if reduction else (genotype.normal, genotype.normal_concat)
            cells.append(EvalCell(dim, cell, concat, c_pp, c_p, c, reduction, reduction_prev, op_bn, preprocess_bn, shift))
            reduction_prev = reduction
            c_pp, c_p = c_p, cells[-1].multiplier * c
        self.cells = nn.ModuleList(cells)
        self.head = build_head(kind, c_p, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
        return self.head(s1)


@register_network("darts")
def darts(spec: TaskSpec, genotype: Any, channels: int = 36, layers: int = 20, dropout: float = 0.0) -> nn.Module:
    """A genotype (a :class:`Genotype`, its dict, or a JSON file path) as the task's evaluation network.

    The reference's BN settings: momentum 0.999 / eps 0.001 everywhere for point and 1-D
    tasks; for dense tasks only in the cell preprocessing. 1-D tasks use the reference's
    unshifted factorized reduction. ``dropout`` is not used by this family (it has drop-path).
    """
    if not isinstance(genotype, Genotype):
        genotype = Genotype.load(genotype) if isinstance(genotype, str) else Genotype.from_dict(genotype)
    op_bn = REFERENCE_BN if spec.kind == "point" else BatchNormSettings()
    return DartsNetwork(
        spec.dims, spec.kind, spec.in_channels, spec.num_outputs, genotype, channels, layers, op_bn=op_bn, shift=spec.dims == 2
    )
