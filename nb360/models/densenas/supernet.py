"""The DenseNAS supernet: every candidate path and operation of a :class:`~nb360.models.densenas.space.Space` at once."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nb360.models.densenas.space import (
    STACK_PRIMITIVES,
    Arch,
    BasicBlock,
    Head,
    Space,
    basic_block_macs,
    init_weights,
    projection,
    spatial_sizes,
    stem,
    viterbi_path,
)

__all__ = ["MixedLayer", "SuperNetwork"]


class MixedLayer(nn.Module):
    """A stacked layer: ``softmax(alpha)``-weighted sum of a basic block and the identity."""

    def __init__(self, dim: int, channels: int) -> None:
        super().__init__()
        self.block = BasicBlock(dim, channels, channels)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        return weights[0] * self.block(x) + weights[1] * x


class SuperNetwork(nn.Module):
    """Stem, the routing blocks with a head layer per incoming path and mixed stacked layers, the final 1x1 block, the head.

    Architecture parameters: ``betas[i]`` (one per path leaving block ``i``) and ``stack_alpha(j)``
    (stacked layers of block ``j`` x operations). The expected cost (:meth:`expected_macs`) is the
    MACs of a random network drawn from these distributions: a walk along the paths and an
    operation per layer.
    """

    def __init__(
        self, dim: int, kind: str, in_channels: int, num_outputs: int, space: Space, input_size: tuple[int, ...]
    ) -> None:
        super().__init__()
        space.check_connected()
        self.space, self.dim, self.kind = space, dim, kind
        self.stem_stride = 1 if kind == "dense" else 2
        if kind == "dense" and any(space.levels):
            raise ValueError("a dense task's DenseNAS space keeps the resolution: every level must be 0")
        self.stem = stem(dim, in_channels, space.chs[0], self.stem_stride)
        last = space.num_blocks - 1
        self.heads = nn.ModuleDict()
        self.stacks = nn.ModuleList()
        for j in range(1, space.num_blocks):
            for i in space.inputs(j):
                head = (
                    projection(dim, space.width(i), space.last_dim)
                    if j == last
                    else BasicBlock(dim, space.width(i), space.width(j), space.stride(i, j))
                )
                self.heads[f"{i}_{j}"] = head
            layers = space.layers[j] if j < last else 0
            self.stacks.append(nn.ModuleList(MixedLayer(dim, space.width(j)) for _ in range(layers)))
        self.head = Head(kind, space.last_dim, num_outputs)
        self.betas = nn.ParameterList(nn.Parameter(1e-3 * torch.randn(len(space.outputs(i)))) for i in range(last))
        # alphas only for blocks with stacked layers (an empty parameter would be unused, which DDP refuses)
        self.alpha_index = {j: k for k, j in enumerate(j for j in range(1, space.num_blocks) if len(self.stacks[j - 1]))}
        self.alphas = nn.ParameterList(
            nn.Parameter(1e-3 * torch.randn(len(self.stacks[j - 1]), len(STACK_PRIMITIVES))) for j in self.alpha_index
        )
        init_weights(self)
        self._set_costs(in_channels, input_size)

    # ----------------------------------------------------------------- parameters
    def arch_parameters(self) -> list[nn.Parameter]:
        return [*self.betas, *self.alphas]

    def weight_parameters(self) -> list[nn.Parameter]:
        ids = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def stack_alpha(self, j: int) -> nn.Parameter | None:
        """The operation parameters of block ``j``'s stacked layers (None without layers)."""
        return self.alphas[self.alpha_index[j]] if j in self.alpha_index else None

    def path_probs(self) -> dict[tuple[int, int], Tensor]:
        probs = {}
        for i, beta in enumerate(self.betas):
            for j, p in zip(self.space.outputs(i), F.softmax(beta, dim=-1)):
                probs[i, j] = p
        return probs

    # ----------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        probs = self.path_probs()
        outputs = [self.stem(x)]
        for j in range(1, self.space.num_blocks):
            h = sum(probs[i, j] * self.heads[f"{i}_{j}"](outputs[i]) for i in self.space.inputs(j))
            if j in self.alpha_index:
                for layer, w in zip(self.stacks[j - 1], F.softmax(self.stack_alpha(j), dim=-1)):
                    h = layer(h, w)
            outputs.append(h)
        return self.head(outputs[-1])

    # ----------------------------------------------------------------- cost
    def _set_costs(self, in_channels: int, input_size: tuple[int, ...]) -> None:
        space, dim = self.space, self.dim
        sizes = spatial_sizes(input_size, self.stem_stride, max(space.levels))
        last = space.num_blocks - 1
        self.stem_macs = 3**dim * in_channels * space.chs[0] * sizes[0] / 1e6
        self.head_macs: dict[tuple[int, int], float] = {}
        for j in range(1, space.num_blocks):
            for i in space.inputs(j):
                positions = sizes[space.level(j)]
                if j == last:
                    self.head_macs[i, j] = space.width(i) * space.last_dim * positions / 1e6
                else:
                    self.head_macs[i, j] = basic_block_macs(dim, space.width(i), space.width(j), space.stride(i, j), positions)
        # per block: MACs of one stacked basic block (the skip connection costs nothing)
        self.layer_macs = [
            basic_block_macs(dim, space.width(j), space.width(j), 1, sizes[space.level(j)]) for j in range(1, space.num_blocks)
        ]

    def expected_macs(self) -> Tensor:
        """Expected MACs (millions per sample) under the path and operation distributions; differentiable in both."""
        probs = self.path_probs()
        reach: list[Tensor] = [torch.ones((), device=self.betas[0].device)]
        total = reach[0] * self.stem_macs
        for j in range(1, self.space.num_blocks):
            arrivals = [reach[i] * probs[i, j] for i in self.space.inputs(j)]
            total = total + sum(a * self.head_macs[i, j] for a, i in zip(arrivals, self.space.inputs(j)))
            reach.append(sum(arrivals))
            if j in self.alpha_index:
                ops = F.softmax(self.stack_alpha(j), dim=-1)
                total = total + reach[j] * ops[:, 0].sum() * self.layer_macs[j - 1]
        return total

    # ----------------------------------------------------------------- derivation
    def derive(self) -> Arch:
        probs = {k: float(v.detach()) for k, v in self.path_probs().items()}
        path = viterbi_path(self.space, probs)
        ops = {j: self.stack_alpha(j).argmax(-1).tolist() for j in path[1:-1] if j in self.alpha_index}
        return Arch.from_choice(self.space, path, ops)
