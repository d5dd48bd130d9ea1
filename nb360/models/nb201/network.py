"""NB201 / NATS-Bench macro networks for any task: the topology space (``nb201``) and the size space (``nats_sss``).

Both are xautodl's tiny cell network (``TinyNetwork`` for S_t, ``DynamicShapeTinyNet``
for S_s): a 3x3 stem, three stages of cells separated by two reduction slots, BN-ReLU,
then the task's head. The task adaptations follow the NB360 precompute code:

* point tasks keep the benchmark's two stride-2 :class:`ResNetBasicblock` slots, then
  global average pooling and a linear classifier (NinaPro's only change is the stem's
  input channels);
* dense tasks (NB360's Darcy Flow) run everything at full resolution: each reduction
  slot becomes an :class:`InferCell` of the same cell that changes the width at stride 1,
  and a linear layer is applied at every position. NB360 only trained S_t this way; the
  size-space networks use the same rule (their reduction slots become the fixed
  :data:`SSS_CELL`), so that both spaces adapt alike.

1-D tasks use the same networks with 1-D convolutions, BN and pooling.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from nb360.errors import UsageError
from nb360.models import register_network
from nb360.models.heads import build_head
from nb360.models.nb201.cells import InferCell
from nb360.models.nb201.ops import ResNetBasicblock
from nb360.models.ops import batch_norm, conv
from nb360.spaces.nb201 import SIZE, SSS_CELL, TOPOLOGY
from nb360.tasks import TaskSpec

__all__ = ["TinyNetwork", "nats_sss", "nb201", "size_network", "topology_network", "topology_widths"]


def topology_widths(channels: int = 16, cells: int = 5) -> list[int]:
    """The S_t layer widths: ``cells`` x C, reduction to 2C, ``cells`` x 2C, reduction to 4C, ``cells`` x 4C."""
    c = channels
    return [c] * cells + [2 * c] * (cells + 1) + [4 * c] * (cells + 1)


class TinyNetwork(nn.Module):
    """The NB201/NATS macro skeleton with one width per layer (``3N + 2`` layers, N cells per stage).

    Layers ``N`` and ``2N + 1`` are the reduction slots. The stem maps ``in_channels`` to
    ``widths[0]``; layer ``k`` maps the previous layer's width to ``widths[k]``. S_t uses
    :func:`topology_widths`; S_s uses its five searched widths with N = 1.

    Args:
        dim: 1 or 2 spatial axes.
        kind: ``"point"`` (stride-2 residual reduction blocks, pooled classifier) or
            ``"dense"`` (stride-1 cells in the reduction slots, per-position linear map).
        in_channels, num_outputs: the task's input channels and outputs.
        arch: an NB201 cell string, used by every cell.
        widths: one output width per layer.
    """

    def __init__(self, dim: int, kind: str, in_channels: int, num_outputs: int, arch: str, widths: Sequence[int]) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) % 3 != 2 or min(widths, default=0) <= 0:
            raise ValueError(f"widths must be 3N + 2 positive layer widths, got {widths}")
        if kind not in ("point", "dense"):
            raise ValueError(f"kind must be 'point' or 'dense', got {kind!r}")
        n = len(widths) // 3
        self.arch, self.kind, self.widths = TOPOLOGY.to_string(arch), kind, tuple(widths)
        self.stem = nn.Sequential(conv(dim, in_channels, widths[0], 3, padding=1, bias=False), batch_norm(dim, widths[0]))
        layers: list[nn.Module] = []
        c_prev = widths[0]
        for index, c in enumerate(widths):
            if index in (n, 2 * n + 1) and kind == "point":
                layers.append(ResNetBasicblock(dim, c_prev, c, stride=2))
            else:
                layers.append(InferCell(dim, self.arch, c_prev, c))
            c_prev = c
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(batch_norm(dim, c_prev), nn.ReLU(inplace=False))
        self.head = build_head(kind, c_prev, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.lastact(self.cells(self.stem(x))))

    def extra_repr(self) -> str:
        return f"kind={self.kind}, widths={list(self.widths)}, arch={self.arch}"


def topology_network(
    arch: str,
    *,
    dim: int = 2,
    kind: str = "point",
    in_channels: int = 3,
    num_outputs: int = 10,
    channels: int = 16,
    cells: int = 5,
) -> TinyNetwork:
    """An S_t (NAS-Bench-201) network without a TaskSpec; the defaults are CIFAR-10's benchmark network."""
    if channels <= 0 or cells <= 0:
        raise UsageError(f"nb201 network: channels and cells must be positive, got channels={channels}, cells={cells}")
    return TinyNetwork(dim, kind, in_channels, num_outputs, arch, topology_widths(channels, cells))


def size_network(arch: str, *, dim: int = 2, kind: str = "point", in_channels: int = 3, num_outputs: int = 10) -> TinyNetwork:
    """An S_s (NATS size space) network from ``c0:c1:c2:c3:c4`` without a TaskSpec.

    Channel flow (xautodl ``DynamicShapeTinyNet``): stem 3x3 ``in -> c0``; cell ``c0 -> c0``;
    reduction ``c0 -> c1``; cell ``c1 -> c2``; reduction ``c2 -> c3``; cell ``c3 -> c4``;
    BN-ReLU and head on ``c4``. All cells are :data:`SSS_CELL`.
    """
    return TinyNetwork(dim, kind, in_channels, num_outputs, SSS_CELL, SIZE.widths(arch))


def _require_arch(network: str, arch: object, example: str) -> str:
    if arch is None:
        raise UsageError(f"network {network!r} needs an architecture: pass network option arch={example!r}")
    if not isinstance(arch, str):
        raise UsageError(f"network {network!r}: arch must be a string like {example!r}, got {type(arch).__name__}")
    return arch


@register_network("nb201")
def nb201(spec: TaskSpec, arch: str | None = None, channels: int = 16, cells: int = 5, dropout: float = 0.0) -> nn.Module:
    """An NB201 cell string as the task's network (C = ``channels``, N = ``cells`` per stage).

    ``dropout`` is accepted because the training module passes it to every network; the
    benchmark networks have no dropout, so it is ignored.
    """
    arch = _require_arch("nb201", arch, SSS_CELL)
    return topology_network(
        arch,
        dim=spec.dims,
        kind=spec.kind,
        in_channels=spec.in_channels,
        num_outputs=spec.num_outputs,
        channels=channels,
        cells=cells,
    )


@register_network("nats_sss")
def nats_sss(spec: TaskSpec, arch: str | None = None, dropout: float = 0.0) -> nn.Module:
    """A NATS size-space string ``c0:c1:c2:c3:c4`` as the task's network (``dropout`` ignored, as for ``nb201``)."""
    arch = _require_arch("nats_sss", arch, "64:64:64:64:64")
    return size_network(arch, dim=spec.dims, kind=spec.kind, in_channels=spec.in_channels, num_outputs=spec.num_outputs)
