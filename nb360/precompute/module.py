"""Training one architecture the way a tabular benchmark records it: every epoch scored on every evaluation set.

:class:`RecordingModule` is the fixed-network :class:`~nb360.search.train.TrainModule`
plus a record of what NB201's ``evaluate_for_seed`` keeps per epoch: the training loss
and metric (running over the epoch, in training mode), the loss, metric and wall time
of each evaluation set, the training time, and the forward latency of full evaluation
batches in the last epoch. The record is saved in Lightning checkpoints, so an
interrupted architecture resumes where it stopped with its history intact.
:class:`EvalSetsDataModule` gives it a training set and several named evaluation sets.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from nb360.datamodules.base import TaskDataModule
from nb360.metrics import build_metric
from nb360.search.train import TrainModule

__all__ = ["RecordingModule", "EvalSetsDataModule"]


class EvalSetsDataModule(pl.LightningDataModule):
    """Training batches from ``train``'s training part; one validation loader per named evaluation set.

    ``eval_sets`` maps a set's stored name (``ori-test``, ``x-valid``, ...) to the DataModule
    and part (``val`` or ``test``) that holds it. Decoding and evaluation-time prediction
    (``output_decoder``, ``eval_forward``) are the task's, from ``train``. The DataModules
    are prepared and set up once by the caller and reused for every architecture.
    """

    def __init__(self, train: TaskDataModule, eval_sets: Mapping[str, tuple[TaskDataModule, str]]) -> None:
        super().__init__()
        self.train = train
        self.eval_sets = dict(eval_sets)

    @property
    def names(self) -> list[str]:
        return list(self.eval_sets)

    def train_dataloader(self) -> DataLoader:
        return self.train.train_dataloader()

    def val_dataloader(self) -> list[DataLoader]:
        return [dm._loader(part, train=False) for dm, part in self.eval_sets.values()]

    def output_decoder(self) -> nn.Module:
        return self.train.output_decoder()

    def eval_forward(self, forward: Any, batch: dict[str, Tensor]) -> Tensor:
        return self.train.eval_forward(forward, batch)


class RecordingModule(TrainModule):
    """A :class:`TrainModule` that records per-epoch results for a tabular benchmark.

    Args:
        eval_sets: names of the evaluation sets, in the order of the DataModule's validation loaders.
        other arguments: those of :class:`TrainModule`.
    """

    def __init__(self, eval_sets: list[str], **train_options: Any) -> None:
        super().__init__(**train_options)
        self.eval_names = list(eval_sets)
        options = {**self.spec.metric_kwargs, **(train_options.get("metric_options") or {})}
        self.train_metric = build_metric(self.spec.metric, **options)
        self.eval_metrics = nn.ModuleList(build_metric(self.spec.metric, **options) for _ in self.eval_names)
        self.history: list[dict[str, Any]] = []
        self.latency: list[float] = []
        self._latency_batch = 0
        self._loss_sums: dict[str, list[float]] = {}
        self._started: dict[str, float] = {}
        self._elapsed: dict[str, float] = {}
        self._running: str | None = None

    # ---------------------------------------------------------------- training
    def on_train_epoch_start(self) -> None:
        self._loss_sums, self._elapsed = {}, {}
        self._start_clock("train")

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        x, y, extras = self._split(batch)
        out = self(x)
        loss = self.loss(out, y, **extras)
        self.train_metric.update(out.detach(), y, **extras)
        self._add_loss("train", loss, len(x))
        return loss

    # -------------------------------------------------------------- evaluation
    def on_validation_epoch_start(self) -> None:
        self._stop_clock()  # the training part of the epoch ends where its evaluation starts

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        name = self.eval_names[dataloader_idx]
        if batch_idx == 0:
            self._start_clock(name)
            if dataloader_idx == 0:
                self.latency, self._latency_batch = [], 0
        x, y, extras = self._split(batch)
        start = time.perf_counter()
        out = self._evaluate(batch)
        if out.is_cuda:
            torch.cuda.synchronize(out.device)
        if dataloader_idx == 0:
            self._record_latency(len(x), time.perf_counter() - start)
        self.eval_metrics[dataloader_idx].update(out, y, **extras)
        self._add_loss(name, self.loss(out, y, **extras), len(x))

    def on_validation_epoch_end(self) -> None:
        self._stop_clock()
        if self.trainer.sanity_checking:
            return
        record: dict[str, Any] = {"epoch": self.current_epoch, "train": self._summary("train", self.train_metric)}
        record["evals"] = {name: self._summary(name, metric) for name, metric in zip(self.eval_names, self.eval_metrics)}
        self.history.append(record)

    # ------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["nb360_record"] = {"history": self.history, "latency": self.latency}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        record = checkpoint.get("nb360_record", {})
        self.history = list(record.get("history", []))
        self.latency = list(record.get("latency", []))

    def final_latency(self) -> list[float]:
        """Latencies of the last evaluation, without the first (warm-up) one when more than two were taken."""
        return self.latency[1:] if len(self.latency) > 2 else list(self.latency)

    # ----------------------------------------------------------------- helpers
    def _start_clock(self, name: str) -> None:
        self._stop_clock()
        self._running, self._started[name] = name, time.perf_counter()

    def _stop_clock(self) -> None:
        if self._running is not None:
            self._elapsed[self._running] = time.perf_counter() - self._started[self._running]
            self._running = None

    def _add_loss(self, name: str, loss: Tensor, n: int) -> None:
        sums = self._loss_sums.setdefault(name, [0.0, 0])
        sums[0] += float(loss.detach()) * n
        sums[1] += n

    def _record_latency(self, n: int, seconds: float) -> None:
        """Seconds per forward pass, over batches of the first batch's size (as NB201 keeps them)."""
        if not self.latency:
            self._latency_batch = n
        if n == self._latency_batch:
            self.latency.append(seconds)

    def _summary(self, name: str, metric: Any) -> dict[str, float]:
        total, count = self._loss_sums.get(name, (0.0, 0))
        value = float(metric.compute()) if count else float("nan")
        metric.reset()
        nan = float("nan")
        return {"loss": total / count if count else nan, "metric": value, "time": self._elapsed.get(name, nan)}
