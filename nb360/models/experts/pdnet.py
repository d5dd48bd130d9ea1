"""PSICOV's expert: PDNet's dilated residual network for real-valued distances (Adhikari 2020), in PyTorch.

Reference: NB ``expert/PSICOV/pdnet/{models.py,train.py}`` (Keras ``deepcon_rdd_distances``):
BN-ReLU-conv1x1 to ``width`` channels; ``blocks`` residual blocks of BN-ReLU-conv3x3-dropout(0.3)-
ReLU-conv3x3 whose second convolution is dilated 1, 2, 4, 1, 2, 4, ...; BN-ReLU-conv3x3 to one
channel and a final ReLU (distances are non-negative). Trained with the log-cosh loss, RMSprop and
batch 2 on 128 x 128 crops whose targets are clipped at 16 A. The reference records neither depth
nor epochs for the NB360 run; its ``train.py`` example (``-d 128 -f 16 -e 64 -c 128``) gives
128 blocks of 16 filters and 64 epochs, which are the defaults here. Keras' choices are kept:
convolutions with bias and Glorot-uniform weights, batch norm with momentum 0.99 and eps 1e-3.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from nb360.models import register_network
from nb360.search.expert import Expert, register_expert
from nb360.tasks import TaskSpec

__all__ = ["DilatedResidualBlock", "PDNet"]


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3, momentum=0.01)  # Keras' defaults (its momentum is torch's 1 - momentum)


class DilatedResidualBlock(nn.Module):
    """``x + conv3x3_dilated(relu(dropout(conv3x3(relu(bn(x))))))``."""

    def __init__(self, channels: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.bn = _bn(channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        out = F.dropout(self.conv1(F.relu(self.bn(x))), self.dropout, self.training)
        return x + self.conv2(F.relu(out))


class PDNet(nn.Module):
    """Input ``(batch, in_channels, L, L)`` pair features; output ``(batch, num_outputs, L, L)`` non-negative distances."""

    def __init__(
        self, in_channels: int = 57, num_outputs: int = 1, blocks: int = 128, width: int = 16, dropout: float = 0.3
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(_bn(in_channels), nn.ReLU(), nn.Conv2d(in_channels, width, 1))
        dilations = (1, 2, 4)
        self.blocks = nn.Sequential(*(DilatedResidualBlock(width, dilations[i % 3], dropout) for i in range(blocks)))
        self.out = nn.Sequential(_bn(width), nn.ReLU(), nn.Conv2d(width, num_outputs, 3, padding=1), nn.ReLU())
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.blocks(self.stem(x)))


@register_network("pdnet")
def build_pdnet(spec: TaskSpec, blocks: int = 128, width: int = 16, dropout: float = 0.3) -> nn.Module:
    """PDNet for a 2-D dense task (PSICOV's expert: 128 blocks of 16 filters, dropout 0.3)."""
    if spec.dims != 2 or spec.kind != "dense":
        raise ValueError(f"pdnet needs a 2-D dense task; {spec.name} is {spec.dims}-D {spec.kind}")
    return PDNet(spec.in_channels, spec.num_outputs, blocks, width, dropout)


register_expert(
    Expert(
        task="psicov",
        title="PDNet dilated ResNet (128 blocks, 16 filters)",
        source="expert/PSICOV/pdnet/train.py",
        defaults={
            "model.network": "pdnet",
            "model.network_options": {"blocks": 128, "width": 16},
            "model.dropout": 0.3,
            "model.loss": "logcosh",
            "model.optimizer": "rmsprop",
            "model.optimizer_options": {"alpha": 0.9, "eps": 1e-7},  # Keras' rho and epsilon
            "model.lr": 1e-3,
            "model.momentum": 0.0,
            "model.weight_decay": 0.0,
            "model.schedule": "constant",
            "trainer.max_epochs": 64,
            "data.batch_size": 2,
        },
    )
)
