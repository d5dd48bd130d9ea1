"""The Auto-DeepLab supernet: a lattice of ``layers`` x ``levels`` cells searched at both levels.

Cell level: every cell shares one ``alphas`` (edges x operations); each edge is a DARTS
mixed operation (:class:`nb360.models.darts.supernet.MixedOp`, all channels). Network
level: the cell at layer ``l``, level ``L`` is run once per incoming move (from levels
``L - 1``, ``L``, ``L + 1`` of layer ``l - 1``, resized bilinearly to its resolution) and
the results are summed with the move weights of :func:`transition_weights`, as in the
reference. Its second input is the same level's output two layers back (the stem for level 0
at layer 1), absent where that does not exist. Each level of the last layer goes through
its own 1x1 head; the heads' outputs, resized to the input resolution, are summed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nb360.models.autodeeplab.architecture import Architecture, decode_cell, decode_path, pad_to_power_of_two, transition_weights
from nb360.models.darts.ops import PRIMITIVES, ReLUConvBN
from nb360.models.darts.supernet import SEARCH_BN, MixedOp, edge_count, node_slices

__all__ = ["AutoDeepLabSearchNetwork", "stem", "resize", "level_sizes"]


def stem(in_channels: int, half: int, full: int) -> nn.ModuleList:
    """The reference stem: 3x3 stride 2 to ``half`` channels, 3x3 at 1/2, 3x3 stride 2 to ``full`` (1/4), each with BN, ReLU."""

    def block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

    return nn.ModuleList([block(in_channels, half, 2), block(half, half, 1), block(half, full, 2)])


def resize(x: Tensor, size: tuple[int, ...]) -> Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def level_sizes(stem_size: tuple[int, ...], levels: int) -> list[tuple[int, ...]]:
    """Spatial size of each level: the stem's (1/4) for level 0, then halved rounding up."""
    sizes = [tuple(stem_size)]
    for _ in range(1, levels):
        sizes.append(tuple(-(-s // 2) for s in sizes[-1]))
    return sizes


class SearchCell(nn.Module):
    """One lattice cell: ``steps`` nodes of mixed operations; output: the last ``block_multiplier`` nodes concatenated."""

    def __init__(self, steps: int, block_multiplier: int, c: int, c_prev_prev: int | None, sources: dict[int, int]) -> None:
        super().__init__()
        self.steps, self.block_multiplier = steps, block_multiplier
        self.pre_preprocess = None if c_prev_prev is None else ReLUConvBN(2, c_prev_prev, c, 1, 1, 0, SEARCH_BN)
        self.preprocess = nn.ModuleDict({str(s): ReLUConvBN(2, c_s, c, 1, 1, 0, SEARCH_BN) for s, c_s in sources.items()})
        self.edges = nn.ModuleList(
            None if c_prev_prev is None and j == 0 else MixedOp(2, c, 1, k=1, shift=True)
            for i in range(steps)
            for j in range(2 + i)
        )

    def forward(
        self, s0: Tensor | None, inputs: dict[int, Tensor], size: tuple[int, ...], op_weights: Tensor
    ) -> dict[int, Tensor]:
        if s0 is not None and self.pre_preprocess is not None:
            s0 = self.pre_preprocess(resize(s0, size))
        else:
            s0 = None
        outputs = {}
        for source, x in inputs.items():
            states: list[Tensor | None] = [s0, self.preprocess[str(source)](resize(x, size))]
            for edges in node_slices(self.steps):
                terms = [self.edges[e](h, op_weights[e]) for e, h in zip(range(edges.start, edges.stop), states) if h is not None]
                states.append(sum(terms))
            outputs[source] = torch.cat(states[-self.block_multiplier :], dim=1)
        return outputs


class AutoDeepLabSearchNetwork(nn.Module):
    """Cell-level ``alphas`` and network-level ``betas`` over a ``layers`` x ``levels`` lattice (2-D dense tasks).

    Args:
        filter_multiplier: F; a level-``L`` cell has ``F * 2**L`` channels per node (reference search: 8).
        block_multiplier: B, nodes concatenated into a cell's output (``B * F * 2**L`` channels; reference 5).
        steps: nodes per cell (reference 5); layers: lattice depth (12); levels: spatial levels (4: 1/4 .. 1/32).
        pad_pow2: pad the input to power-of-two sides and crop the output back (the reference's Darcy padding).
    """

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        layers: int = 12,
        filter_multiplier: int = 8,
        block_multiplier: int = 5,
        steps: int = 5,
        levels: int = 4,
        pad_pow2: bool = True,
    ) -> None:
        super().__init__()
        if block_multiplier > steps:
            raise ValueError(f"block_multiplier ({block_multiplier}) cannot exceed the number of nodes ({steps})")
        f, b = filter_multiplier, block_multiplier
        self.layers, self.levels, self.steps, self.pad_pow2 = layers, levels, steps, pad_pow2
        self.stem = stem(in_channels, (f // 2) * b, f * b)
        self.cells = nn.ModuleDict()
        for layer in range(layers):
            for level in self.layer_levels(layer):
                sources = {s: b * f * 2**s for s in (level - 1, level, level + 1) if s in self.layer_levels(layer - 1)}
                has_s0 = level in self.layer_levels(layer - 2) if layer >= 1 else False
                c_pp = b * f * 2**level if has_s0 else None
                self.cells[f"{layer}_{level}"] = SearchCell(steps, b, f * 2**level, c_pp, sources)
        self.heads = nn.ModuleList(nn.Conv2d(b * f * 2**level, num_outputs, 1) for level in self.layer_levels(layers - 1))
        self.alphas = nn.Parameter(1e-3 * torch.randn(edge_count(steps), len(PRIMITIVES)))
        self.betas = nn.Parameter(1e-3 * torch.randn(layers, levels, 3))

    def layer_levels(self, layer: int) -> list[int]:
        """Levels present at ``layer`` (``-1``: the stem, level 0 only; ``layer``: up to ``layer + 1``)."""
        if layer < -1:
            return []
        return list(range(min(layer + 2, self.levels)))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas, self.betas]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def forward(self, x: Tensor) -> Tensor:
        crop = None
        if self.pad_pow2:
            x, crop = pad_to_power_of_two(x)
        size = tuple(x.shape[2:])
        h = self.stem[2](self.stem[1](self.stem[0](x)))
        sizes = level_sizes(tuple(h.shape[2:]), self.levels)
        op_weights = F.softmax(self.alphas, dim=-1)
        moves = transition_weights(self.betas)
        previous, current = {}, {0: h}  # outputs of layers l - 2 and l - 1
        for layer in range(self.layers):
            new = {}
            for level in self.layer_levels(layer):
                cell = self.cells[f"{layer}_{level}"]
                inputs = {s: current[s] for s in (level - 1, level, level + 1) if s in current}
                outputs = cell(previous.get(level) if layer >= 1 else None, inputs, sizes[level], op_weights)
                new[level] = sum(moves[layer, s, level - s + 1] * out for s, out in outputs.items())
            previous, current = current, new
        out = sum(resize(head(current[level]), size) for level, head in enumerate(self.heads))
        return out if crop is None else out[crop]

    def architecture(self) -> Architecture:
        return Architecture(decode_cell(self.alphas, self.steps), decode_path(self.betas), self.levels)
