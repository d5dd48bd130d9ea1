"""DenseNAS-R1, the ResNet-based DenseNAS space as NB360 adapts it: routing blocks, dense candidate paths, FLOPs.

A space is a row of *routing blocks* of growing width. Block 0 is the stem's output; the last
block is the 1x1 projection to ``last_dim`` before the head. Every block ``i`` may feed each of
the next ``connect`` blocks ``j`` that lie at most one stage later and at the same or the next
resolution (``level`` counts the stride-2 reductions after the stem). A candidate path ``i -> j``
enters block ``j`` through a *head layer* (a basic block, stride 2 if the resolution halves),
and block ``j`` then applies ``layers[j]`` *stacked layers*, each a choice between a basic
block and a skip connection. The search weighs path ``i -> j`` by ``softmax(beta_i)[j]`` (beta
normalised over the paths *leaving* ``i``) and each stacked layer's operations by
``softmax(alpha)``; the derived architecture is the most probable path (Viterbi) with the
argmax operation of each of its layers.

Dense tasks keep every block at the input resolution (all levels 0, stem stride 1); 1-D tasks
use the same space with Conv1d/BatchNorm1d operations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nb360.models.ops import batch_norm, conv

__all__ = ["Space", "BasicBlock", "STACK_PRIMITIVES", "POINT_SPACE", "DENSE_SPACE", "Arch", "viterbi_path", "basic_block_macs"]

STACK_PRIMITIVES = ("basic_block", "skip_connect")  # the reference's PRIMITIVES_stack; its PRIMITIVES_head is basic_block only


@dataclass(frozen=True)
class Space:
    """Routing blocks ``0..n-1`` (widths ``chs``) and the final block ``n`` (``last_dim``).

    Attributes:
        chs, levels, layers: width, resolution level and number of stacked layers of blocks ``0..n-1``.
        stages: stage of blocks ``0..n`` (one more entry: the final block's); paths skip at most one stage.
        last_dim: width of the final 1x1 block.
        connect: how many following blocks a block may feed (the reference's ``adjoin_connect_nums``).
    """

    chs: tuple[int, ...]
    levels: tuple[int, ...]
    stages: tuple[int, ...]
    layers: tuple[int, ...]
    last_dim: int
    connect: int = 10

    def __post_init__(self) -> None:
        n = len(self.chs)
        if not (len(self.levels) == len(self.layers) == n and len(self.stages) == n + 1) or n < 1:
            raise ValueError(f"space: chs, levels, layers need one entry per block and stages one more, got {self}")

    @property
    def num_blocks(self) -> int:
        """Blocks including the final one."""
        return len(self.chs) + 1

    def width(self, j: int) -> int:
        return self.last_dim if j == len(self.chs) else self.chs[j]

    def level(self, j: int) -> int:
        return self.levels[min(j, len(self.chs) - 1)]

    def outputs(self, i: int) -> list[int]:
        """Blocks that block ``i`` may feed, in order (the order of ``beta_i``)."""
        out = []
        for j in range(i + 1, min(i + self.connect, self.num_blocks - 1) + 1):
            if self.stages[j] - self.stages[i] > 1 or self.level(j) - self.level(i) not in (0, 1):
                break
            out.append(j)
        return out

    def inputs(self, j: int) -> list[int]:
        return [i for i in range(j) if j in self.outputs(i)]

    def stride(self, i: int, j: int) -> int:
        return 2 if self.level(j) > self.level(i) else 1

    def check_connected(self) -> None:
        for i in range(self.num_blocks - 1):
            if not self.outputs(i):
                raise ValueError(f"space: block {i} feeds no later block")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Space:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"chs": list(self.chs), "levels": list(self.levels), "stages": list(self.stages), "layers": list(self.layers),
                "last_dim": self.last_dim, "connect": self.connect}  # fmt: skip


# NB360 DenseNAS (point/configs/cifar_search_cfg_resnet.yaml): 21 blocks; fm sizes 16/8/4/2 are levels 0-3
POINT_SPACE = Space(
    chs=(32, 48, 56, 64, 72, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256, 272, 288, 480, 496, 512),
    levels=(0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3),
    stages=(0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 7),
    layers=(0, 0, 0, 0, 5, 5, 5, 15, 15, 15, 15, 5, 5, 5, 5, 5, 5, 5, 1, 1, 1),
    last_dim=512,
)
# NB360 DenseNAS dense (dense/configs/pde_search_cfg_resnet.yaml): 7 blocks at the input resolution
DENSE_SPACE = Space(
    chs=(32, 48, 56, 64, 72, 96, 112),
    levels=(0,) * 7,
    stages=(0, 1, 1, 1, 2, 2, 2, 3),
    layers=(0, 1, 1, 1, 5, 5, 5),
    last_dim=112,
)


# ---------------------------------------------------------------- operations
class BasicBlock(nn.Module):
    """ResNet's basic block (two 3x3 convolutions, a 1x1 projection shortcut when the shape changes), 1-D or 2-D."""

    def __init__(self, dim: int, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv(dim, c_in, c_out, 3, stride=stride, padding=1), batch_norm(dim, c_out), nn.ReLU(inplace=True),
            conv(dim, c_out, c_out, 3, padding=1), batch_norm(dim, c_out),
        )  # fmt: skip
        self.shortcut = (
            nn.Sequential(conv(dim, c_in, c_out, 1, stride=stride), batch_norm(dim, c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def projection(dim: int, c_in: int, c_out: int) -> nn.Module:
    """The final block's entry: 1x1 convolution, batch norm, ReLU6 (the reference's ``Conv1_1_Branch``)."""
    return nn.Sequential(conv(dim, c_in, c_out, 1), batch_norm(dim, c_out), nn.ReLU6(inplace=True))


def stem(dim: int, c_in: int, c_out: int, stride: int) -> nn.Module:
    return nn.Sequential(conv(dim, c_in, c_out, 3, stride=stride, padding=1), batch_norm(dim, c_out), nn.ReLU(inplace=True))


class Head(nn.Module):
    """Global average pooling and a linear classifier (point), or a linear map per position (dense)."""

    def __init__(self, kind: str, channels: int, num_outputs: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.kind = kind
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(channels, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "point":
            return self.linear(self.dropout(x.flatten(2).mean(-1)))
        return self.linear(self.dropout(x.movedim(1, -1))).movedim(-1, 1)


# ---------------------------------------------------------------- cost (multiply-accumulates, in millions)
def spatial_sizes(input_size: tuple[int, ...], stem_stride: int, max_level: int) -> list[int]:
    """Positions per sample at each level: the stem's stride, then halvings (3x3 convolutions, padding 1: ceil(s / 2))."""
    sizes = [math.ceil(s / stem_stride) for s in input_size]
    out = []
    for _ in range(max_level + 1):
        out.append(math.prod(sizes))
        sizes = [math.ceil(s / 2) for s in sizes]
    return out


def basic_block_macs(dim: int, c_in: int, c_out: int, stride: int, positions_out: int) -> float:
    k = 3**dim
    macs = k * c_in * c_out + k * c_out * c_out + (c_in * c_out if stride != 1 or c_in != c_out else 0)
    return macs * positions_out / 1e6


# ---------------------------------------------------------------- derivation
def viterbi_path(space: Space, path_probs: dict[tuple[int, int], float]) -> list[int]:
    """The most probable chain of blocks from 0 to the last: ``path_probs[i, j]`` is ``softmax(beta_i)`` at ``j``."""
    best: list[tuple[float, int]] = [(1.0, -1)]
    for j in range(1, space.num_blocks):
        best.append(max(((best[i][0] * path_probs[i, j], i) for i in space.inputs(j)), key=lambda t: t[0]))
    path = [space.num_blocks - 1]
    while path[-1] != 0:
        path.append(best[path[-1]][1])
    return path[::-1]


@dataclass
class Arch:
    """A derived DenseNAS network: the stem width, then per routing block on the path its width,
    the stride of its head layer and the number of basic blocks kept in its stack; the final width.

    ``path`` (the block indices in the supernet) is informative only.
    """

    stem: int
    blocks: list[tuple[int, int, int]]
    last_dim: int
    path: list[int] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Arch:
        from nb360.errors import UsageError

        try:
            blocks = [(int(c), int(s), int(n)) for c, s, n in data["blocks"]]
            arch = cls(int(data["stem"]), blocks, int(data["last_dim"]), [int(i) for i in data.get("path", [])])
        except (KeyError, TypeError, ValueError) as error:
            raise UsageError(
                f"a DenseNAS architecture needs stem, blocks [[width, stride, layers], ...] and last_dim: {error}"
            ) from None
        if any(c < 1 or s not in (1, 2) or n < 0 for c, s, n in arch.blocks) or arch.stem < 1 or arch.last_dim < 1:
            raise UsageError(f"a DenseNAS architecture needs positive widths, strides 1 or 2 and layers >= 0: {data}")
        return arch

    def to_dict(self) -> dict[str, Any]:
        return {"stem": self.stem, "blocks": [list(b) for b in self.blocks], "last_dim": self.last_dim, "path": list(self.path)}

    @classmethod
    def from_choice(cls, space: Space, path: list[int], stack_ops: dict[int, list[int]]) -> Arch:
        """The network of ``path`` with, for each block on it, the operation indices of its stacked layers."""
        blocks = []
        for i, j in zip(path[:-1], path[1:]):
            if j == space.num_blocks - 1:
                break
            kept = sum(1 for o in stack_ops.get(j, []) if STACK_PRIMITIVES[o] == "basic_block")
            blocks.append((space.chs[j], space.stride(i, j), kept))
        return cls(space.chs[0], blocks, space.last_dim, list(path))

    def macs(self, dim: int, in_channels: int, input_size: tuple[int, ...], stem_stride: int, num_outputs: int) -> float:
        """Multiply-accumulates (millions) of the network for one sample, as the search's cost counts them."""
        level = sum(1 for _, s, _ in self.blocks if s == 2)
        sizes = spatial_sizes(input_size, stem_stride, level)
        total, width, lv = 3**dim * in_channels * self.stem * sizes[0] / 1e6, self.stem, 0
        for c, s, n in self.blocks:
            lv += s == 2
            total += basic_block_macs(dim, width, c, s, sizes[lv]) + n * basic_block_macs(dim, c, c, 1, sizes[lv])
            width = c
        return total + width * self.last_dim * sizes[lv] / 1e6


class DerivedNetwork(nn.Module):
    """The network of an :class:`Arch`: stem, the head layer and stacked basic blocks of each block, 1x1 block, head."""

    def __init__(self, dim: int, kind: str, in_channels: int, num_outputs: int, arch: Arch, dropout: float = 0.0) -> None:
        super().__init__()
        if kind == "dense" and any(s != 1 for _, s, _ in arch.blocks):
            raise ValueError("a dense task's DenseNAS network keeps the resolution: every stride must be 1")
        layers: list[nn.Module] = [stem(dim, in_channels, arch.stem, 1 if kind == "dense" else 2)]
        width = arch.stem
        for c, s, n in arch.blocks:
            layers += [BasicBlock(dim, width, c, s)] + [BasicBlock(dim, c, c) for _ in range(n)]
            width = c
        layers.append(projection(dim, width, arch.last_dim))
        self.features = nn.Sequential(*layers)
        self.head = Head(kind, arch.last_dim, num_outputs, dropout)
        init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def init_weights(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)


def random_choice(space: Space, generator: torch.Generator) -> tuple[list[int], dict[int, list[int]]]:
    """A uniformly random walk from block 0 to the final block, and uniform operations for its stacked layers."""
    path = [0]
    while path[-1] != space.num_blocks - 1:
        outs = space.outputs(path[-1])
        path.append(outs[int(torch.randint(len(outs), (1,), generator=generator))])
    ops = {j: torch.randint(len(STACK_PRIMITIVES), (space.layers[j],), generator=generator).tolist() for j in path[1:-1]}
    return path, ops
