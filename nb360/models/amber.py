"""AMBER's 1-D model space (Zhang et al., NB360's ``amber_{ecg,satellite,deepsea}.py``) in PyTorch.

A stem (convolution, kernel 8, then batch norm) is followed by ``layers`` (12) searched layers.
Each layer applies one of seven operations to the previous layer's output:

* ``conv_k8``, ``conv_k4``, ``conv_k8_d10``, ``conv_k4_d10``: "same" convolution (dilation 1 or 10),
  batch norm, a bias, ReLU;
* ``max_pool``, ``avg_pool``: 1x1 convolution, batch norm, ReLU, then pooling of size 4, stride 1
  ("same" padding, the average excluding the padding as TensorFlow does);
* ``identity``.

A layer ``j > 0`` also adds the outputs of any earlier layers (its searched skip connections),
then applies batch norm. After the expansion layers (2, 5 and 8 of 12) the filters double
(32 -> 64 -> 128 -> 256) and every stored layer output goes through a 1x1 convolution to the new
width and a max pool of size and stride 4, so later skips still match. The head flattens, then a
925-unit ReLU layer and a linear output (logits; the task's loss applies softmax/sigmoid).

An architecture is ``{"ops": [12 operation names], "skips": [[0/1 per earlier layer] per layer]}``.
:class:`AmberNet` with ``arch=None`` is the supernet holding every operation's weights (shared by
all architectures; ``forward(x, arch)`` runs one of them); with an ``arch`` it holds only what that
architecture uses (network ``amber``, option ``arch``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nb360.errors import UsageError
from nb360.models import register_network
from nb360.models.ops import SamePadConv
from nb360.tasks import TaskSpec

__all__ = ["OPS", "AmberArch", "AmberNet", "expansion_layers", "draw_arch", "random_arch"]

OPS = ("conv_k8", "conv_k4", "conv_k8_d10", "conv_k4_d10", "max_pool", "avg_pool", "identity")
_CONV = {"conv_k8": (8, 1), "conv_k4": (4, 1), "conv_k8_d10": (8, 10), "conv_k4_d10": (4, 10)}


def expansion_layers(layers: int) -> tuple[int, ...]:
    """The layers after which the filters double (the reference's ``num_layers // 4 * k - 1``, k = 1, 2, 3)."""
    return tuple(layers // 4 * k - 1 for k in (1, 2, 3) if layers // 4 * k - 1 >= 0)


def layer_filters(layers: int, filters: int) -> list[int]:
    out = []
    for i in range(layers):
        out.append(filters)
        if i in expansion_layers(layers):
            filters *= 2
    return out


class AmberArch(dict):
    """An architecture: ``{"ops": [...], "skips": [[...], ...]}``, validated on creation."""

    @classmethod
    def from_dict(cls, data: Any, layers: int | None = None) -> AmberArch:
        if not isinstance(data, dict) or set(data) != {"ops", "skips"}:
            raise UsageError('an AMBER architecture must be an object {"ops": [...], "skips": [[...], ...]}')
        ops, skips = list(data["ops"]), [list(s) for s in data["skips"]]
        n = len(ops)
        if layers is not None and n != layers:
            raise UsageError(f"the AMBER architecture has {n} layers, the network {layers}")
        for op in ops:
            if op not in OPS:
                raise UsageError(f"unknown AMBER operation {op!r} (choose from {', '.join(OPS)})")
        if len(skips) != n or any(len(s) != j for j, s in enumerate(skips)):
            raise UsageError("AMBER skips must list, for layer j, j flags (one per earlier layer)")
        if any(flag not in (0, 1) for s in skips for flag in s):
            raise UsageError("AMBER skip flags must be 0 or 1")
        return cls(ops=ops, skips=[[int(f) for f in s] for s in skips])

    @classmethod
    def load(cls, path: Path) -> AmberArch:
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise UsageError(f"{path} is not valid JSON: {err}") from None
        return cls.from_dict(data)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        return {"ops": list(self["ops"]), "skips": [list(s) for s in self["skips"]]}


def _same_pad(length: int, kernel: int, stride: int) -> tuple[int, int]:
    out = math.ceil(length / stride)
    total = max((out - 1) * stride + kernel - length, 0)
    return total // 2, total - total // 2


class ConvOp(nn.Module):
    def __init__(self, channels: int, kernel: int, dilation: int) -> None:
        super().__init__()
        self.conv = SamePadConv(1, channels, channels, kernel, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm1d(channels)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)) + self.bias)


