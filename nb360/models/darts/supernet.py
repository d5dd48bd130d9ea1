"""The DARTS supernet with PC-DARTS partial channels and edge normalisation, for 1-D/2-D, point/dense tasks.

Each of the 14 edges of a cell (4 nodes x their 2..5 inputs) is a mixed operation:
the softmax of its row of ``alpha`` weights the 8 candidate operations. With partial
channels ``k > 1`` (PC-DARTS) only the first ``1/k`` of the channels go through the
candidates, the rest bypass them (max-pooled in a reduction cell) and the result is
channel-shuffled. With edge normalisation the edges into a node are also weighted by
the softmax of their ``beta`` values. Point tasks stack normal cells with reduction
cells at 1/3 and 2/3 of the depth (doubling the channels) and end in global pooling and
a linear layer; dense tasks use normal cells only and a per-position linear head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nb360.models.darts.genotype import Genotype
from nb360.models.darts.ops import PRIMITIVES, BatchNormSettings, FactorizedReduce, ReLUConvBN, make_op, reduction_layers, stem
from nb360.models.heads import build_head
from nb360.models.ops import max_pool

__all__ = ["SearchNetwork", "MixedOp", "channel_shuffle", "edge_count", "node_slices", "derive_cell"]

SEARCH_BN = BatchNormSettings(affine=False)


def edge_count(steps: int) -> int:
    return sum(2 + i for i in range(steps))


def node_slices(steps: int) -> list[slice]:
    """The edges into each node: node ``i`` has inputs ``0 .. i + 1``, stored consecutively."""
    slices, start = [], 0
    for i in range(steps):
        slices.append(slice(start, start + 2 + i))
        start += 2 + i
    return slices


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    b, c = x.shape[:2]
    return x.reshape(b, groups, c // groups, *x.shape[2:]).transpose(1, 2).reshape(x.shape)


class MixedOp(nn.Module):
    """All candidate operations on one edge, weighted; with ``k > 1`` on the first ``1/k`` of the channels only."""

    def __init__(self, dim: int, channels: int, stride: int, k: int, shift: bool) -> None:
        super().__init__()
        if channels % k:
            raise ValueError(f"partial channels: {channels} channels are not divisible by k={k}")
        self.k = k
        active = channels // k
        ops = []
        for name in PRIMITIVES:
            op = make_op(name, dim, active, stride, SEARCH_BN, shift)
            if "pool" in name:
                op = nn.Sequential(op, SEARCH_BN.make(dim, active))
            ops.append(op)
        self.ops = nn.ModuleList(ops)
        self.bypass_pool = max_pool(dim, 2, 2) if stride == 2 else None
        if self.bypass_pool is not None:
            self.bypass_pool.ceil_mode = True

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        if self.k == 1:
            return sum(w * op(x) for w, op in zip(weights, self.ops))
        active = x.shape[1] // self.k
        mixed = sum(w * op(x[:, :active]) for w, op in zip(weights, self.ops))
        rest = x[:, active:]
        if self.bypass_pool is not None:
            rest = self.bypass_pool(rest)
        return channel_shuffle(torch.cat([mixed, rest], dim=1), self.k)


class SearchCell(nn.Module):
    def __init__(self, dim: int, steps: int, multiplier: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool, k: int, shift: bool) -> None:
        super().__init__()
        self.reduction, self.steps, self.multiplier = reduction, steps, multiplier
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(dim, c_pp, c, SEARCH_BN, shift)
        else:
            self.preprocess0 = ReLUConvBN(dim, c_pp, c, 1, 1, 0, SEARCH_BN)
        self.preprocess1 = ReLUConvBN(dim, c_p, c, 1, 1, 0, SEARCH_BN)
        self.edges = nn.ModuleList(
            MixedOp(dim, c, 2 if reduction and j < 2 else 1, k, shift) for i in range(steps) for j in range(2 + i)
        )

    def forward(self, s0: Tensor, s1: Tensor, op_weights: Tensor, edge_weights: Tensor) -> Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for edges in node_slices(self.steps):
            indices = range(edges.start, edges.stop)
            states.append(sum(edge_weights[e] * self.edges[e](h, op_weights[e]) for e, h in zip(indices, states)))
        return torch.cat(states[-self.multiplier :], dim=1)


def derive_cell(op_weights: Tensor, edge_weights: Tensor, steps: int) -> tuple[tuple[str, int], ...]:
    """The PC-DARTS rule: per node, the two inputs with the strongest non-``none`` operation
    (operation weight times edge weight), each with its strongest non-``none`` operation."""
    weights = (op_weights * edge_weights[:, None]).detach().cpu().double()
    weights[:, PRIMITIVES.index("none")] = -1.0
    cell = []
    for edges in node_slices(steps):
        block = weights[edges]
        strength = block.max(dim=1).values.tolist()
        chosen = sorted(range(len(strength)), key=lambda j: -strength[j])[:2]
        cell.extend((PRIMITIVES[int(block[j].argmax())], j) for j in chosen)
    return tuple(cell)


class SearchNetwork(nn.Module):
    """The one-shot supernet; ``arch_parameters()`` are its alphas and betas, ``weight_parameters()`` the rest.

    Args:
        dim: 1 or 2 spatial axes; kind: ``point`` or ``dense``.
        channels: C of the first cells (the stem has ``stem_multiplier * C``); layers: number of cells.
        steps: intermediate nodes per cell; multiplier: how many of the last states a cell concatenates.
        k: partial-channel factor (1 = plain DARTS); edge_normalization: weight edges by softmax(beta).
        shift: the factorized reduction's shifted second half (False in the reference's 1-D space).
    """

    def __init__(
        self,
        dim: int,
        kind: str,
        in_channels: int,
        num_outputs: int,
        channels: int = 16,
        layers: int = 8,
        steps: int = 4,
        multiplier: int = 4,
        stem_multiplier: int = 3,
        k: int = 4,
        edge_normalization: bool = True,
        shift: bool = True,
    ) -> None:
        super().__init__()
        self.steps, self.multiplier, self.edge_normalization = steps, multiplier, edge_normalization
        self.has_reduction = kind == "point"
        c = stem_multiplier * channels
        self.stem = stem(dim, in_channels, c)
        c_pp, c_p, c = c, c, channels
        cells, reduction_prev, reducing = [], False, reduction_layers(kind, layers)
        for i in range(layers):
            reduction = i in reducing
            if reduction:
                c *= 2
            cells.append(SearchCell(dim, steps, multiplier, c_pp, c_p, c, reduction, reduction_prev, k, shift))
            reduction_prev = reduction
            c_pp, c_p = c_p, multiplier * c
        self.cells = nn.ModuleList(cells)
        self.head = build_head(kind, c_p, num_outputs)
        n_edges, n_ops = edge_count(steps), len(PRIMITIVES)
        for cell in self.cell_kinds:  # all ones, as in the reference
            setattr(self, f"alphas_{cell}", nn.Parameter(torch.ones(n_edges, n_ops)))
            if edge_normalization:
                setattr(self, f"betas_{cell}", nn.Parameter(torch.ones(n_edges)))

    @property
    def cell_kinds(self) -> tuple[str, ...]:
        return ("normal", "reduce") if self.has_reduction else ("normal",)

    def arch_parameters(self) -> list[nn.Parameter]:
        kinds = ("alphas", "betas") if self.edge_normalization else ("alphas",)
        return [getattr(self, f"{kind}_{cell}") for cell in self.cell_kinds for kind in kinds]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def cell_weights(self, cell: str) -> tuple[Tensor, Tensor]:
        """(operation weights (edges, ops), edge weights (edges,)) of the ``normal`` or ``reduce`` cell."""
        op_weights = F.softmax(getattr(self, f"alphas_{cell}"), dim=-1)
        if not self.edge_normalization:
            return op_weights, op_weights.new_ones(op_weights.shape[0])
        betas = getattr(self, f"betas_{cell}")
        return op_weights, torch.cat([F.softmax(betas[s], dim=-1) for s in node_slices(self.steps)])

    def forward(self, x: Tensor) -> Tensor:
        weights = {cell: self.cell_weights(cell) for cell in self.cell_kinds}
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, *weights["reduce" if cell.reduction else "normal"])
        return self.head(s1)

    def genotype(self) -> Genotype:
        concat = tuple(range(2 + self.steps - self.multiplier, self.steps + 2))
        normal = derive_cell(*self.cell_weights("normal"), self.steps)
        if not self.has_reduction:
            return Genotype(normal, concat)
        return Genotype(normal, concat, derive_cell(*self.cell_weights("reduce"), self.steps), concat)
