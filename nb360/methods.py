"""Method registry: a method is a LightningModule class plus what to do with it (its stages).

A :class:`Method` names the module ``train.py`` builds from ``--model.*``, says which
tasks it applies to (with the reason when it does not) and runs its stages on a
:class:`~nb360.run.RunContext`. Methods live in :mod:`nb360.search`, one module each,
with their defaults in ``configs/methods/<name>.yaml``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nb360.errors import UsageError
from nb360.registry import Registry
from nb360.tasks import TaskSpec

if TYPE_CHECKING:
    import lightning.pytorch as pl

    from nb360.run import RunContext

__all__ = ["Method", "METHODS", "register_method", "get_method", "method_names", "fit_and_test"]


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
        add_arguments: adds the method's own command-line options to the parser (e.g. a
            search method's ``--stage``, ``--search_epochs``, ``--eval.*``); the run reads them
            from ``RunContext.args``.
    """

    name: str
    description: str
    module: type[pl.LightningModule]
    run: Callable[[RunContext], dict[str, Any]]
    applies_to: Callable[[TaskSpec], str | None] = _applies_everywhere
    defaults: Callable[[TaskSpec], Mapping[str, Any]] = field(default=lambda spec: {})
    add_arguments: Callable[[Any], None] | None = None
    aliases: tuple[str, ...] = ()

    def check(self, spec: TaskSpec) -> None:
        reason = self.applies_to(spec)
        if reason is not None:
            usable = [m.name for m in METHODS.values() if m.applies_to(spec) is None]
            raise UsageError(
                f"method {self.name!r} does not apply to task {spec.name!r}: {reason}; "
                f"methods for {spec.name}: {', '.join(usable)}"
            )


METHODS: Registry[Method] = Registry("method", builtins="nb360.search.builtin")


def register_method(method: Method) -> Method:
    return METHODS.register(method.name, method, method.aliases)


def method_names() -> list[str]:
    return METHODS.names()


def get_method(name: str) -> Method:
    return METHODS.get(name)


def fit_and_test(ctx: RunContext) -> dict[str, Any]:
    """The single stage of fixed-network methods: fit, then score the task's evaluation split.

    In the search split the best checkpoint by the validation metric is scored (on the
    validation set); in the final split there is no validation set and the weights at
    the end of training are scored on the test set (as they are in the search split
    when the budget ended before the first validation).
    """
    ctx.check_fresh()
    trainer = ctx.trainer()
    trainer.fit(ctx.model, datamodule=ctx.datamodule, ckpt_path=ctx.resume_path())
    best = "best" if any(cb.monitor and cb.best_model_path for cb in trainer.checkpoint_callbacks) else None
    scores = trainer.test(ctx.model, datamodule=ctx.datamodule, ckpt_path=best, verbose=False)[0]
    return ctx.finish(trainer, scores)
