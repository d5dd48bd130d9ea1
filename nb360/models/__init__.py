"""Networks and search spaces, built by name from a TaskSpec (one registry, like timm's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from nb360.errors import UsageError
from nb360.tasks import TaskSpec

__all__ = ["register_network", "build_network", "network_names", "count_parameters"]

NetworkBuilder = Callable[..., nn.Module]
_NETWORKS: dict[str, NetworkBuilder] = {}


def register_network(name: str) -> Callable[[NetworkBuilder], NetworkBuilder]:
    """Register ``builder(spec, **options) -> nn.Module`` under ``name``."""

    def add(builder: NetworkBuilder) -> NetworkBuilder:
        if name in _NETWORKS:
            raise ValueError(f"network {name!r} is already registered")
        _NETWORKS[name] = builder
        return builder

    return add


def network_names() -> list[str]:
    return sorted(_NETWORKS)


def build_network(name: str, spec: TaskSpec, **options: Any) -> nn.Module:
    """Build network ``name`` for a task; the task's own options for it come first, ``options`` override them."""
    if name not in _NETWORKS:
        raise UsageError(f"unknown network {name!r}; choose one of: {', '.join(network_names())}")
    return _NETWORKS[name](spec, **{**spec.network_options.get(name, {}), **options})


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


from nb360.models import backbones as _backbones  # noqa: E402,F401  (registers the built-in networks)
