"""The ResNet baseline for time series (Wang et al.; okrasolar/pytorch-timeseries) used by NB360's 1-D tasks.

Three residual blocks of ConvBlocks with kernels 8, 5 and 3 ("same" padding, biased
convolutions, BN, ReLU). A block whose channel count changes adds a 1x1 conv + BN
projection of its input; a block that keeps it has no shortcut at all, exactly as in
the reference. The reference ignores dropout, and so does this network.
"""

from __future__ import annotations

from torch import Tensor, nn

from nb360.models.heads import build_head
from nb360.models.ops import SamePadConv, batch_norm

__all__ = ["ConvBlock", "ResNetBlock", "ResNet1D"]


class ConvBlock(nn.Sequential):
    def __init__(self, dim: int, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(SamePadConv(dim, in_channels, out_channels, kernel_size), batch_norm(dim, out_channels), nn.ReLU())


class ResNetBlock(nn.Module):
    def __init__(self, dim: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            ConvBlock(dim, in_channels, out_channels, 8),
            ConvBlock(dim, out_channels, out_channels, 5),
            ConvBlock(dim, out_channels, out_channels, 3),
        )
        self.residual = (
            None
            if in_channels == out_channels
            else nn.Sequential(SamePadConv(dim, in_channels, out_channels, 1), batch_norm(dim, out_channels))
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(x)
        return out if self.residual is None else out + self.residual(x)


class ResNet1D(nn.Module):
    """``ResNet1D(in_channels, mid_channels=64, num_outputs)``: blocks to 64, 128, 128 channels, mean over time, linear."""

    def __init__(self, in_channels: int, num_outputs: int, mid_channels: int = 64, kind: str = "point", dim: int = 1) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            ResNetBlock(dim, in_channels, mid_channels),
            ResNetBlock(dim, mid_channels, mid_channels * 2),
            ResNetBlock(dim, mid_channels * 2, mid_channels * 2),
        )
        self.head = build_head(kind, mid_channels * 2, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.layers(x))
