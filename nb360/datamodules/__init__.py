"""One module per NAS-Bench-360 task: its TaskSpec and its LightningDataModule.

Importing this package registers every task (in the order of the NB360 paper).
"""

from nb360.datamodules import (  # noqa: F401
    cifar100,
    spherical,
    ninapro,
    fsd50k,
    darcy,
    psicov,
    cosmic,
    ecg,
    satellite,
    deepsea,
    arrays,
)
