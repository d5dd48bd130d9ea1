"""``--method expert``: each task's expert model of the NB360 paper, with its reference training settings.

An :class:`Expert` is a recipe: the registered network that implements the task's expert
architecture (``nb360/models/experts/``) and the config defaults that reproduce its
reference training (optimiser, schedule, epochs, batch size, loss), applied below the
config files and the command line like every method's defaults. Experts that are not
trained by gradient descent (Satellite's ROCKET features + ridge classifier) bring their
own ``run``. Experts register themselves from :mod:`nb360.models.experts`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nb360.methods import Method, fit_and_test, register_method
from nb360.registry import Registry
from nb360.run import RunContext
from nb360.search.train import TrainModule
from nb360.tasks import TaskSpec

__all__ = ["Expert", "EXPERTS", "register_expert"]


@dataclass(frozen=True)
class Expert:
    """A task's expert model.

    Attributes:
        task: the task's name.
        title: what the model is (e.g. ``DenseNet-BC-100 (k = 24)``), shown in help and docs.
        defaults: config defaults of its reference training (``model.network``, ``model.network_options``,
            ``model.optimizer``, ``model.lr``, ``trainer.max_epochs``, ``data.batch_size``, ...).
        source: where the reference recipe comes from (the NB360 repository's path).
        run: the stages, for experts not trained by the ordinary fit (default: fit, then test).
        unavailable: the reason the expert cannot run here (the method then refuses the task with it).
    """

    task: str
    title: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    run: Callable[[RunContext], dict[str, Any]] | None = None
    unavailable: str | None = None


EXPERTS: Registry[Expert] = Registry("expert", builtins="nb360.models.experts")


def register_expert(expert: Expert) -> Expert:
    return EXPERTS.register(expert.task, expert)


def _expert(spec: TaskSpec) -> Expert | None:
    return next((e for e in EXPERTS.values() if e.task == spec.name), None)


def _applies_to(spec: TaskSpec) -> str | None:
    expert = _expert(spec)
    if expert is None:
        return f"nb360 has no expert model for {spec.name}"
    return expert.unavailable


def _defaults(spec: TaskSpec) -> Mapping[str, Any]:
    expert = _expert(spec)
    return expert.defaults if expert is not None else {}


def _run(ctx: RunContext) -> dict[str, Any]:
    expert = _expert(ctx.task)
    assert expert is not None  # applies_to refused the task otherwise
    return (expert.run or fit_and_test)(ctx)


register_method(
    Method(
        name="expert",
        description="the task's expert model of the NB360 paper, with its reference training settings",
        module=TrainModule,
        run=_run,
        applies_to=_applies_to,
        defaults=_defaults,
    )
)
