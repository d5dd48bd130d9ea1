"""FSD50K: the task's spec. Its data loader is not part of nb360 yet (see `docs/tasks.md`)."""

from __future__ import annotations

from nb360.tasks import Reference, TaskSpec, register_task

SPEC = register_task(
    TaskSpec(
        name="fsd50k",
        title="FSD50K",
        dims=2,
        kind="point",
        input_shape=(1, 96, 101),
        num_outputs=200,
        loss="bce_with_logits",
        metric="one_minus_map",
        reference=Reference(lr=0.1, batch_size=256),
        aliases=("audio",),
    )
)
