"""nb360: neural architecture search on the NAS-Bench-360 tasks, built on PyTorch Lightning."""

__version__ = "0.1.0"
