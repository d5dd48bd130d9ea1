"""ECG's expert: Net1D of hsd1503/resnet1d (NB ``expert/ECG/resnet1d/net1d.py``, ``test_physionet_net1d.py``).

A stem convolution (kernel 16, stride 2, "same" padding) + BN + Swish, then stages of
pre-activation bottleneck blocks: BN-Swish-dropout-conv1x1, BN-Swish-dropout-grouped
conv k (stride 2 in a stage's first block), BN-Swish-dropout-conv1x1, then a
squeeze-and-excitation gate (mean over time, Linear C -> C/2, Swish, Linear C/2 -> C,
sigmoid). The shortcut is max-pooled ("same" padding, window = stride) when the block
downsamples and zero-padded on both sides of the channel axis when the width grows. The
network's first block skips its pre-activation. Output: mean over time, Linear.

The reference recipe: base 256 filters, widths 256 x (1, 2, 2, 4, 4, 8, 8), two blocks
per stage, kernel 16, stride 2, 32 groups in every grouped conv (the script's
``groups=32``; its printout ``model_detail/net1d_44.txt`` shows 32 groups in every stage),
bottleneck ratio 1, dropout 0.5; Adam lr 1e-3 with weight decay 1e-3, batch 32, 50 epochs, x0.1 at
epochs 12, 23, 34 and 45 (what the script's ReduceLROnPlateau, fed the epoch index, does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from nb360.models import register_network
from nb360.search.expert import Expert, register_expert
from nb360.tasks import TaskSpec

__all__ = ["Net1D", "Net1DBlock", "SameConv1d"]


def same_pad(length: int, kernel_size: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding of a length-``length`` axis: output ``ceil(length / stride)``; the extra element goes right."""
    total = max(0, (-(-length // stride) - 1) * stride + kernel_size - length)
    return total // 2, total - total // 2


class SameConv1d(nn.Conv1d):
    """``Conv1d`` with "same" padding computed from the input length (the reference's ``MyConv1dPadSame``)."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, same_pad(x.shape[-1], self.kernel_size[0], self.stride[0])))


class Net1DBlock(nn.Module):
    """One bottleneck block; ``first`` skips the pre-activation of its input (the network's very first block)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        ratio: float,
        kernel_size: int,
        stride: int,
        groups: int,
        dropout: float,
        first: bool,
    ) -> None:
        super().__init__()
        mid = int(out_channels * ratio)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

        def preact(channels: int) -> list[nn.Module]:
            return [nn.BatchNorm1d(channels), nn.SiLU(), nn.Dropout(dropout)]

        self.layers = nn.Sequential(
            *([] if first else preact(in_channels)),
            SameConv1d(in_channels, mid, 1),
            *preact(mid),
            SameConv1d(mid, mid, kernel_size, stride=stride, groups=groups),
            *preact(mid),
            SameConv1d(mid, out_channels, 1),
        )
        self.se = nn.Sequential(
            nn.Linear(out_channels, out_channels // 2), nn.SiLU(), nn.Linear(out_channels // 2, out_channels), nn.Sigmoid()
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.layers(x)
        out = out * self.se(out.mean(-1))[..., None]
        shortcut = x
        if self.stride > 1:  # max pool with "same" zero padding, window = stride
            shortcut = F.max_pool1d(F.pad(shortcut, _pool_pad(self.stride)), self.stride)
        grow = self.out_channels - self.in_channels
        if grow:
            shortcut = F.pad(shortcut, (0, 0, grow // 2, grow - grow // 2))
        return out + shortcut


def _pool_pad(kernel_size: int) -> tuple[int, int]:
    """The reference's ``MyMaxPool1dPadSame``: ``kernel_size - 1`` zeros, split left/right (extra on the right)."""
    total = kernel_size - 1
    return total // 2, total - total // 2


class Net1D(nn.Module):
    """Net1D(in_channels, num_outputs, widths, blocks, ...): stem, stages of :class:`Net1DBlock`, mean over time, Linear."""

    def __init__(
        self,
        in_channels: int,
        num_outputs: int,
        base_filters: int = 256,
        widths: Sequence[int] = (256, 512, 512, 1024, 1024, 2048, 2048),
        blocks: Sequence[int] = (2, 2, 2, 2, 2, 2, 2),
        kernel_size: int = 16,
        stride: int = 2,
        groups: int = 32,
        ratio: float = 1.0,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if len(widths) != len(blocks):
            raise ValueError(f"net1d: widths {list(widths)} and blocks {list(blocks)} must have one entry per stage")
        self.stem = nn.Sequential(
            SameConv1d(in_channels, base_filters, kernel_size, stride=2), nn.BatchNorm1d(base_filters), nn.SiLU()
        )
        layers, channels = [], base_filters
        for stage, (width, count) in enumerate(zip(widths, blocks)):
            for index in range(count):
                first = stage == 0 and index == 0
                layers.append(
                    Net1DBlock(channels, width, ratio, kernel_size, stride if index == 0 else 1, groups, dropout, first)
                )
                channels = width
        self.blocks = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.blocks(self.stem(x)).mean(-1))


@register_network("net1d")
def build_net1d(spec: TaskSpec, dropout: float = 0.5, **options: Any) -> nn.Module:
    """Net1D for a 1-D point task; ``options`` are :class:`Net1D`'s (``model.dropout``: the blocks' dropout, reference 0.5)."""
    if spec.dims != 1 or spec.kind != "point":
        raise ValueError(f"net1d needs a 1-D point task; {spec.name} is {spec.dims}-D {spec.kind}")
    return Net1D(spec.in_channels, spec.num_outputs, dropout=dropout, **options)


register_expert(
    Expert(
        task="ecg",
        title="Net1D (hsd1503/resnet1d; base 256, 7 stages x 2 blocks, kernel 16, 32 groups)",
        source="expert/ECG/resnet1d/test_physionet_net1d.py",
        defaults={
            "model.network": "net1d",
            "model.dropout": 0.5,
            "model.optimizer": "adam",
            "model.lr": 1e-3,
            "model.weight_decay": 1e-3,
            # ReduceLROnPlateau(factor 0.1, patience 10) stepped with the epoch index as its "loss", which never
            # improves: the rate drops x0.1 after epochs 11, 22, 33 and 44
            "model.schedule": "multistep",
            "model.milestones": [12, 23, 34, 45],
            "model.gamma": 0.1,
            "trainer.max_epochs": 50,
            "data.batch_size": 32,
        },
    )
)
