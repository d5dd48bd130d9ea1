"""The NAS-Bench-101 network (``nb101``): a cell repeated in 3 stacks of 3, for any task.

As the reference ``model_builder.py``: a 3x3 conv-BN-ReLU stem (128 channels); stacks of
cells, with a 2x2 stride-2 max-pool and doubled channels before every stack but the first
(the first cell of a stack takes the un-doubled input); global average pooling and a linear
layer. Inside a cell (:class:`Cell`), an interior vertex sums its interior predecessors
(truncated to its channel count) and, if IN feeds it, a 1x1 conv-BN-ReLU projection of the
cell input; OUT concatenates the interior vertices that feed it and adds a projection of the
input if IN feeds it too. Channels follow :func:`vertex_channels`.

Ops are conv-BN-ReLU (no bias; BN momentum 0.997 in TensorFlow's convention = 0.003 in
PyTorch's, eps 1e-5) and a 3x3 stride-1 max-pool. Convolutions start from TensorFlow's
variance-scaling initialiser (truncated normal, fan-in), the classifier from Glorot-uniform.

Task adaptations as the other families: 1-D tasks use 1-D convolutions and pooling; dense
tasks keep the full resolution (no max-pool between stacks, channels still double) and apply
the linear layer at every position.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from nb360.errors import UsageError
from nb360.models import register_network
from nb360.models.heads import build_head
from nb360.models.ops import batch_norm, conv, max_pool
from nb360.nb101.spec import CONV1X1, CONV3X3, MAXPOOL3X3, ModelSpec
from nb360.tasks import TaskSpec

__all__ = ["BN_MOMENTUM", "BN_EPS", "Cell", "NB101Network", "vertex_channels", "nb101", "nb101_network"]

BN_MOMENTUM = 1.0 - 0.997  # TensorFlow's moving-average decay 0.997 as PyTorch's momentum
BN_EPS = 1e-5


def vertex_channels(in_channels: int, out_channels: int, matrix: np.ndarray) -> list[int]:
    """Channels of every vertex of a pruned cell (the reference ``compute_vertex_channels``).

    OUT's interior feeders share ``out_channels`` (the remainder +1 to the lowest-indexed
    first); every other interior vertex gets the largest count among its interior successors.
    """
    m = np.asarray(matrix)
    n = m.shape[0]
    channels = [0] * n
    channels[0], channels[n - 1] = in_channels, out_channels
    if n == 2:
        return channels
    fan_in = int(m[1:, n - 1].sum())
    base, extra = divmod(out_channels, fan_in)
    for v in range(1, n - 1):
        if m[v, n - 1]:
            channels[v] = base + (1 if extra > 0 else 0)
            extra -= 1 if extra > 0 else 0
    for v in range(n - 3, 0, -1):
        if not m[v, n - 1]:
            for dst in range(v + 1, n - 1):
                if m[v, dst]:
                    channels[v] = max(channels[v], channels[dst])
    if any(c <= 0 for c in channels[1:-1]):
        raise ValueError(f"cell of {n} vertices: a vertex got no channels ({channels})")
    return channels


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            fan_in = m.weight[0].numel()
            std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # TF's truncated-normal correction
            nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
        elif isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


class ConvBnRelu(nn.Sequential):
    def __init__(self, dim: int, c_in: int, c_out: int, kernel: int) -> None:
        bn = batch_norm(dim, c_out)
        bn.momentum, bn.eps = BN_MOMENTUM, BN_EPS
        super().__init__(conv(dim, c_in, c_out, kernel, padding=kernel // 2, bias=False), bn, nn.ReLU(inplace=False))


def _op(dim: int, name: str, channels: int) -> nn.Module:
    if name == CONV3X3:
        return ConvBnRelu(dim, channels, channels, 3)
    if name == CONV1X1:
        return ConvBnRelu(dim, channels, channels, 1)
    if name == MAXPOOL3X3:
        return max_pool(dim, 3, stride=1, padding=1)
    raise ValueError(f"unknown NB101 op {name!r}")


class Cell(nn.Module):
    """One NB101 module of a pruned, valid spec, mapping ``in_channels`` to ``out_channels``."""

    def __init__(self, dim: int, spec: ModelSpec, in_channels: int, out_channels: int) -> None:
        super().__init__()
        assert spec.matrix is not None and spec.ops is not None
        self.matrix = spec.matrix.astype(bool)
        n = self.n = self.matrix.shape[0]
        self.channels = vertex_channels(in_channels, out_channels, self.matrix)
        self.projections = nn.ModuleDict()
        self.ops = nn.ModuleList([nn.Identity()])
        for t in range(1, n - 1):
            if self.matrix[0, t]:
                self.projections[str(t)] = ConvBnRelu(dim, in_channels, self.channels[t], 1)
            self.ops.append(_op(dim, spec.ops[t], self.channels[t]))
        if self.matrix[0, n - 1]:
            self.projections[str(n - 1)] = ConvBnRelu(dim, in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        n, m, c = self.n, self.matrix, self.channels
        tensors = [x]
        out_in = []
        for t in range(1, n - 1):
            terms = [tensors[s][:, : c[t]] for s in range(1, t) if m[s, t]]
            if m[0, t]:
                terms.append(self.projections[str(t)](x))
            h = terms[0]
            for term in terms[1:]:
                h = h + term
            tensors.append(self.ops[t](h))
            if m[t, n - 1]:
                out_in.append(tensors[t])
        if not out_in:
            return self.projections[str(n - 1)](x)
        out = out_in[0] if len(out_in) == 1 else torch.cat(out_in, dim=1)
        if m[0, n - 1]:
            out = out + self.projections[str(n - 1)](x)
        return out


class NB101Network(nn.Module):
    """Stem, ``stacks`` x ``cells`` cells (max-pool and doubling between stacks), head."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        dim: int = 2,
        kind: str = "point",
        in_channels: int = 3,
        num_outputs: int = 10,
        stem_channels: int = 128,
        stacks: int = 3,
        cells: int = 3,
    ) -> None:
        super().__init__()
        spec.check()
        if kind not in ("point", "dense"):
            raise ValueError(f"kind must be 'point' or 'dense', got {kind!r}")
        if stem_channels <= 0 or stacks <= 0 or cells <= 0:
            raise UsageError(
                f"nb101 network: stem_channels, stacks and cells must be positive, got {stem_channels}, {stacks}, {cells}"
            )
        self.spec, self.kind = spec, kind
        self.stem = ConvBnRelu(dim, in_channels, stem_channels, 3)
        layers: list[nn.Module] = []
        channels = stem_channels
        for stack in range(stacks):
            c_in = channels
            if stack > 0:
                if kind == "point":
                    layers.append(max_pool(dim, 2, stride=2))
                    layers[-1].ceil_mode = True  # TensorFlow's 'same' padding on odd sizes
                channels *= 2
            for _ in range(cells):
                layers.append(Cell(dim, spec, c_in, channels))
                c_in = channels
        self.cells = nn.Sequential(*layers)
        self.head = build_head(kind, channels, num_outputs)
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.cells(self.stem(x)))

    def extra_repr(self) -> str:
        return f"kind={self.kind}, matrix={self.spec.matrix.tolist()}, ops={self.spec.ops}"


