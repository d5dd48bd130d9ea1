"""Wide ResNet (WRN-16-4) as used by the NAS-Bench-360 backbone baselines.

One definition covers the reference's ``Backbone_Pt`` (point tasks: stage strides
1, 2, 2, pooled linear head), ``Backbone_Audio`` (the same with global pooling) and
the dense ``Backbone`` (stride 1 everywhere, per-pixel linear head). The layers,
initialisation and parameter counts match the reference; the dense variant leaves
out the reference's registered-but-unused ``in_layer`` and ``out_conv``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from nb360.models.heads import build_head
from nb360.models.ops import batch_norm, conv

__all__ = ["BasicBlock", "WideResNet"]


class BasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3-BN-ReLU-dropout-conv3 plus a shortcut.

    The shortcut is the identity when the channel count is unchanged, otherwise a
    1x1 convolution of the *activated* input.
    """

    def __init__(self, dim: int, in_channels: int, out_channels: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = batch_norm(dim, in_channels)
        self.conv1 = conv(dim, in_channels, out_channels, 3, stride=stride, padding=1)
        self.bn2 = batch_norm(dim, out_channels)
        self.conv2 = conv(dim, out_channels, out_channels, 3, padding=1)
        self.shortcut = None if in_channels == out_channels else conv(dim, in_channels, out_channels, 1, stride=stride)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        act = F.relu(self.bn1(x))
        out = F.relu(self.bn2(self.conv1(act)))
        if self.dropout > 0:
            out = F.dropout(out, p=self.dropout, training=self.training)
        out = self.conv2(out)
        return (x if self.shortcut is None else self.shortcut(act)) + out


class WideResNet(nn.Module):
    """WRN-``depth``-``widen``: a stem conv, three stages of ``(depth - 4) / 6`` blocks, BN-ReLU, a head.

    ``kind="point"`` gives a classifier/regressor over the whole input, ``"dense"`` a
    per-position output of the input's spatial size (use ``strides=(1, 1, 1)``).
    """

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        depth: int = 16,
        widen: int = 4,
        dropout: float = 0.0,
        strides: tuple[int, int, int] = (1, 2, 2),
        kind: str = "point",
        pool: str | int = "global",
        dim: int = 2,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = conv(dim, in_channels, widths[0], 3, padding=1)
        stages = []
        for stage, stride in enumerate(strides):
            blocks = [
                BasicBlock(dim, widths[stage] if i == 0 else widths[stage + 1], widths[stage + 1], stride if i == 0 else 1, dropout)
                for i in range(n)
            ]
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)
        self.bn = batch_norm(dim, widths[3])
        self.head = build_head(kind, widths[3], num_outputs, pool)
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.stages(self.conv1(x))
        return self.head(F.relu(self.bn(out)))
