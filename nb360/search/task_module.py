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
import torch
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

    def log_epoch_mean(self, name: str, value: Tensor, batch_size: int) -> None:
        """Add ``value`` (a batch mean) to the epoch's batch-size-weighted mean of ``name``, logged at the epoch's end.

        The same value as ``self.log(name, value, on_step=False, on_epoch=True, batch_size=batch_size,
        sync_dist=True)``, accumulated the same way (a float sum of ``value * batch_size`` and a sample count,
        averaged over processes, then divided), without the per-step cost of ``self.log`` (about a millisecond
        of Python per call): training steps call this, and the means are logged after the epoch's last batch.
        """
        sums = self.__dict__.setdefault("_epoch_sums", {})
        if sums.get(name) is None or sums[name][2] != self.current_epoch:
            zero = torch.tensor(0.0, dtype=torch.get_default_dtype(), device=value.device)
            sums[name] = [zero, 0, self.current_epoch]
        value = value.detach()
        if value.dtype not in (torch.float32, torch.float64):
            value = value.to(torch.get_default_dtype())
        entry = sums[name]
        entry[0] = entry[0] + value * batch_size  # as Lightning accumulates (no in-place add: type promotion)
        entry[1] += batch_size

    def log_epoch_means(self) -> None:
        """Log the means :meth:`log_epoch_mean` accumulated this epoch (an ``on_train_epoch_end`` override calls it)."""
        sums = self.__dict__.get("_epoch_sums") or {}
        reduce = self.trainer.strategy.reduce
        for name, (total, count, epoch) in list(sums.items()):
            if epoch != self.current_epoch or count == 0:
                continue
            total = reduce(total.clone(), reduce_op="mean")
            count = reduce(torch.tensor(count, device=total.device), reduce_op="mean")
            self.log(name, total / count, on_step=False, on_epoch=True, batch_size=1, sync_dist=True)
        sums.clear()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # after the epoch's last batch, so that callbacks see the means at their on_train_epoch_end, as they would
        # with self.log (a module's on_train_epoch_end runs after the callbacks'; an epoch cut short logs there)
        if batch_idx + 1 == self.trainer.num_training_batches:
            self.log_epoch_means()

    def on_train_epoch_end(self) -> None:
        self.log_epoch_means()

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
        """The task's training loss on one batch.

        A loss that sums over the batch (Darcy's) is multiplied by the number of processes and of accumulated
        batches: DDP averages the processes' gradients and Lightning divides an accumulated loss by the number of
        batches, which would otherwise train on a fraction of the sum over the global batch that one process
        with the same global batch size trains on.
        """
        x, y, extras = self._split(batch)
        loss = self.loss(self(x), y, **extras)
        trainer = self._trainer
        if getattr(self.loss, "sums_over_batch", False) and trainer is not None:
            share = trainer.world_size * trainer.accumulate_grad_batches
            if share > 1:
                loss = loss * share
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
