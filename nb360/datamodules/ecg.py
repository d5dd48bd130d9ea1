"""ECG (PhysioNet 2017): the task's spec. Its data loader is not part of nb360 yet (see `docs/tasks.md`)."""

from __future__ import annotations

from nb360.tasks import Reference, TaskSpec, register_task

SPEC = register_task(
    TaskSpec(
        name="ecg",
        title="ECG (PhysioNet 2017)",
        dims=1,
        kind="point",
        input_shape=(1, 1000),
        num_outputs=4,
        loss="cross_entropy",
        metric="one_minus_f1",
        reference=Reference(lr=0.1, batch_size=256),
        aliases=("physionet2017",),
        metric_kwargs={"num_classes": 4},
    )
)
