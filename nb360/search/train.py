"""The LightningModule that trains a fixed network on a task.

Loss, metric and reference optimiser settings come from the task's spec; any of them
can be overridden from the command line (``--model.lr 0.01``). Batches are dicts with
``x``, ``y`` and task-specific extra keys, which go to the loss and the metric.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from nb360.errors import UsageError
from nb360.models import build_network
from nb360.search.task_module import TaskModule
from nb360.tasks import reference_lr_factor

__all__ = ["TrainModule", "build_scheduler"]

Schedule = Literal["step", "cosine", "constant"]


class TrainModule(TaskModule):
    """Train ``network`` on ``task`` with SGD and the NB360 schedule.

    Args:
        task: registered task name.
        network: registered network name (``wrn``: WRN-16-4 / dense WRN-16-4 / ResNet1D by task).
        network_options: options of the network builder (e.g. ``{"pool": "global"}``).
        lr, momentum, weight_decay, nesterov: SGD settings; ``None`` takes the task's reference.
            Nesterov is switched off when momentum is 0, as in the reference.
        dropout: dropout rate inside the network's blocks (ignored by ResNet1D, as in the reference).
        schedule: ``step`` (x0.2 at 30/60/80 % of the epochs, the NB360 default), ``cosine`` or ``constant``.
        min_lr: the cosine schedule's final learning rate.
        metric_options: keyword arguments for the task's metric (e.g. ``{"aggregation": "batch"}``).
    """

    def __init__(
        self,
        task: str = "darcy",
        network: str = "wrn",
        network_options: dict[str, Any] | None = None,
        lr: float | None = None,
        momentum: float | None = None,
        weight_decay: float | None = None,
        nesterov: bool | None = None,
        dropout: float = 0.0,
        schedule: Schedule = "step",
        min_lr: float = 0.0,
        metric_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(task, metric_options)
        self.save_hyperparameters()
        spec = self.spec
        ref = spec.reference
        self.lr = ref.lr if lr is None else lr
        self.momentum = ref.momentum if momentum is None else momentum
        self.weight_decay = ref.weight_decay if weight_decay is None else weight_decay
        self.nesterov = (ref.nesterov if nesterov is None else nesterov) and self.momentum > 0
        self.schedule, self.min_lr = schedule, min_lr
        self.net = build_network(network, spec, dropout=dropout, **(network_options or {}))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.batch_loss(batch)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(batch["x"]), sync_dist=True)
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(
            self.net.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay, nesterov=self.nesterov
        )
        scheduler = build_scheduler(optimizer, self.schedule, self.trainer.max_epochs, self.min_lr)
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


def build_scheduler(
    optimizer: torch.optim.Optimizer, schedule: Schedule, epochs: int | None, min_lr: float = 0.0
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-epoch learning-rate schedule over ``epochs`` epochs (``None`` for a constant rate)."""
    if schedule == "constant":
        return None
    if not epochs or epochs < 1:
        raise UsageError(f"schedule {schedule!r} needs a positive number of epochs")
    if schedule == "step":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: reference_lr_factor(e, epochs))
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=min_lr)
