"""NinaPro DB5's expert: the Keras attention + dense sEMG classifier of NB360, in PyTorch.

Reference: NB ``expert/NinaPro/semg_repro/repro.py`` (``dense_model`` with ``attention_simple``)
on windows of 52 time steps x 16 electrodes: batch norm over the time axis (one statistic per
time step; Keras ``axis=1``, momentum 0.99, eps 1e-3), a pointwise ``Dense(128)`` with Mish and
layer norm, temporal attention (a ``Dense(timesteps)`` with softmax over time, applied to every
feature's time series, then a weighted sum over time), three blocks dropout(0.36)-Dense-Mish-
layer norm of 500, 500 and 2000 units, and a linear classifier (its softmax belongs to the
focal loss here). Weights use Keras' Glorot-uniform initialisation and zero biases. nb360's
NinaPro inputs are (1, 16, 52) images (electrodes x time): they are transposed back to the
reference's (time, electrodes) layout.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from nb360.models import register_network
from nb360.search.expert import Expert, register_expert
from nb360.tasks import TaskSpec

__all__ = ["AttentionDense"]


class _DenseMishNorm(nn.Module):
    """Dropout, ``Linear``, Mish, layer norm (the reference's hidden layer; its layer norm has eps 1e-5)."""

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = dropout
        self.fc = nn.Linear(in_features, out_features)
        self.norm = nn.LayerNorm(out_features, eps=1e-5)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(F.mish(self.fc(F.dropout(x, self.dropout, self.training))))


class AttentionDense(nn.Module):
    """Input ``(batch, 1, electrodes, timesteps)``; output ``(batch, num_outputs)`` logits."""

    def __init__(
        self,
        electrodes: int = 16,
        timesteps: int = 52,
        num_outputs: int = 18,
        embedding: int = 128,
        hidden: tuple[int, ...] = (500, 500, 2000),
        dropout: float = 0.36,
    ) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(timesteps, eps=1e-3, momentum=0.01)
        self.embed = _DenseMishNorm(electrodes, embedding)
        self.attention = nn.Linear(timesteps, timesteps)
        widths = (embedding, *hidden)
        self.hidden = nn.Sequential(*(_DenseMishNorm(a, b, dropout) for a, b in zip(widths, widths[1:])))
        self.fc = nn.Linear(widths[-1], num_outputs)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm(x.squeeze(1).transpose(1, 2))  # (batch, timesteps, electrodes), normalised per time step
        x = self.embed(x)  # (batch, timesteps, embedding)
        weights = self.attention(x.transpose(1, 2)).softmax(dim=-1)  # (batch, embedding, timesteps): over time
        x = (x * weights.transpose(1, 2)).sum(dim=1)  # (batch, embedding)
        return self.fc(self.hidden(x))


@register_network("ninapro_attention")
def build_ninapro_attention(
    spec: TaskSpec, embedding: int = 128, hidden: tuple[int, ...] = (500, 500, 2000), dropout: float = 0.36
) -> nn.Module:
    """The attention + dense classifier for a ``(1, electrodes, timesteps)`` point task (NinaPro's expert)."""
    if spec.dims != 2 or spec.kind != "point" or spec.in_channels != 1:
        raise ValueError(f"ninapro_attention needs a one-channel 2-D point task; {spec.name} has input {spec.input_shape}")
    _, electrodes, timesteps = spec.input_shape
    return AttentionDense(electrodes, timesteps, spec.num_outputs, embedding, tuple(hidden), dropout)


register_expert(
    Expert(
        task="ninapro",
        title="attention + dense sEMG classifier",
        source="expert/NinaPro/semg_repro/repro.py",
        defaults={
            "model.network": "ninapro_attention",
            "model.dropout": 0.36,
            "model.loss": "focal",
            "model.optimizer": "ranger",  # RAdam inside Lookahead (k 6, alpha 0.5), Keras' epsilon
            "model.optimizer_options": {"eps": 1e-7},
            "model.lr": 1e-3,
            "model.weight_decay": 0.0,
            "model.schedule": "cosine",
            "model.min_lr": 1e-5,
            "model.flat_epochs": 5,  # the reference's cosine starts at epoch 5 and spans the other 200
            "trainer.max_epochs": 205,
            "data.batch_size": 128,
            "data.eval_batch_size": 128,
        },
    )
)
