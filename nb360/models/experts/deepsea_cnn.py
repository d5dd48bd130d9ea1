"""DeepSEA's expert: the DeepSEA CNN (Zhou & Troyanskaya 2015) as NB360's TF2 reimplementation builds it.

NB ``expert/DeepSEA/Bioinfor-DeepSEA/{model,main}.py``: three bias-free convolutions of
kernel 8 ("same" padding, ReLU) with 320, 480 and 960 filters; max pooling 4 ("same"
padding: 1000 -> 250 -> 63) after the first two; dropout 0.2, 0.2, 0.5; flatten
(63 x 960); bias-free Dense 925 + ReLU; bias-free Dense to the task's labels (36 here,
919 in the original DeepSEA). The reference's sigmoid output and BCE are the task's
``bce_with_logits`` on the returned logits.

Every kernel carries an L2 penalty of 5e-7 (the gradient of ``5e-7 * w**2`` is SGD weight
decay 1e-6) and a max-norm constraint 0.9: after every update Keras rescales each kernel
slice whose L2 norm along axis 0 exceeds 0.9 (per (input, filter) pair over the 8 taps
for the convolutions, per unit over its inputs for the dense layers). Here the
projection runs before every forward pass, which gives the same weights to every
forward and leaves the optimiser state alone, as Keras does. Training: SGD lr 0.01
(Keras' default) with momentum 0.9, batch 64, 60 epochs, early stopping after 5 epochs
without a lower validation loss (search split only: the final split has no validation set).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping
from torch import Tensor, nn

from nb360.models import register_network
from nb360.models.experts.runs import fit_and_test_with
from nb360.models.ops import SamePadConv
from nb360.run import RunContext
from nb360.search.expert import Expert, register_expert
from nb360.tasks import TaskSpec

__all__ = ["DeepSEACNN", "max_norm_"]


def max_norm_(weight: Tensor, max_value: float, dims: tuple[int, ...]) -> None:
    """Keras ``MaxNorm``: rescale in place the slices whose L2 norm over ``dims`` exceeds ``max_value``."""
    norms = weight.norm(dim=dims, keepdim=True)
    weight.mul_(norms.clamp(max=max_value) / (norms + 1e-7))  # Keras: w * clip(n, 0, max) / (epsilon + n)


def _pooled(length: int, size: int) -> int:
    return -(-length // size)


def _same_pool(x: Tensor, size: int) -> Tensor:
    """TensorFlow "same" max pooling, window = stride = ``size``: output ``ceil(L / size)``; the padding (ignored by
    the max) is split as TensorFlow splits it, the odd element on the right (250 -> 63 pads 1 left and 1 right)."""
    extra = -x.shape[-1] % size
    return F.max_pool1d(F.pad(x, (extra // 2, extra - extra // 2), value=float("-inf")) if extra else x, size)


class DeepSEACNN(nn.Module):
    """conv(320)-pool-drop-conv(480)-pool-drop-conv(960)-drop-flatten-dense(925)-dense(outputs), all bias-free."""

    def __init__(
        self,
        in_channels: int,
        length: int,
        num_outputs: int,
        channels: tuple[int, int, int] = (320, 480, 960),
        kernel_size: int = 8,
        pool: int = 4,
        dropout: tuple[float, float, float] = (0.2, 0.2, 0.5),
        hidden: int = 925,
        max_norm: float | None = 0.9,
    ) -> None:
        super().__init__()
        self.pool, self.max_norm = pool, max_norm
        widths = (in_channels, *channels)
        self.convs = nn.ModuleList(SamePadConv(1, widths[i], widths[i + 1], kernel_size, bias=False) for i in range(3))
        self.drops = nn.ModuleList(nn.Dropout(p) for p in dropout)
        flat = channels[2] * _pooled(_pooled(length, pool), pool)
        self.dense = nn.Linear(flat, hidden, bias=False)
        self.out = nn.Linear(hidden, num_outputs, bias=False)
        for weight in (*(conv.conv.weight for conv in self.convs), self.dense.weight, self.out.weight):
            nn.init.xavier_uniform_(weight)  # Keras' glorot_uniform default
        if max_norm is not None:
            self.register_forward_pre_hook(lambda module, args: module.constrain())

    @torch.no_grad()
    def constrain(self) -> None:
        """Apply the max-norm constraint (Keras axis 0: the kernel's taps for convs, a unit's inputs for dense layers)."""
        for conv in self.convs:
            max_norm_(conv.conv.weight, self.max_norm, (2,))
        for linear in (self.dense, self.out):
            max_norm_(linear.weight, self.max_norm, (1,))

    def forward(self, x: Tensor) -> Tensor:
        for index, (conv, drop) in enumerate(zip(self.convs, self.drops)):
            x = F.relu(conv(x))
            if index < 2:
                x = _same_pool(x, self.pool)
            x = drop(x)
        x = x.transpose(1, 2).flatten(1)  # Keras flattens (length, channels)
        return self.out(F.relu(self.dense(x)))


@register_network("deepsea_cnn")
def build_deepsea_cnn(
    spec: TaskSpec, dropout: float = 0.0, hidden: int = 925, max_norm: float | None = 0.9, **options: Any
) -> nn.Module:
    """The DeepSEA CNN for a 1-D point task; its dropout rates are fixed (0.2, 0.2, 0.5), so ``model.dropout`` must be 0."""
    if dropout:
        raise ValueError("deepsea_cnn has its own dropout rates (0.2, 0.2, 0.5); leave model.dropout at 0")
    if spec.dims != 1 or spec.kind != "point":
        raise ValueError(f"deepsea_cnn needs a 1-D point task; {spec.name} is {spec.dims}-D {spec.kind}")
    channels, length = spec.input_shape
    return DeepSEACNN(channels, length, spec.num_outputs, hidden=hidden, max_norm=max_norm, **options)


def fit_with_early_stopping(ctx: RunContext) -> dict[str, Any]:
    """The ordinary fit + test, stopped after 5 epochs without a lower validation loss (Keras ``EarlyStopping``)."""
    validated = getattr(ctx.datamodule, "has_validation", False)
    return fit_and_test_with(ctx, [EarlyStopping("val/loss", patience=5, mode="min")] if validated else [])


register_expert(
    Expert(
        task="deepsea",
        title="DeepSEA CNN (conv 320/480/960, dense 925)",
        source="expert/DeepSEA/Bioinfor-DeepSEA/main.py",
        defaults={
            "model.network": "deepsea_cnn",
            "model.optimizer": "sgd",
            "model.lr": 0.01,
            "model.momentum": 0.9,
            "model.nesterov": False,
            "model.weight_decay": 1e-6,
            "model.schedule": "constant",
            "trainer.max_epochs": 60,
            "data.batch_size": 64,
        },
        run=fit_with_early_stopping,
    )
)
