"""``--method wrn``: the NB360 default baseline, WRN-16-4 (2-D point and dense tasks) or ResNet1D (1-D tasks),
trained with the task's reference SGD settings and step schedule."""

from nb360.methods import Method, fit_and_test, register_method
from nb360.search.train import TrainModule

METHOD = register_method(
    Method(
        name="wrn",
        description="WRN-16-4 / dense WRN-16-4 / ResNet1D with the reference training settings",
        module=TrainModule,
        run=fit_and_test,
        aliases=("backbone", "resnet1d"),
    )
)
