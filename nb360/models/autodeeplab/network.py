"""The network of a derived Auto-DeepLab architecture (registered as network ``autodeeplab``).

The reference's retraining network without its DeepLab decoder: the stem (1/2 then 1/4),
then one cell per layer at the path's level, whose two inputs (the previous two layers'
outputs, the stem's two stages for the first layers) are resized bilinearly to that level;
a cell computes only its genotype's operations and concatenates its last
``block_multiplier`` nodes. A per-pixel linear head maps the last cell's output, and the
result is resized to the input resolution (padded to power-of-two sides first, and
cropped back, as the reference does for Darcy Flow).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from nb360.models import register_network
from nb360.models.autodeeplab.architecture import Architecture, pad_to_power_of_two
from nb360.models.autodeeplab.search import level_sizes, resize, stem
from nb360.models.darts.ops import BatchNormSettings, ReLUConvBN, make_op
from nb360.models.heads import DenseHead
from nb360.tasks import TaskSpec

__all__ = ["AutoDeepLabNetwork"]


class DerivedCell(nn.Module):
    def __init__(self, arch: Architecture, block_multiplier: int, c_pp: int, c_p: int, c: int) -> None:
        super().__init__()
        bn = BatchNormSettings()
        self.pre_preprocess = ReLUConvBN(2, c_pp, c, 1, 1, 0, bn)
        self.preprocess = ReLUConvBN(2, c_p, c, 1, 1, 0, bn)
        self.inputs = [index for _, index in arch.cell]
        self.ops = nn.ModuleList(make_op(op, 2, c, 1, bn) for op, _ in arch.cell)
        self.block_multiplier = block_multiplier

    def forward(self, s0: Tensor, s1: Tensor, size: tuple[int, ...]) -> Tensor:
        states = [self.pre_preprocess(resize(s0, size)), self.preprocess(resize(s1, size))]
        for node in range(len(self.ops) // 2):
            states.append(sum(self.ops[e](states[self.inputs[e]]) for e in (2 * node, 2 * node + 1)))
        return torch.cat(states[-self.block_multiplier :], dim=1)


class AutoDeepLabNetwork(nn.Module):
    """``arch`` with ``filter_multiplier`` F (reference retraining: 32), ``block_multiplier`` B (5) and a stem of
    ``stem_channels`` (reference ``initial_fm``: 128; half of it at 1/2)."""

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        arch: Architecture,
        filter_multiplier: int = 32,
        block_multiplier: int = 5,
        stem_channels: int = 128,
        pad_pow2: bool = True,
    ) -> None:
        super().__init__()
        arch.validate()
        if block_multiplier > arch.steps:
            raise ValueError(f"block_multiplier ({block_multiplier}) cannot exceed the cell's {arch.steps} nodes")
        self.arch, self.pad_pow2 = arch, pad_pow2
        self.stem = stem(in_channels, stem_channels // 2, stem_channels)
        channels = [stem_channels // 2, stem_channels]  # outputs of the two states before each layer
        cells = []
        for level in arch.path:
            c = filter_multiplier * 2**level
            cells.append(DerivedCell(arch, block_multiplier, channels[-2], channels[-1], c))
            channels.append(block_multiplier * c)
        self.cells = nn.ModuleList(cells)
        self.head = DenseHead(channels[-1], num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        crop = None
        if self.pad_pow2:
            x, crop = pad_to_power_of_two(x)
        size = tuple(x.shape[2:])
        half = self.stem[1](self.stem[0](x))
        s1 = self.stem[2](half)
        sizes = level_sizes(tuple(s1.shape[2:]), self.arch.levels)
        s0 = half
        for level, cell in zip(self.arch.path, self.cells):
            s0, s1 = s1, cell(s0, s1, sizes[level])
        out = resize(self.head(s1), size)
        return out if crop is None else out[crop]


@register_network("autodeeplab")
def autodeeplab(
    spec: TaskSpec,
    arch: Any,
    filter_multiplier: int = 32,
    block_multiplier: int = 5,
    stem_channels: int = 128,
    pad_pow2: bool = True,
    dropout: float = 0.0,
) -> nn.Module:
    """A derived architecture (an :class:`Architecture`, its dict, or a JSON file path) for a 2-D dense task.
    ``dropout`` is not used by this family."""
    if spec.kind != "dense" or spec.dims != 2:
        raise ValueError(f"the autodeeplab network is for 2-D dense tasks; {spec.name} is a {spec.dims}-D {spec.kind} task")
    if not isinstance(arch, Architecture):
        arch = Architecture.load(arch) if isinstance(arch, str) else Architecture.from_dict(arch)
    return AutoDeepLabNetwork(
        spec.in_channels, spec.num_outputs, arch, filter_multiplier, block_multiplier, stem_channels, pad_pow2
    )
