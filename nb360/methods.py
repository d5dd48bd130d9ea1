"""Method registry: a method is a LightningModule class plus what to do with it (its stages).

A :class:`Method` names the module ``train.py`` builds from ``--model.*``, says which
tasks it applies to (with the reason when it does not) and runs its stages on a
:class:`~nb360.run.RunContext`. Methods live in :mod:`nb360.search`, one module each,
with their defaults in ``configs/methods/<name>.yaml``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nb360.errors import UsageError
from nb360.tasks import TaskSpec

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from nb360.run import RunContext

__all__ = ["Method", "register_method", "get_method", "method_names", "fit_and_test"]


def _applies_everywhere(spec: TaskSpec) -> str | None:
    return None


@dataclass(frozen=True)
class Method:
    """A runnable method.

    Attributes:
        name: the ``--method`` value.
        description: one line for ``--help`` and the README.
        module: the LightningModule class configured by ``--model.*``.
        run: runs the stages and returns the content of ``results.json``.
        applies_to: ``None`` if the method can run on a task, else the reason it cannot.
        defaults: ``(spec) -> {config key: value}`` defaults of the method on a task, applied
            below the config files and the command line.
    """

    name: str
    description: str
    module: type[pl.LightningModule]
    run: Callable[[RunContext], dict[str, Any]]
    applies_to: Callable[[TaskSpec], str | None] = _applies_everywhere
    defaults: Callable[[TaskSpec], Mapping[str, Any]] = field(default=lambda spec: {})
    aliases: tuple[str, ...] = ()

    def check(self, spec: TaskSpec) -> None:
        reason = self.applies_to(spec)
        if reason is not None:
            usable = [m.name for m in _registered() if m.applies_to(spec) is None]
            raise UsageError(
                f"method {self.name!r} does not apply to task {spec.name!r}: {reason}; "
                f"methods for {spec.name}: {', '.join(usable)}"
            )


_REGISTRY: dict[str, Method] = {}
_BUILTINS_LOADED = False


def register_method(method: Method) -> Method:
    for key in (method.name, *method.aliases):
        owner = next((m.name for m in _REGISTRY.values() if key in (m.name, *m.aliases)), None)
        if owner is not None and owner != method.name:
            raise ValueError(f"method name {key!r} is already taken by {owner!r}")
    _REGISTRY[method.name] = method
    return method


def _registered() -> list[Method]:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("nb360.search")
    return list(_REGISTRY.values())


def method_names() -> list[str]:
    return [m.name for m in _registered()]


def get_method(name: str) -> Method:
    for method in _registered():
        if str(name).lower() in (method.name, *method.aliases):
            return method
    raise UsageError(f"unknown method {name!r}; choose one of: {', '.join(method_names())}")


def fit_and_test(ctx: RunContext) -> dict[str, Any]:
    """The single stage of fixed-network methods: fit, then score the task's evaluation split.

    In the search split the best checkpoint by the validation metric is scored (on the
    validation set); in the final split there is no validation set and the weights at
    the end of training are scored on the test set (as they are in the search split
    when the budget ended before the first validation).
    """
    trainer = ctx.trainer()
    trainer.fit(ctx.model, datamodule=ctx.datamodule, ckpt_path=ctx.ckpt_path)
    best = "best" if any(cb.monitor and cb.best_model_path for cb in trainer.checkpoint_callbacks) else None
    scores = trainer.test(ctx.model, datamodule=ctx.datamodule, ckpt_path=best, verbose=False)[0]
    return ctx.finish(trainer, scores)
