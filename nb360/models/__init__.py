"""Networks and search spaces, built by name from a TaskSpec (one registry, like timm's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from nb360.registry import Registry
from nb360.tasks import TaskSpec

__all__ = ["NETWORKS", "register_network", "build_network", "network_names", "count_parameters"]

NetworkBuilder = Callable[..., nn.Module]
# the expert models register their networks next to their training recipes; they load on the first lookup
NETWORKS: Registry[NetworkBuilder] = Registry("network", builtins="nb360.models.experts")


def register_network(name: str) -> Callable[[NetworkBuilder], NetworkBuilder]:
    """Register ``builder(spec, **options) -> nn.Module`` under ``name``."""

    def add(builder: NetworkBuilder) -> NetworkBuilder:
        return NETWORKS.register(name, builder)

    return add


def network_names() -> list[str]:
    return NETWORKS.names()


def build_network(name: str, spec: TaskSpec, **options: Any) -> nn.Module:
    """Build network ``name`` for a task; the task's own options for it come first, ``options`` override them."""
    return NETWORKS.get(name)(spec, **{**spec.network_options.get(name, {}), **options})


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


from nb360.models import amber as _amber  # noqa: E402,F401
from nb360.models import autodeeplab as _autodeeplab  # noqa: E402,F401
from nb360.models import backbones as _backbones  # noqa: E402,F401  (registers the built-in networks)
from nb360.models import darts as _darts  # noqa: E402,F401
from nb360.models import densenas as _densenas  # noqa: E402,F401
from nb360.models import nb101 as _nb101  # noqa: E402,F401
from nb360.models import nb201 as _nb201  # noqa: E402,F401
from nb360.models import perceiver as _perceiver  # noqa: E402,F401
