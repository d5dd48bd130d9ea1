"""Output heads: pooled linear classifiers for point tasks, per-position linear maps for dense tasks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PointHead", "DenseHead", "build_head"]


class PointHead(nn.Module):
    """Average pooling over the spatial axes, then ``Linear(in_channels, num_outputs)``.

    ``pool="global"`` averages the whole map. An integer ``pool=k`` applies a fixed
    ``k``-window average pool and flattens, as the reference WRN does with
    ``avg_pool2d(8)``: on maps larger than ``k`` that keeps only the top-left window(s)
    (the Spherical CIFAR-100 quirk), and the flattened size must equal ``in_channels``.
    """

    def __init__(self, in_channels: int, num_outputs: int, pool: str | int = "global") -> None:
        super().__init__()
        if pool != "global" and not (isinstance(pool, int) and pool > 0):
            raise ValueError(f"pool must be 'global' or a positive window size, got {pool!r}")
        self.pool = pool
        self.fc = nn.Linear(in_channels, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        if self.pool == "global":
            x = x.flatten(2).mean(dim=2)
        else:
            pool = F.avg_pool1d if x.dim() == 3 else F.avg_pool2d
            x = pool(x, self.pool).flatten(1)
            if x.shape[1] != self.fc.in_features:
                raise ValueError(
                    f"pool={self.pool} leaves {x.shape[1]} features but the classifier expects {self.fc.in_features}; "
                    "use pool='global' for this input size"
                )
        return self.fc(x)


class DenseHead(nn.Module):
    """A ``Linear`` applied at every position (channels-last), returning channels-first output."""

    def __init__(self, in_channels: int, num_outputs: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(x.movedim(1, -1)).movedim(-1, 1)


def build_head(kind: str, in_channels: int, num_outputs: int, pool: str | int = "global") -> nn.Module:
    if kind == "point":
        return PointHead(in_channels, num_outputs, pool)
    if kind == "dense":
        return DenseHead(in_channels, num_outputs)
    raise ValueError(f"head kind must be 'point' or 'dense', got {kind!r}")
