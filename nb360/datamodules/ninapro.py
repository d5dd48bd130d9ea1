"""NinaPro DB5: the task's spec. Its data loader is not part of nb360 yet (see `docs/tasks.md`)."""

from __future__ import annotations

from nb360.tasks import Reference, TaskSpec, register_task

SPEC = register_task(
    TaskSpec(
        name="ninapro",
        title="NinaPro DB5",
        dims=2,
        kind="point",
        input_shape=(1, 16, 52),
        num_outputs=18,
        loss="cross_entropy",
        metric="error",
        reference=Reference(lr=0.1, batch_size=128),
        aliases=("ninapro_db5", "db5"),
    )
)
