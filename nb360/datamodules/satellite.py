"""Satellite: the task's spec. Its data loader is not part of nb360 yet (see `docs/tasks.md`)."""

from __future__ import annotations

from nb360.tasks import Reference, TaskSpec, register_task

SPEC = register_task(
    TaskSpec(
        name="satellite",
        title="Satellite",
        dims=1,
        kind="point",
        input_shape=(1, 46),
        num_outputs=24,
        loss="cross_entropy",
        metric="error",
        reference=Reference(lr=0.1, batch_size=4096),
        aliases=("satellite_ts",),
    )
)
