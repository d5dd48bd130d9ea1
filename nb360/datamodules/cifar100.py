"""CIFAR-100: the task's spec. Its data loader is not part of nb360 yet (see `docs/tasks.md`)."""

from __future__ import annotations

from nb360.tasks import Reference, TaskSpec, register_task

SPEC = register_task(
    TaskSpec(
        name="cifar100",
        title="CIFAR-100",
        dims=2,
        kind="point",
        input_shape=(3, 32, 32),
        num_outputs=100,
        loss="cross_entropy",
        metric="error",
        reference=Reference(lr=0.1, batch_size=128),
        aliases=("cifar", "cifar-100", "cifar_100"),
    )
)
