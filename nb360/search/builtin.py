"""The built-in methods: importing this module registers them (the method registry imports it on first use).

The import order is the order methods are listed in help and error messages.
"""

from nb360.search import wrn  # noqa: F401  (isort: skip)
from nb360.search import wrn_asha  # noqa: F401  (isort: skip)
from nb360.search import darts  # noqa: F401  (isort: skip)
from nb360.search import densenas  # noqa: F401  (isort: skip)
from nb360.search import amber  # noqa: F401  (isort: skip)
from nb360.search import autodeeplab  # noqa: F401  (isort: skip)
from nb360.search import nb201_ws  # noqa: F401  (isort: skip)
from nb360.search import nb201_multitrial  # noqa: F401  (isort: skip)
from nb360.search import nats_size  # noqa: F401  (isort: skip)
from nb360.search import tenas  # noqa: F401  (isort: skip)
from nb360.search import perceiver  # noqa: F401  (isort: skip)
from nb360.search import xgboost  # noqa: F401  (isort: skip)
from nb360.search import expert  # noqa: F401  (isort: skip)