class PoolOp(nn.Module):
    """1x1 convolution, BN, ReLU, then a stride-1 pool of size 4 with "same" padding."""

    def __init__(self, channels: int, kind: str, size: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm1d(channels)
        self.kind, self.size = kind, size

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.conv(x)))
        pad = _same_pad(x.shape[-1], self.size, 1)
        if self.kind == "max":
            return F.max_pool1d(F.pad(x, pad, value=-math.inf), self.size, 1)
        summed = F.avg_pool1d(F.pad(x, pad), self.size, 1)
        counts = F.avg_pool1d(F.pad(torch.ones_like(x[:1, :1]), pad), self.size, 1)
        return summed / counts


def build_op(name: str, channels: int) -> nn.Module:
    if name in _CONV:
        return ConvOp(channels, *_CONV[name])
    if name in ("max_pool", "avg_pool"):
        return PoolOp(channels, name.split("_")[0])
    if name == "identity":
        return nn.Identity()
    raise UsageError(f"unknown AMBER operation {name!r}")


class Reduce(nn.Module):
    """At an expansion point: 1x1 convolution to the new width, max pool of size and stride 4 ("same")."""

    def __init__(self, in_channels: int, out_channels: int, factor: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return F.max_pool1d(F.pad(x, _same_pad(x.shape[-1], self.factor, self.factor), value=-math.inf), self.factor, self.factor)


def _needed(arch: AmberArch | None, point: int, i: int, layers: int) -> bool:
    """Whether stored output ``i`` is used after expansion point ``point`` (always, in the supernet)."""
    if arch is None or i == point:
        return True
    return any(arch["skips"][j][i] for j in range(point + 1, layers))


class AmberNet(nn.Module):
    """The AMBER supernet (``arch=None``) or one of its architectures.

    Args:
        in_channels, length, num_outputs: the task's input channels and length, output units.
        layers, filters: searched layers (12) and the first layers' filters (32).
        fc_units: the hidden units of the head (925).
        dropout: dropout after every layer and in the head (0: none).
        arch: an architecture (``AmberArch`` data); ``None`` builds every operation.
    """

    def __init__(
        self,
        in_channels: int,
        length: int,
        num_outputs: int,
        layers: int = 12,
        filters: int = 32,
        fc_units: int = 925,
        dropout: float = 0.0,
        arch: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.arch = None if arch is None else AmberArch.from_dict(arch, layers)
        self.num_layers = layers
        self.filters = layer_filters(layers, filters)
        self.expansions = expansion_layers(layers)
        self.stem = nn.Sequential(SamePadConv(1, in_channels, filters, 8, bias=False), nn.BatchNorm1d(filters))
        self.ops = nn.ModuleList()
        for j, channels in enumerate(self.filters):
            names = OPS if self.arch is None else (self.arch["ops"][j],)
            self.ops.append(nn.ModuleDict({name: build_op(name, channels) for name in names}))
        self.skip_bn = nn.ModuleList(nn.BatchNorm1d(c) for c in self.filters)
        self.reduce = nn.ModuleDict()
        for p in self.expansions:
            if p + 1 < layers:
                for i in range(p + 1):
                    if _needed(self.arch, p, i, layers):
                        self.reduce[f"{p}_{i}"] = Reduce(self.filters[p], self.filters[p + 1])
        out_length = length
        for p in self.expansions:
            if p + 1 < layers:
                out_length = math.ceil(out_length / 4)
        self.length, self.out_length = length, out_length
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.filters[-1] * out_length, fc_units)
        self.out = nn.Linear(fc_units, num_outputs)

    def forward(self, x: Tensor, arch: dict[str, Any] | None = None) -> Tensor:
        arch = arch or self.arch
        if arch is None:
            raise ValueError("the AMBER supernet needs an architecture to run")
        x = self.stem(x)
        stored: list[Tensor | None] = []
        for j in range(self.num_layers):
            out = self.ops[j][arch["ops"][j]](x)
            if j > 0:
                for i, flag in enumerate(arch["skips"][j]):
                    if flag:
                        out = out + stored[i]
                out = self.skip_bn[j](out)
            out = self.dropout(out)
            stored.append(out)
            x = out
            if j in self.expansions and j + 1 < self.num_layers:
                stored = [self.reduce[f"{j}_{i}"](s) if f"{j}_{i}" in self.reduce else None for i, s in enumerate(stored)]
                x = stored[-1]
        if x.shape[-1] != self.out_length:
            raise ValueError(
                f"the AMBER network was built for inputs of length {self.length} "
                f"({self.out_length} after the expansions, got {x.shape[-1]}): set the network's length option"
            )
        x = self.dropout(F.relu(self.fc(self.dropout(x.flatten(1)))))
        return self.out(x)


@register_network("amber")
def _build(
    spec: TaskSpec,
    arch: dict[str, Any],
    layers: int = 12,
    filters: int = 32,
    fc_units: int = 925,
    dropout: float = 0.0,
    length: int | None = None,
) -> nn.Module:
    """The child network of ``arch``; ``length``: the input length if not the task's (the head flattens)."""
    if spec.dims != 1 or spec.kind != "point":
        raise UsageError(f"network 'amber' is a 1-D classifier; task {spec.name!r} is {spec.dims}-D {spec.kind}")
    length = length or spec.input_shape[-1]
    return AmberNet(spec.in_channels, length, spec.num_outputs, layers, filters, fc_units, dropout, arch=arch)


def draw_arch(arch: dict[str, Any], stem: Path) -> list[Path]:
    """``<stem>.png`` and ``<stem>.svg``: the layers as a column of boxes, skip connections as arcs on the right."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops, skips = arch["ops"], arch["skips"]
    n = len(ops)
    expansions = set(expansion_layers(n))
    colours = {"conv": "#9ecae1", "pool": "#fdae6b", "identity": "#d9d9d9"}
    fig, ax = plt.subplots(figsize=(5.0, 0.55 * (n + 2)))
    for j, op in enumerate(ops):
        y = n - j
        kind = "conv" if op.startswith("conv") else "pool" if op.endswith("pool") else "identity"
        ax.add_patch(plt.Rectangle((0, y - 0.35), 2.0, 0.7, facecolor=colours[kind], edgecolor="0.3"))
        ax.text(1.0, y, f"{j}: {op}", ha="center", va="center", fontsize=8)
        if j + 1 < n:
            ax.annotate("", xy=(1.0, y - 0.65), xytext=(1.0, y - 0.35), arrowprops={"arrowstyle": "->", "color": "0.3"})
        if j in expansions and j + 1 < n:
            ax.text(-0.1, y - 0.5, "x2 filters, /4 length", ha="right", va="center", fontsize=7, color="0.4")
        for i, flag in enumerate(skips[j]):
            if flag:
                yi = n - i
                ax.annotate(
                    "",
                    xy=(2.0, y),
                    xytext=(2.0, yi),
                    arrowprops={"arrowstyle": "->", "color": "#e6550d", "connectionstyle": f"arc3,rad={-0.15 - 0.04 * (j - i)}"},
                )
    ax.set_xlim(-2.2, 4.5)
    ax.set_ylim(0.3, n + 0.8)
    ax.axis("off")
    ax.set_title(f"AMBER architecture ({sum(map(sum, skips))} skip connections)", fontsize=9)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    for path in paths:
        fig.savefig(path, bbox_inches="tight", dpi=120)
    plt.close(fig)
    return paths


def random_arch(layers: int = 12, generator: torch.Generator | None = None, skip_prob: float = 0.4) -> AmberArch:
    """A uniformly random operation per layer, each skip present with ``skip_prob`` (tests, random baselines)."""
    ops = [OPS[int(i)] for i in torch.randint(len(OPS), (layers,), generator=generator)]
    skips: list[Sequence[int]] = [[int(v) for v in (torch.rand(j, generator=generator) < skip_prob)] for j in range(layers)]
    return AmberArch.from_dict({"ops": ops, "skips": skips})
