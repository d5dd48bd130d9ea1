"""The task registry: names, aliases, shapes, reference settings and errors."""

from __future__ import annotations

import pytest

from nb360.errors import UsageError
from nb360.tasks import get_task, reference_lr_factor, task_names

NB360 = ["cifar100", "spherical", "ninapro", "fsd50k", "darcy", "psicov", "cosmic", "ecg", "satellite", "deepsea"]


def test_all_ten_tasks_are_registered_in_paper_order():
    assert task_names() == NB360


@pytest.mark.parametrize(
    "alias, name",
    [("pde", "darcy"), ("PDE", "darcy"), ("protein", "psicov"), ("audio", "fsd50k"), ("scifar100", "spherical"), ("ECG", "ecg")],
)
def test_aliases_resolve_case_insensitively(alias, name):
    assert get_task(alias).name == name


def test_unknown_task_lists_every_choice():
    with pytest.raises(UsageError) as err:
        get_task("imagenet")
    message = str(err.value)
    assert "imagenet" in message and "\n" not in message
    assert all(name in message for name in NB360)


@pytest.mark.parametrize(
    "name, dims, kind, shape, outputs, loss, metric, lr, batch",
    [
        ("cifar100", 2, "point", (3, 32, 32), 100, "cross_entropy", "error", 0.1, 128),
        ("spherical", 2, "point", (3, 60, 60), 100, "cross_entropy", "error", 0.1, 128),
        ("ninapro", 2, "point", (1, 16, 52), 18, "cross_entropy", "error", 0.1, 128),
        ("fsd50k", 2, "point", (1, 96, 101), 200, "bce_with_logits", "one_minus_map", 0.1, 256),
        ("darcy", 2, "dense", (3, 85, 85), 1, "relative_l2_sum", "relative_l2", 0.001, 8),
        ("psicov", 2, "dense", (57, 128, 128), 1, "mse", "mae8", 0.001, 8),
        ("cosmic", 2, "dense", (1, 128, 128), 1, "masked_bce_with_logits", "one_minus_auroc_thresholded", 0.001, 8),
        ("ecg", 1, "point", (1, 1000), 4, "cross_entropy", "one_minus_f1", 0.1, 256),
        ("satellite", 1, "point", (1, 46), 24, "cross_entropy", "error", 0.1, 4096),
        ("deepsea", 1, "point", (4, 1000), 36, "bce_with_logits", "one_minus_auroc", 0.1, 256),
    ],
)
def test_specs_match_the_reference(name, dims, kind, shape, outputs, loss, metric, lr, batch):
    spec = get_task(name)
    assert (spec.dims, spec.kind, spec.input_shape, spec.num_outputs) == (dims, kind, shape, outputs)
    assert (spec.loss, spec.metric) == (loss, metric)
    ref = spec.reference
    assert (ref.lr, ref.batch_size, ref.epochs, ref.momentum, ref.weight_decay, ref.nesterov) == (lr, batch, 200, 0.9, 5e-4, True)
    assert spec.lower_is_better


def test_tasks_without_a_loader_fail_with_one_clear_line():
    from dataclasses import replace

    from nb360.tasks import register_task

    unloaded = register_task(replace(get_task("darcy"), name="darcy_raw", title="Darcy without loader", aliases=(), datamodule=None))
    with pytest.raises(UsageError) as err:
        unloaded.require_datamodule()
    assert "no data loader" in str(err.value) and "darcy" in str(err.value) and "\n" not in str(err.value)
    assert all(get_task(name).require_datamodule() for name in NB360)


def _reference_factor(epoch: int, epochs: int) -> float:
    """NB backbone weight_sched, written out independently."""
    if epochs != 200:
        return 0.2 ** (epoch >= int(0.3 * epochs)) * 0.2 ** (epoch > int(0.6 * epochs)) * 0.2 ** (epoch > int(0.8 * epochs))
    return 0.2 ** (epoch >= 60) * 0.2 ** (epoch >= 120) * 0.2 ** (epoch >= 160)


@pytest.mark.parametrize("epochs", [200, 50, 10, 7, 1])
def test_step_schedule(epochs):
    for epoch in range(epochs):
        assert reference_lr_factor(epoch, epochs) == pytest.approx(_reference_factor(epoch, epochs))
    assert reference_lr_factor(59, 200) == 1.0 and reference_lr_factor(60, 200) == pytest.approx(0.2)
    assert reference_lr_factor(160, 200) == pytest.approx(0.008)


def test_a_name_or_alias_cannot_be_taken_twice():
    from dataclasses import replace

    from nb360.tasks import register_task

    clash = replace(get_task("darcy"), name="darcy2", aliases=("pde",))
    with pytest.raises(ValueError, match="'pde' of 'darcy2' is already taken by 'darcy'"):
        register_task(clash)
    assert get_task("pde").name == "darcy"
