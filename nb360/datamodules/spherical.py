"""Spherical CIFAR-100: the task's spec. Its data loader is not part of nb360 yet (see `docs/tasks.md`)."""

from __future__ import annotations

from nb360.tasks import Reference, TaskSpec, register_task

SPEC = register_task(
    TaskSpec(
        name="spherical",
        title="Spherical CIFAR-100",
        dims=2,
        kind="point",
        input_shape=(3, 60, 60),
        num_outputs=100,
        loss="cross_entropy",
        metric="error",
        reference=Reference(lr=0.1, batch_size=128),
        aliases=("scifar100", "s2cifar100", "spherical_cifar100"),
        # the reference WRN pools a fixed 8x8 window of the 15x15 map (its top-left corner)
        network_options={"wrn": {"pool": 8}},
    )
)
