"""The NB360 default baselines, picked by the task's shape: WRN-16-4 (2-D point), dense WRN-16-4 (2-D dense), ResNet1D (1-D)."""

from __future__ import annotations

from torch import nn

from nb360.models import register_network
from nb360.models.resnet1d import ResNet1D
from nb360.models.wrn import WideResNet
from nb360.tasks import TaskSpec


@register_network("wrn")
def backbone(spec: TaskSpec, dropout: float = 0.0, depth: int = 16, widen: int = 4, pool: str | int = "global", mid_channels: int = 64) -> nn.Module:
    """``--method wrn``'s network: WRN-``depth``-``widen`` on 2-D tasks, ResNet1D on 1-D tasks (which ignores dropout)."""
    if spec.dims == 1:
        return ResNet1D(spec.in_channels, spec.num_outputs, mid_channels=mid_channels, kind=spec.kind)
    strides = (1, 2, 2) if spec.kind == "point" else (1, 1, 1)
    return WideResNet(spec.in_channels, spec.num_outputs, depth, widen, dropout, strides, spec.kind, pool)
