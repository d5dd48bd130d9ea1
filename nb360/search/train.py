"""The one LightningModule that trains a fixed network on a task.

Loss, metric and reference optimiser settings come from the task's spec; any of them
can be overridden from the command line (``--model.lr 0.01``). Batches are dicts with
``x``, ``y`` and task-specific extra keys, which go to the loss and the metric.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from nb360.errors import UsageError
from nb360.losses import build_loss
from nb360.metrics import build_metric, metric_class, metric_name
from nb360.models import build_network, count_parameters
from nb360.tasks import get_task, reference_lr_factor

__all__ = ["TrainModule"]

Schedule = Literal["step", "cosine", "constant"]


class TrainModule(pl.LightningModule):
    """Train ``network`` on ``task`` with SGD and the NB360 schedule.

    Args:
        task: registered task name.
        network: registered network name (``wrn``: WRN-16-4 / dense WRN-16-4 / ResNet1D by task).
        network_options: options of the network builder (e.g. ``{"pool": "global"}``).
        lr, momentum, weight_decay, nesterov: SGD settings; ``None`` takes the task's reference.
            Nesterov is switched off when momentum is 0, as in the reference.
        dropout: dropout rate inside the network's blocks (ignored by ResNet1D, as in the reference).
        schedule: ``step`` (x0.2 at 30/60/80 % of the epochs, the NB360 default), ``cosine`` or ``constant``.
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
        metric_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        spec = get_task(task)
        ref = spec.reference
        self.lr = ref.lr if lr is None else lr
        self.momentum = ref.momentum if momentum is None else momentum
        self.weight_decay = ref.weight_decay if weight_decay is None else weight_decay
        self.nesterov = (ref.nesterov if nesterov is None else nesterov) and self.momentum > 0
        self.schedule = schedule
        self.net = build_network(network, spec, dropout=dropout, **(network_options or {}))
        self.loss = build_loss(spec.loss)
        self.decoder: nn.Module = nn.Identity()
        self.metric_name = metric_name(metric_class(spec.metric))
        options = {**spec.metric_kwargs, **(metric_options or {})}
        self.val_metric = build_metric(spec.metric, **options)
        self.test_metrics = nn.ModuleDict({self.metric_name: build_metric(spec.metric, **options)})
        for extra in spec.extra_metrics:  # e.g. Cosmic's FNR, with the options it shares (use_ignore_mask)
            cls = metric_class(extra)
            accepted = inspect.signature(cls.__init__).parameters
            self.test_metrics[metric_name(cls)] = cls(**{k: v for k, v in options.items() if k in accepted})

    @property
    def num_parameters(self) -> int:
        return count_parameters(self.net)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "output_decoder"):
            self.decoder = datamodule.output_decoder()

    def forward(self, x: Tensor) -> Tensor:
        """Network output in the units of the targets."""
        return self.decoder(self.net(x))

    def _evaluate(self, batch: dict[str, Tensor]) -> Tensor:
        """The prediction the metrics score; the task's DataModule decides how (see ``eval_forward``)."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "eval_forward"):
            return datamodule.eval_forward(self, batch)
        return self(batch["x"])

    @staticmethod
    def _split(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        extras = {k: v for k, v in batch.items() if k not in ("x", "y")}
        return batch["x"], batch["y"], extras

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x, y, extras = self._split(batch)
        loss = self.loss(self(x), y, **extras)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        x, y, extras = self._split(batch)
        out = self._evaluate(batch)
        self.log("val/loss", self.loss(out, y, **extras), on_epoch=True, batch_size=len(x), sync_dist=True)
        self.val_metric.update(out, y, **extras)
        self.log(f"val/{self.metric_name}", self.val_metric, on_epoch=True, prog_bar=True)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        _, y, extras = self._split(batch)
        out = self._evaluate(batch)
        for name, metric in self.test_metrics.items():
            metric.update(out, y, **extras)
            self.log(f"test/{name}", metric, on_epoch=True)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(
            self.net.parameters(), lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay, nesterov=self.nesterov
        )
        if self.schedule == "constant":
            return optimizer
        epochs = self.trainer.max_epochs
        if not epochs or epochs < 1:
            raise UsageError(f"schedule {self.schedule!r} needs a positive --trainer.max_epochs")
        if self.schedule == "step":
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: reference_lr_factor(e, epochs))
        else:
            scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
