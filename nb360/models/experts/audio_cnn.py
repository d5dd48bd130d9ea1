"""FSD50K's expert: the VGG-like baseline of the FSD50K paper (Fonseca et al. 2022), as fsd50k-pytorch writes it.

Reference: NB ``expert/FSD50k/fsd50k-pytorch`` (``src/models/vgglike.py``, ``cfgs/vgglike_chunks_melspec.cfg``,
``train_fsd50k_chunks.py``). That repository offers four baselines (VGG-like, ResNet-18, CRNN,
DenseNet-121) and NB360 does not record which one it reports; nb360 uses the VGG-like network,
the FSD50K paper's best (mAP 0.434) and the one whose configuration matches NB360's log-mel
patches. Three stages of unpadded 3x3 conv-BN-ReLU (three of 32 channels, two of 64, two of
128) with 2x2 max pooling between them, then the global average and the global max of the last
map, concatenated, into a linear layer. Trained with Adam lr 1e-3, batch 256, 100 epochs,
binary cross-entropy on the 200 labels.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nb360.models import register_network
from nb360.search.expert import Expert, register_expert
from nb360.tasks import TaskSpec

__all__ = ["VGGLike"]


class VGGLike(nn.Module):
    """Input ``(batch, in_channels, mel bins, frames)``; output ``(batch, num_outputs)`` logits.

    ``stages`` lists each stage's (channels, convolutions); the input must be at least 22 x 22
    with the reference stages (each unpadded convolution trims 2 points, each pooling halves).
    """

    def __init__(
        self, in_channels: int = 1, num_outputs: int = 200, stages: tuple[tuple[int, int], ...] = ((32, 3), (64, 2), (128, 2))
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i, (width, convs) in enumerate(stages):
            if i:
                layers.append(nn.MaxPool2d(2, 2))
            for _ in range(convs):
                layers += [nn.Conv2d(channels, width, 3), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                channels = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(2 * channels, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x).flatten(2)
        return self.fc(torch.cat([x.mean(dim=2), x.amax(dim=2)], dim=1))


@register_network("vgglike")
def build_vgglike(
    spec: TaskSpec, stages: tuple[tuple[int, int], ...] = ((32, 3), (64, 2), (128, 2)), dropout: float = 0.0
) -> nn.Module:
    """The VGG-like audio tagger for a 2-D point task (FSD50K's expert); it has no dropout."""
    if spec.dims != 2 or spec.kind != "point":
        raise ValueError(f"vgglike needs a 2-D point task; {spec.name} is {spec.dims}-D {spec.kind}")
    if dropout:
        raise ValueError("vgglike has no dropout (the reference uses none); leave model.dropout at 0")
    return VGGLike(spec.in_channels, spec.num_outputs, tuple((int(w), int(n)) for w, n in stages))


register_expert(
    Expert(
        task="fsd50k",
        title="VGG-like CNN (FSD50K baseline)",
        source="expert/FSD50k/fsd50k-pytorch/cfgs/vgglike_chunks_melspec.cfg",
        defaults={
            "model.network": "vgglike",
            "model.optimizer": "adam",
            "model.lr": 1e-3,
            "model.weight_decay": 0.0,
            # the reference lowers the rate x0.1 when val mAP has not improved for 5 epochs; nb360 keeps it constant
            "model.schedule": "constant",
            "trainer.max_epochs": 100,
            "data.batch_size": 256,
        },
    )
)
