"""CIFAR-100's expert: DenseNet-BC-100 with growth rate 24 (Huang et al. 2017), as NB360 trains it.

Reference: NB ``expert/CIFAR100/densenet-pytorch/{densenet.py,train.py}`` (``DenseNet3``, the
defaults of ``train.py``: 100 layers, growth 24, compression 0.5, bottleneck, no dropout; SGD
with Nesterov momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10 at epochs 150 and 225 of
300, batch 64). Three dense blocks of ``(depth - 4) / 6`` bottleneck layers (BN-ReLU-conv1x1
to ``4k`` channels, BN-ReLU-conv3x3 to ``k`` channels, concatenated to the input), joined by
transitions (BN-ReLU-conv1x1 halving the channels, 2x2 average pooling); a 3x3 stem to ``2k``
channels, BN-ReLU, global average pooling and a linear classifier. Convolutions have no bias
and the reference's He-normal (fan-out) initialisation; the classifier's bias starts at zero.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nb360.models import register_network
from nb360.models.heads import build_head
from nb360.search.expert import Expert, register_expert
from nb360.tasks import TaskSpec

__all__ = ["Bottleneck", "Transition", "DenseNetBC"]


def _bn_relu_conv(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    return [
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
    ]


class Bottleneck(nn.Module):
    """BN-ReLU-conv1x1 (``4 * growth``), BN-ReLU-conv3x3 (``growth``), each followed by dropout; the input is concatenated."""

    def __init__(self, in_channels: int, growth: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.reduce = nn.Sequential(*_bn_relu_conv(in_channels, 4 * growth, 1))
        self.conv = nn.Sequential(*_bn_relu_conv(4 * growth, growth, 3))
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        out = F.dropout(self.reduce(x), self.dropout, self.training)
        out = F.dropout(self.conv(out), self.dropout, self.training)
        return torch.cat([x, out], 1)


class Transition(nn.Sequential):
    """BN-ReLU-conv1x1 to ``out_channels``, dropout, 2x2 average pooling."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0) -> None:
        super().__init__(*_bn_relu_conv(in_channels, out_channels, 1), nn.Dropout(dropout), nn.AvgPool2d(2))


class DenseNetBC(nn.Module):
    """DenseNet-BC-``depth`` with growth rate ``growth`` for ``in_channels`` x 32 x 32 images (any size divisible by 4)."""

    def __init__(
        self,
        in_channels: int = 3,
        num_outputs: int = 100,
        depth: int = 100,
        growth: int = 24,
        compression: float = 0.5,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"DenseNet-BC depth must be 6n + 4, got {depth}")
        layers = (depth - 4) // 6
        channels = 2 * growth
        modules: list[nn.Module] = [nn.Conv2d(in_channels, channels, 3, padding=1, bias=False)]
        for block in range(3):
            modules += [Bottleneck(channels + i * growth, growth, dropout) for i in range(layers)]
            channels += layers * growth
            if block < 2:
                reduced = int(math.floor(channels * compression))
                modules.append(Transition(channels, reduced, dropout))
                channels = reduced
        modules += [nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*modules)
        self.head = build_head("point", channels, num_outputs)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@register_network("densenet_bc")
def build_densenet_bc(
    spec: TaskSpec, depth: int = 100, growth: int = 24, compression: float = 0.5, dropout: float = 0.0
) -> nn.Module:
    """DenseNet-BC for a 2-D point task (CIFAR-100's expert: depth 100, growth 24)."""
    if spec.dims != 2 or spec.kind != "point":
        raise ValueError(f"densenet_bc needs a 2-D point task; {spec.name} is {spec.dims}-D {spec.kind}")
    return DenseNetBC(spec.in_channels, spec.num_outputs, depth, growth, compression, dropout)


register_expert(
    Expert(
        task="cifar100",
        title="DenseNet-BC-100 (k = 24)",
        source="expert/CIFAR100/densenet-pytorch/train.py",
        defaults={
            "model.network": "densenet_bc",
            "model.network_options": {"depth": 100, "growth": 24},
            "model.optimizer": "sgd",
            "model.lr": 0.1,
            "model.momentum": 0.9,
            "model.nesterov": True,
            "model.weight_decay": 1e-4,
            "model.schedule": "multistep",
            "model.milestones": [150, 225],
            "model.gamma": 0.1,
            "trainer.max_epochs": 300,
            "data.batch_size": 64,
            "data.eval_batch_size": 64,
        },
    )
)
