"""The expert models of the NB360 paper, one module per task's expert; importing this package registers them
(their networks with :func:`nb360.models.register_network`, their recipes with
:func:`nb360.search.expert.register_expert`)."""

from nb360.models.experts import audio_cnn as _audio_cnn  # noqa: E402,F401  (FSD50K)
from nb360.models.experts import deepcr as _deepcr  # noqa: E402,F401  (Cosmic)
from nb360.models.experts import deepsea_cnn as _deepsea_cnn  # noqa: E402,F401  (DeepSEA)
from nb360.models.experts import densenet as _densenet  # noqa: E402,F401  (CIFAR-100)
from nb360.models.experts import fno as _fno  # noqa: E402,F401  (Darcy Flow)
from nb360.models.experts import net1d as _net1d  # noqa: E402,F401  (ECG)
from nb360.models.experts import ninapro_attention as _ninapro_attention  # noqa: E402,F401  (NinaPro)
from nb360.models.experts import pdnet as _pdnet  # noqa: E402,F401  (PSICOV)
from nb360.models.experts import rocket as _rocket  # noqa: E402,F401  (Satellite)
from nb360.models.experts import s2cnn as _s2cnn  # noqa: E402,F401  (Spherical CIFAR-100: unavailable)
