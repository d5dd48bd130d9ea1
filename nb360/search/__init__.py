"""Search methods: LightningModules (one module per method family, registered by :mod:`nb360.search.builtin`)
and the torch-free multi-trial algorithms of :mod:`nb360.search.multitrial`.

Importing this package imports nothing else, so ``python -m nb360.search.tabular`` starts without PyTorch.
"""
