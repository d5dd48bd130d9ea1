"""Cosmic's expert: deepCR's UNet2Sigmoid (Zhang & Bloom 2020), hidden 32, one down and one up step.

NB ``expert/Cosmic/{train,get_flops}.py`` with the deepCR submodule (commit 0245290,
``deepCR/unet.py`` and ``parts.py``): a double conv (3x3 conv + BN + ReLU, twice; biased
convs, BN momentum 0.005) to ``hidden`` channels; 2x2 max pool and a double conv to
``2 hidden``; a 2x2 stride-2 transposed conv back to ``hidden``, concatenated after the
skip connection and a double conv to ``hidden``; a 1x1 conv to one channel. The
reference ends in a sigmoid and trains with BCE on probabilities; here the network
returns the logits and the task's ``masked_bce_with_logits`` applies the sigmoid (the
same gradients: ignored pixels get none either way). deepCR scores its mask at
probability 0.5, i.e. logit 0, so the expert's defaults set the metric threshold to 0.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nb360.models import register_network
from nb360.search.expert import Expert, register_expert
from nb360.tasks import TaskSpec

__all__ = ["UNet2"]


def double_conv(in_channels: int, out_channels: int, bn_momentum: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for channels in (in_channels, out_channels):
        layers += [nn.Conv2d(channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels, momentum=bn_momentum), nn.ReLU()]
    return nn.Sequential(*layers)


class UNet2(nn.Module):
    """deepCR's two-level UNet (``UNet2Sigmoid`` without the final sigmoid): returns per-pixel logits."""

    def __init__(self, in_channels: int, num_outputs: int, hidden: int = 32, bn_momentum: float = 0.005) -> None:
        super().__init__()
        self.inc = double_conv(in_channels, hidden, bn_momentum)
        self.down = nn.Sequential(nn.MaxPool2d(2), double_conv(hidden, 2 * hidden, bn_momentum))
        self.up = nn.ConvTranspose2d(2 * hidden, hidden, 2, stride=2)
        self.merge = double_conv(2 * hidden, hidden, bn_momentum)
        self.out = nn.Conv2d(hidden, num_outputs, 1)

    def forward(self, x: Tensor) -> Tensor:
        skip = self.inc(x)
        return self.out(self.merge(torch.cat([skip, self.up(self.down(skip))], dim=1)))


@register_network("deepcr_unet")
def build_deepcr_unet(spec: TaskSpec, dropout: float = 0.0, hidden: int = 32, bn_momentum: float = 0.005) -> nn.Module:
    """UNet2 for a 2-D dense task with even height and width; the reference has no dropout, so ``dropout`` must be 0."""
    if dropout:
        raise ValueError("deepcr_unet has no dropout (deepCR's UNet uses none); leave model.dropout at 0")
    if spec.dims != 2 or spec.kind != "dense":
        raise ValueError(f"deepcr_unet needs a 2-D dense task; {spec.name} is {spec.dims}-D {spec.kind}")
    return UNet2(spec.in_channels, spec.num_outputs, hidden, bn_momentum)


register_expert(
    Expert(
        task="cosmic",
        title="deepCR UNet2Sigmoid (hidden 32, one down/up step)",
        source="expert/Cosmic/train.py",
        defaults={
            "model.network": "deepcr_unet",
            "model.network_options": {"hidden": 32},
            "model.optimizer": "adam",
            "model.lr": 0.005,
            "model.weight_decay": 0.0,
            "model.schedule": "constant",
            "model.metric_options": {"threshold": 0.0},
            "trainer.max_epochs": 50,
            "data.batch_size": 16,
        },
    )
)