def _resolve(cell: Any, arch: Any) -> ModelSpec:
    if (cell is None) == (arch is None):
        raise UsageError(
            "network 'nb101' needs a cell: pass one network option, cell={'matrix': [[...]], 'ops': [...]} "
            "or arch=<an nb101 cell string or index>"
        )
    if cell is not None:
        return ModelSpec.coerce(cell)
    if isinstance(arch, (str, int, np.integer)):
        from nb360.nb101.space import NB101

        return NB101.spec(arch)
    return ModelSpec.coerce(arch)


def nb101_network(spec: Any, **options: Any) -> NB101Network:
    """An NB101 network without a TaskSpec (defaults: the CIFAR-10 benchmark network)."""
    return NB101Network(ModelSpec.coerce(spec), **options)


@register_network("nb101")
def nb101(
    task: TaskSpec,
    cell: Any = None,
    arch: Any = None,
    stem_channels: int = 128,
    stacks: int = 3,
    cells: int = 3,
    dropout: float = 0.0,
) -> nn.Module:
    """An NB101 cell as the task's network: ``cell`` = ``{"matrix", "ops"}`` (unpruned, any vertex order) or
    ``arch`` = a cell string or index of space ``nb101`` (what :mod:`nb360.precompute` passes).

    The option is not called ``spec``: :func:`~nb360.models.build_network` takes the task as ``spec``.

    ``dropout`` is accepted because the training module passes it to every network; the
    benchmark network has none, so it is ignored.
    """
    return NB101Network(
        _resolve(cell, arch),
        dim=task.dims,
        kind=task.kind,
        in_channels=task.in_channels,
        num_outputs=task.num_outputs,
        stem_channels=stem_channels,
        stacks=stacks,
        cells=cells,
    )
