"""The eight DARTS operations, for 1-D and 2-D inputs alike (``dim`` = number of spatial axes).

Every operation keeps the channel count and, with stride 2, halves each spatial size
rounding up, so that odd sizes (FSD50K's 101 frames, NinaPro's 13 columns) line up in a
cell. For even sizes this is exactly the reference; for odd sizes the reference's
2-D factorized reduction would not line up and fail.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nb360.models.ops import avg_pool, batch_norm, conv, max_pool

__all__ = ["PRIMITIVES", "BatchNormSettings", "make_op", "ReLUConvBN", "FactorizedReduce", "Zero", "drop_path", "stem", "reduction_layers"]

PRIMITIVES = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


@dataclass(frozen=True)
class BatchNormSettings:
    """Batch-norm settings of a family of layers.

    The reference's evaluation networks use ``momentum=0.999, eps=0.001`` (Keras-style
    values that, in PyTorch's convention, make the running statistics follow the last
    batch); nb360 keeps them there by default and uses PyTorch's defaults elsewhere.
    """

    affine: bool = True
    momentum: float = 0.1
    eps: float = 1e-5

    def make(self, dim: int, channels: int) -> nn.Module:
        bn = batch_norm(dim, channels, affine=self.affine)
        bn.momentum, bn.eps = self.momentum, self.eps
        return bn


class Zero(nn.Module):
    """The ``none`` operation: zeros of the output's size."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            return x.mul(0.0)
        index = (slice(None), slice(None)) + (slice(None, None, self.stride),) * (x.dim() - 2)
        return x[index].mul(0.0)


class FactorizedReduce(nn.Module):
    """Stride-2 reduction by two 1x1 convolutions, the second on the input shifted by one position.

    ``shift=False`` reproduces the reference's 1-D version, whose two convolutions see the
    same (unshifted) input. The input is padded by one position at the end before the
    shift, so both halves have ``ceil(n / 2)`` positions for odd ``n`` as well.
    """

    def __init__(self, dim: int, c_in: int, c_out: int, bn: BatchNormSettings, shift: bool = True) -> None:
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even number of output channels, got {c_out}")
        self.conv_1 = conv(dim, c_in, c_out // 2, 1, stride=2)
        self.conv_2 = conv(dim, c_in, c_out // 2, 1, stride=2)
        self.bn = bn.make(dim, c_out)
        self.shift = shift

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        other = x
        if self.shift:
            dims = x.dim() - 2
            other = F.pad(x, (0, 1) * dims)[(slice(None), slice(None)) + (slice(1, None),) * dims]
        return self.bn(torch.cat([self.conv_1(x), self.conv_2(other)], dim=1))


class ReLUConvBN(nn.Sequential):
    def __init__(self, dim: int, c_in: int, c_out: int, kernel_size: int, stride: int, padding: int, bn: BatchNormSettings) -> None:
        super().__init__(nn.ReLU(), conv(dim, c_in, c_out, kernel_size, stride, padding), bn.make(dim, c_out))


def _separable(dim: int, c: int, kernel: int, stride: int, padding: int, dilation: int, bn: BatchNormSettings) -> list[nn.Module]:
    return [
        nn.ReLU(),
        conv(dim, c, c, kernel, stride, padding, dilation=dilation, groups=c),
        conv(dim, c, c, 1),
        bn.make(dim, c),
    ]


def make_op(name: str, dim: int, channels: int, stride: int, bn: BatchNormSettings, shift: bool = True) -> nn.Module:
    """One candidate operation; pooling carries no batch norm here (the supernet adds one)."""
    c = channels
    if name == "none":
        return Zero(stride)
    if name == "max_pool_3x3":
        return max_pool(dim, 3, stride, 1)
    if name == "avg_pool_3x3":
        return avg_pool(dim, 3, stride, 1, count_include_pad=False)
    if name == "skip_connect":
        return nn.Identity() if stride == 1 else FactorizedReduce(dim, c, c, bn, shift)
    if name in ("sep_conv_3x3", "sep_conv_5x5"):
        k = 3 if name.endswith("3x3") else 5
        return nn.Sequential(*_separable(dim, c, k, stride, k // 2, 1, bn), *_separable(dim, c, k, 1, k // 2, 1, bn))
    if name in ("dil_conv_3x3", "dil_conv_5x5"):
        k = 3 if name.endswith("3x3") else 5
        return nn.Sequential(*_separable(dim, c, k, stride, k - 1, 2, bn))
    raise ValueError(f"unknown DARTS operation {name!r}; choose one of: {', '.join(PRIMITIVES)}")


def drop_path(x: Tensor, prob: float) -> Tensor:
    """Zero whole samples of an op's output with probability ``prob`` and rescale the rest (scheduled drop-path)."""
    keep = 1.0 - prob
    mask = torch.empty((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask


def stem(dim: int, in_channels: int, channels: int) -> nn.Module:
    """The DARTS stem: a 3x3 convolution to ``channels`` and batch norm."""
    return nn.Sequential(conv(dim, in_channels, channels, 3, padding=1), batch_norm(dim, channels))


def reduction_layers(kind: str, layers: int) -> set[int]:
    """Cells that reduce resolution and double channels: at 1/3 and 2/3 of the depth for point tasks, none for dense ones."""
    return {layers // 3, 2 * layers // 3} if kind == "point" else set()
