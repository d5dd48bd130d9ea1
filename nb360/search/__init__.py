"""Methods as LightningModules, one module per method family; importing this package registers them."""

from nb360.search import wrn  # noqa: F401
