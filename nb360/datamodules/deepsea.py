"""DeepSEA: the task's spec. Its data loader is not part of nb360 yet (see `docs/tasks.md`)."""

from __future__ import annotations

from nb360.tasks import Reference, TaskSpec, register_task

SPEC = register_task(
    TaskSpec(
        name="deepsea",
        title="DeepSEA",
        dims=1,
        kind="point",
        input_shape=(4, 1000),
        num_outputs=36,
        loss="bce_with_logits",
        metric="one_minus_auroc",
        reference=Reference(lr=0.1, batch_size=256),
        aliases=("deep_sea",),
    )
)
