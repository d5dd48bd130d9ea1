"""Cosmic: the task's spec. Its data loader is not part of nb360 yet (see `docs/tasks.md`)."""

from __future__ import annotations

from nb360.tasks import Reference, TaskSpec, register_task

SPEC = register_task(
    TaskSpec(
        name="cosmic",
        title="Cosmic",
        dims=2,
        kind="dense",
        input_shape=(1, 128, 128),
        num_outputs=1,
        loss="masked_bce_with_logits",
        metric="one_minus_auroc_thresholded",
        reference=Reference(lr=0.001, batch_size=8),
        aliases=("deepcr", "cosmic_rays"),
        extra_metrics=("fnr",),
    )
)
