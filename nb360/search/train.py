"""The LightningModule that trains a fixed network on a task.

Loss, metric and reference optimiser settings come from the task's spec; any of them
can be overridden from the command line (``--model.lr 0.01``). Batches are dicts with
``x``, ``y`` and task-specific extra keys, which go to the loss and the metric.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor

from nb360.errors import UsageError
from nb360.losses import build_loss
from nb360.models import build_network
from nb360.search.task_module import TaskModule
from nb360.tasks import reference_lr_factor

__all__ = ["TrainModule", "Lookahead", "build_optimizer", "build_scheduler"]

Schedule = Literal["step", "cosine", "constant", "steplr", "multistep"]
Optimizer = Literal["sgd", "adam", "adamw", "rmsprop", "ranger"]


class TrainModule(TaskModule):
    """Train ``network`` on ``task`` with SGD and the NB360 schedule.

    Args:
        task: registered task name.
        network: registered network name (``wrn``: WRN-16-4 / dense WRN-16-4 / ResNet1D by task).
        network_options: options of the network builder (e.g. ``{"pool": "global"}``).
        lr, momentum, weight_decay, nesterov: SGD settings; ``None`` takes the task's reference.
            Nesterov is switched off when momentum is 0, as in the reference.
        dropout: dropout rate inside the network's blocks (ignored by ResNet1D, as in the reference).
        schedule: ``step`` (x0.2 at 30/60/80 % of the epochs, the NB360 default), ``cosine``, ``constant``, or
            ``steplr`` (x``gamma`` every ``step_size`` epochs, as several expert models train), or ``multistep``
            (x``gamma`` at each epoch of ``milestones``).
        min_lr: the cosine schedule's final learning rate.
        flat_epochs: epochs at the initial rate before the cosine decay starts (it then spans the remaining epochs).
        milestones: the ``multistep`` schedule's epochs.
        optimizer: ``sgd`` (the NB360 default) or ``adam``/``adamw``/``rmsprop``/``ranger`` (baselines and expert
            models; ``momentum`` and ``nesterov`` apply to SGD, ``momentum`` also to RMSprop; ``ranger`` is RAdam
            inside :class:`Lookahead`).
        optimizer_options: further keyword arguments of the optimiser's constructor (e.g. Keras' RMSprop
            ``{"alpha": 0.9, "eps": 1e-7}``; for ``ranger`` also Lookahead's ``k`` and ``alpha``).
        step_size, gamma: the ``steplr`` schedule.
        loss: a loss of :mod:`nb360.losses` replacing the task's (e.g. an expert model's own loss).
        schedule_epochs: the length of the schedule (default: the trainer's ``max_epochs``); a
            multi-trial search that stops a trial early (Hyperband's small budgets) trains the
            first epochs of the full schedule, as a tabular benchmark's curves record them.
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
        schedule_epochs: int | None = None,
        optimizer: Optimizer = "sgd",
        step_size: int = 100,
        gamma: float = 0.5,
        loss: str | None = None,
        flat_epochs: int = 0,
        milestones: list[int] | None = None,
        optimizer_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(task, metric_options)
        self.save_hyperparameters()
        spec = self.spec
        ref = spec.reference
        self.lr = ref.lr if lr is None else lr
        self.momentum = ref.momentum if momentum is None else momentum
        self.weight_decay = ref.weight_decay if weight_decay is None else weight_decay
        self.nesterov = (ref.nesterov if nesterov is None else nesterov) and self.momentum > 0
        self.schedule, self.min_lr, self.schedule_epochs = schedule, min_lr, schedule_epochs
        self.optimizer_name, self.step_size, self.gamma = optimizer, step_size, gamma
        self.flat_epochs, self.milestones, self.optimizer_options = flat_epochs, milestones, dict(optimizer_options or {})
        if loss is not None:
            self.loss = build_loss(loss)
        self.net = build_network(network, spec, dropout=dropout, **(network_options or {}))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.batch_loss(batch)
        self.log_epoch_mean("train/loss", loss, len(batch["x"]))  # logged at the epoch's end
        return loss

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(
            self.optimizer_name,
            self.net.parameters(),
            self.lr,
            self.weight_decay,
            self.momentum,
            self.nesterov,
            **self.optimizer_options,
        )
        epochs = self.schedule_epochs or self.trainer.max_epochs
        scheduler = build_scheduler(
            optimizer, self.schedule, epochs, self.min_lr, self.step_size, self.gamma, self.flat_epochs, self.milestones
        )
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class Lookahead(torch.optim.Optimizer):
    """Lookahead (Zhang et al. 2019) around ``inner``: every ``k`` steps the slow weights move ``alpha`` of the way
    to the fast ones and the fast weights restart from them. Shares the inner optimiser's parameter groups, so
    learning-rate schedules act on it; its state dict holds the inner one's and the slow weights."""

    def __init__(self, inner: torch.optim.Optimizer, k: int = 6, alpha: float = 0.5) -> None:
        if k < 1 or not 0 < alpha <= 1:
            raise UsageError(f"lookahead needs k >= 1 and 0 < alpha <= 1, got k={k}, alpha={alpha}")
        self.inner, self.k, self.alpha, self.fast_steps = inner, k, alpha, 0
        super().__init__(inner.param_groups, inner.defaults)
        self.param_groups = inner.param_groups

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        for p in self._params():
            if "slow" not in self.state[p]:
                self.state[p]["slow"] = p.detach().clone()
        with torch.enable_grad():
            loss = self.inner.step(closure)
        self.fast_steps += 1
        if self.fast_steps % self.k == 0:
            for p in self._params():
                slow = self.state[p]["slow"]
                slow.add_(p - slow, alpha=self.alpha)
                p.copy_(slow)
        return loss

    def state_dict(self) -> dict[str, Any]:
        slow = {i: self.state[p]["slow"] for i, p in enumerate(self._params()) if "slow" in self.state[p]}
        return {"inner": self.inner.state_dict(), "slow": slow, "fast_steps": self.fast_steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.inner.load_state_dict(state_dict["inner"])
        self.param_groups = self.inner.param_groups
        params = self._params()
        self.state = defaultdict(dict, {params[i]: {"slow": s.to(params[i])} for i, s in state_dict["slow"].items()})
        self.fast_steps = state_dict["fast_steps"]


def build_optimizer(
    name: Optimizer, params: Any, lr: float, weight_decay: float, momentum: float = 0.0, nesterov: bool = False, **options: Any
) -> torch.optim.Optimizer:
    """The optimiser ``name``; ``options`` are further keyword arguments of its constructor."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov, **options)
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=weight_decay, **options)
    if name == "ranger":
        lookahead = {key: options.pop(key) for key in ("k", "alpha") if key in options}
        return Lookahead(torch.optim.RAdam(params, lr=lr, weight_decay=weight_decay, **options), **lookahead)
    return {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name](params, lr=lr, weight_decay=weight_decay, **options)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    epochs: int | None,
    min_lr: float = 0.0,
    step_size: int = 100,
    gamma: float = 0.5,
    flat_epochs: int = 0,
    milestones: list[int] | None = None,
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-epoch learning-rate schedule over ``epochs`` epochs (``None`` for a constant rate)."""
    if schedule == "constant":
        return None
    if not epochs or epochs < 1:
        raise UsageError(f"schedule {schedule!r} needs a positive number of epochs")
    if schedule == "step":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: reference_lr_factor(e, epochs))
    if schedule == "steplr":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    if schedule == "multistep":
        if not milestones:
            raise UsageError("schedule 'multistep' needs milestones (e.g. --model.milestones '[150, 225]')")
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
    if flat_epochs:
        if flat_epochs < 0:
            raise UsageError(f"flat_epochs must be >= 0, got {flat_epochs}")
        span = max(epochs - flat_epochs, 1)  # a run no longer than the flat start keeps the initial rate

        def factor(epoch: int, base: float) -> float:
            if epoch < flat_epochs:
                return 1.0
            return (min_lr + (base - min_lr) * (1 + math.cos(math.pi * (epoch - flat_epochs) / span)) / 2) / base

        bases = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.LambdaLR(optimizer, [lambda e, b=b: factor(e, b) for b in bases])
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=min_lr)
