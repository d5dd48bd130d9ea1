"""PSICOV: the task's spec. Its data loader is not part of nb360 yet (see `docs/tasks.md`)."""

from __future__ import annotations

from nb360.tasks import Reference, TaskSpec, register_task

SPEC = register_task(
    TaskSpec(
        name="psicov",
        title="PSICOV",
        dims=2,
        kind="dense",
        input_shape=(57, 128, 128),
        num_outputs=1,
        loss="mse",
        metric="mae8",
        reference=Reference(lr=0.001, batch_size=8, eval_batch_size=2),
        aliases=("protein",),
    )
)
