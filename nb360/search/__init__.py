"""Methods as LightningModules, one module per method family; importing this package registers them.

The import order is the order methods are listed in help and error messages.
"""

from nb360.search import wrn  # noqa: F401  (isort: skip)
from nb360.search import darts  # noqa: F401  (isort: skip)
