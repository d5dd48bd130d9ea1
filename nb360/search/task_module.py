"""What every LightningModule of nb360 shares: the task's loss, metrics, output decoding and evaluation steps.

Subclasses set ``self.net`` (the network, or a supernet) and define how they train:
:class:`~nb360.search.train.TrainModule` trains a fixed network with one optimiser,
:class:`~nb360.search.bilevel.SearchModule` alternates weight and architecture steps.
Validation and test are the same for all: the task's DataModule decides which prediction
is scored (``eval_forward``), and the task's metric scores it.
"""

from __future__ import annotations

import inspect
from typing import Any

import lightning.pytorch as pl
from torch import Tensor, nn

from nb360.losses import build_loss
from nb360.metrics import build_metric, metric_class, metric_name
from nb360.models import count_parameters
from nb360.tasks import TaskSpec, get_task

__all__ = ["TaskModule"]


class TaskModule(pl.LightningModule):
    """Loss, metrics and evaluation of ``task``; ``metric_options`` are keyword arguments of its metrics."""

    net: nn.Module

    def __init__(self, task: str, metric_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.spec: TaskSpec = get_task(task)
        spec = self.spec
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

    def batch_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """The task's training loss on one batch."""
        x, y, extras = self._split(batch)
        return self.loss(self(x), y, **extras)

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
