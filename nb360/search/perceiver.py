"""``--method perceiver``: the Perceiver IO baseline of the NB360 paper, trained like the reference runs.

The network is :class:`nb360.models.perceiver.PerceiverIO` (registered as ``perceiver``);
training is the NB360 Perceiver recipe (``perceiver-io/run_nb360.sh`` and ``perceiver/cli.py``):
AdamW with lr 1e-3 and weight decay 0.01, no learning-rate schedule, 200 epochs, fp32, with
the batch sizes of ``run_nb360.sh`` (the task's reference batch size, except Darcy Flow: 4).
Data, loss and metric are the task's own, as for every nb360 method.
"""

from __future__ import annotations

from typing import Any

from nb360.methods import Method, fit_and_test, register_method
from nb360.models import perceiver as _network  # noqa: F401  (registers the ``perceiver`` network)
from nb360.search.train import TrainModule
from nb360.tasks import TaskSpec

# run_nb360.sh's --data.batch_size where it differs from the task's reference batch size
BATCH_SIZE = {"darcy": 4}


def _defaults(spec: TaskSpec) -> dict[str, Any]:
    return {"data.batch_size": BATCH_SIZE[spec.name]} if spec.name in BATCH_SIZE else {}


METHOD = register_method(
    Method(
        name="perceiver",
        description="Perceiver IO (Fourier position features, latent self-attention, output queries), AdamW 1e-3",
        module=TrainModule,
        run=fit_and_test,
        defaults=_defaults,
        aliases=("perceiver_io",),
    )
)
