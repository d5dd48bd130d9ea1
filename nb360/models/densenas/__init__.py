"""DenseNAS (Fang et al. 2020) in its ResNet-based space as NB360 adapts it: supernet, derived network, FLOPs, drawing.

Importing this package registers the derived network as ``densenas`` (option ``arch``: the JSON
dict of :class:`Arch`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from nb360.models import register_network
from nb360.models.densenas.space import DENSE_SPACE, POINT_SPACE, STACK_PRIMITIVES, Arch, DerivedNetwork, Space, viterbi_path
from nb360.models.densenas.supernet import SuperNetwork
from nb360.tasks import TaskSpec

__all__ = [
    "Arch",
    "Space",
    "SuperNetwork",
    "DerivedNetwork",
    "POINT_SPACE",
    "DENSE_SPACE",
    "STACK_PRIMITIVES",
    "viterbi_path",
    "default_space",
]


def default_space(spec: TaskSpec) -> Space:
    """The reference's space for a task: the dense one (no reduction) or the point one (1-D and 2-D)."""
    return DENSE_SPACE if spec.kind == "dense" else POINT_SPACE


@register_network("densenas")
def build_densenas(spec: TaskSpec, arch: dict[str, Any] | Arch, dropout: float = 0.0) -> nn.Module:
    """The derived network of ``arch``; ``dropout`` before the classifier (the reference uses none)."""
    arch = arch if isinstance(arch, Arch) else Arch.from_dict(dict(arch))
    return DerivedNetwork(spec.dims, spec.kind, spec.input_shape[0], spec.num_outputs, arch, dropout)
