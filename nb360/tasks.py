"""Task registry: what every method needs to know about a task, as plain data.

A :class:`TaskSpec` says what goes into and comes out of a network (dimensionality,
point or dense, input shape, outputs), how it is trained (loss, reference
hyperparameters) and how it is scored (metric). Each task module in
:mod:`nb360.datamodules` registers its spec next to its DataModule; nothing else in
nb360 branches on a task's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from nb360.errors import UsageError
from nb360.registry import Registry

if TYPE_CHECKING:
    from nb360.datamodules.base import TaskDataModule

__all__ = [
    "Reference",
    "TaskSpec",
    "TASKS",
    "register_task",
    "get_task",
    "task_names",
    "reference_lr_factor",
]


@dataclass(frozen=True)
class Reference:
    """Reference training hyperparameters of the default WRN/ResNet1D baseline on a task.

    The defaults are the NB360 backbone settings shared by all tasks: SGD with Nesterov
    momentum 0.9, weight decay 5e-4, 200 epochs, learning rate x0.2 at 30/60/80 % of
    the epochs (:func:`reference_lr_factor`).
    """

    lr: float
    batch_size: int
    eval_batch_size: int | None = None
    epochs: int = 200
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True


@dataclass(frozen=True)
class TaskSpec:
    """Plain description of one task. See ``docs/tasks.md`` for the protocols behind each field."""

    name: str
    title: str
    dims: Literal[1, 2]
    kind: Literal["point", "dense"]
    input_shape: tuple[int, ...]
    num_outputs: int
    loss: str
    metric: str
    reference: Reference
    aliases: tuple[str, ...] = ()
    metric_kwargs: Mapping[str, object] = field(default_factory=dict)
    extra_metrics: tuple[str, ...] = ()
    network_options: Mapping[str, Mapping[str, object]] = field(default_factory=dict)
    datamodule: type[TaskDataModule] | None = None

    def __post_init__(self) -> None:
        if self.dims not in (1, 2):
            raise ValueError(f"task {self.name!r}: dims must be 1 or 2, got {self.dims!r}")
        if self.kind not in ("point", "dense"):
            raise ValueError(f"task {self.name!r}: kind must be 'point' or 'dense', got {self.kind!r}")
        if len(self.input_shape) != self.dims + 1:
            raise ValueError(
                f"task {self.name!r}: input_shape {self.input_shape} must be (channels, *{self.dims} spatial sizes)"
            )
        # copies, so that a spec does not share mutable options with its caller (plain dicts: specs are pickled by DDP spawn and deepcopy)
        object.__setattr__(self, "metric_kwargs", dict(self.metric_kwargs))
        object.__setattr__(self, "network_options", {k: dict(v) for k, v in self.network_options.items()})

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    @property
    def lower_is_better(self) -> bool:
        from nb360.metrics import metric_class, metric_lower_is_better

        return metric_lower_is_better(metric_class(self.metric))

    def require_datamodule(self) -> type[TaskDataModule]:
        """The task's DataModule class, or a one-line error if nb360 does not ship one yet."""
        if self.datamodule is None:
            ready = ", ".join(s.name for s in TASKS.values() if s.datamodule is not None)
            raise UsageError(
                f"task {self.name!r} ({self.title}) is registered but this version of nb360 has no data loader "
                f"for it yet; tasks with data loaders: {ready}"
            )
        return self.datamodule


TASKS: Registry[TaskSpec] = Registry("task", builtins="nb360.datamodules")


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to the registry (its name and aliases are matched case-insensitively)."""
    return TASKS.register(spec.name, spec, spec.aliases)


def task_names() -> list[str]:
    """Canonical names of all registered tasks, in registration order."""
    return TASKS.names()


def get_task(name: str) -> TaskSpec:
    """Look a task up by name or alias; unknown names give a one-line error listing the choices."""
    return TASKS.get(name)


def reference_lr_factor(epoch: int, epochs: int) -> float:
    """NB360 backbone step schedule: x0.2 at 30 %, 60 % and 80 % of the epochs.

    With the reference 200 epochs the thresholds are 60/120/160 and all three
    comparisons are ``>=``; with any other budget the reference code uses
    ``epoch >= int(0.3 E)``, ``epoch > int(0.6 E)`` and ``epoch > int(0.8 E)``.
    """
    if epochs == 200:
        steps = (epoch >= 60) + (epoch >= 120) + (epoch >= 160)
    else:
        steps = (epoch >= int(0.3 * epochs)) + (epoch > int(0.6 * epochs)) + (epoch > int(0.8 * epochs))
    return 0.2**steps
