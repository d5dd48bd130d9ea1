"""Building blocks written once for 1-D and 2-D inputs (``dim`` = number of spatial axes)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["conv", "batch_norm", "avg_pool", "max_pool", "SamePadConv"]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d}
_BN = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}
_AVG = {1: nn.AvgPool1d, 2: nn.AvgPool2d}
_MAX = {1: nn.MaxPool1d, 2: nn.MaxPool2d}


def _pick(table: dict[int, type], dim: int) -> type:
    if dim not in table:
        raise ValueError(f"dim must be 1 or 2, got {dim!r}")
    return table[dim]


def conv(
    dim: int,
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    stride: int = 1,
    padding: int = 0,
    dilation: int = 1,
    groups: int = 1,
    bias: bool = False,
) -> nn.Module:
    return _pick(_CONV, dim)(
        in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation, groups=groups, bias=bias
    )


def batch_norm(dim: int, channels: int, affine: bool = True) -> nn.Module:
    return _pick(_BN, dim)(channels, affine=affine)


def avg_pool(dim: int, kernel_size: int, stride: int | None = None, padding: int = 0, count_include_pad: bool = True) -> nn.Module:
    return _pick(_AVG, dim)(kernel_size, stride=stride, padding=padding, count_include_pad=count_include_pad)


def max_pool(dim: int, kernel_size: int, stride: int | None = None, padding: int = 0) -> nn.Module:
    return _pick(_MAX, dim)(kernel_size, stride=stride, padding=padding)


class SamePadConv(nn.Module):
    """Stride-1 convolution with TensorFlow's "same" padding.

    The total padding per axis is ``dilation * (kernel_size - 1)``; when it is odd the
    extra element goes on the right/bottom (kernel 8 pads 3 left and 4 right), which is
    what the reference ResNet1D does.
    """

    def __init__(self, dim: int, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1, bias: bool = True) -> None:
        super().__init__()
        self.conv = conv(dim, in_channels, out_channels, kernel_size, dilation=dilation, bias=bias)
        total = dilation * (kernel_size - 1)
        self.pad = [total // 2, total - total // 2] * dim

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.pad(x, self.pad))
