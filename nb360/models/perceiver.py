"""Perceiver IO (Jaegle et al., 2022) for the NB360 tasks: the network behind ``--method perceiver``.

The input (channels-first, 1-D or 2-D) becomes a sequence of positions, each carrying its
channels and Fourier features of its coordinates. A small latent array reads it through
cross-attention, is refined by latent self-attention, and is read by output queries through
a decoder cross-attention:

* point tasks: one learned query, then a linear map to the logits;
* dense tasks: one query per output position, made of the Fourier features of that position
  (the Perceiver IO recipe for dense outputs such as optical flow), then a linear map to the
  per-position outputs, returned channels-first like nb360's dense heads. ``dense_queries="single"``
  instead decodes one learned query and maps it linearly to the whole output (the
  ``DenseOutputAdapter`` of the NB360 Perceiver code).

Defaults are those of the NB360 Perceiver runs (``perceiver-io/scripts/nb360/*.py``, ``run_nb360.sh``):
32 latents of 128 channels, 3 encoder layers (the second one's weights are shared by all layers
after the first), 3 latent self-attention layers per encoder layer, 4 heads in the encoder,
1 head in the decoder, 32 frequency bands up to the input's resolution, no dropout. The layers
are pre-norm residual blocks whose MLP keeps the width (``C -> C -> C`` with GELU); attention
projects to the query's width, as ``nn.MultiheadAttention`` with ``kdim``/``vdim`` does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from nb360.models import register_network
from nb360.tasks import TaskSpec

__all__ = ["fourier_features", "num_fourier_channels", "PerceiverIO", "build_perceiver"]


def num_fourier_channels(dims: int, num_bands: int) -> int:
    """Channels of :func:`fourier_features`: the raw coordinate plus a sine and a cosine per band, per axis."""
    return dims * (2 * num_bands + 1)


def fourier_features(shape: Sequence[int], num_bands: int, max_resolution: Sequence[int] | None = None) -> Tensor:
    """Fourier position features of a grid, ``(prod(shape), dims * (2 * num_bands + 1))``, row-major positions.

    Coordinates run from -1 to 1 along each axis. Axis ``d`` uses ``num_bands`` frequencies
    spaced linearly from 1 to ``max_resolution[d] / 2`` (the Nyquist frequency of that
    resolution; by default the grid's own size). Channel order: the coordinates of all axes,
    then ``sin(pi f x)`` for every axis and band, then ``cos(pi f x)`` likewise.
    """
    shape = [int(s) for s in shape]
    resolution = shape if max_resolution is None else [int(r) for r in max_resolution]
    if len(resolution) != len(shape):
        raise ValueError(f"max_resolution {tuple(resolution)} must have one entry per axis of {tuple(shape)}")
    axes = [torch.linspace(-1.0, 1.0, s, dtype=torch.float64) for s in shape]
    coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(shape))
    scaled = [
        coords[:, d : d + 1] * torch.linspace(1.0, resolution[d] / 2.0, num_bands, dtype=torch.float64) for d in range(len(shape))
    ]
    angles = math.pi * torch.cat(scaled, dim=1)
    return torch.cat([coords, torch.sin(angles), torch.cos(angles)], dim=1).float()


class _Attention(nn.Module):
    """Pre-norm multi-head attention from ``queries`` to ``context`` (itself for self-attention); residual added outside."""

    def __init__(self, q_channels: int, kv_channels: int, heads: int, dropout: float, cross: bool) -> None:
        super().__init__()
        if q_channels % heads:
            raise ValueError(f"{heads} attention heads do not divide the {q_channels} query channels")
        self.q_norm = nn.LayerNorm(q_channels)
        self.kv_norm = nn.LayerNorm(kv_channels) if cross else None
        self.attention = nn.MultiheadAttention(
            q_channels, heads, dropout=dropout, kdim=kv_channels, vdim=kv_channels, batch_first=True
        )

    def forward(self, queries: Tensor, context: Tensor | None = None) -> Tensor:
        q = self.q_norm(queries)
        kv = q if self.kv_norm is None else self.kv_norm(context)
        return self.attention(q, kv, kv, need_weights=False)[0]


class _Block(nn.Module):
    """Attention then a width-preserving MLP, each as a pre-norm residual branch (with dropout on the branch)."""

    def __init__(self, q_channels: int, kv_channels: int, heads: int, dropout: float, cross: bool) -> None:
        super().__init__()
        self.attend = _Attention(q_channels, kv_channels, heads, dropout, cross)
        self.mlp = nn.Sequential(
            nn.LayerNorm(q_channels), nn.Linear(q_channels, q_channels), nn.GELU(), nn.Linear(q_channels, q_channels)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        x = x + self.drop(self.attend(x, context))
        return x + self.drop(self.mlp(x))


class _EncoderLayer(nn.Module):
    """Cross-attention from the latents to the input, then ``self_layers`` latent self-attention blocks."""

    def __init__(
        self, latent_channels: int, in_channels: int, cross_heads: int, self_heads: int, self_layers: int, dropout: float
    ):
        super().__init__()
        self.cross = _Block(latent_channels, in_channels, cross_heads, dropout, cross=True)
        self.latent = nn.ModuleList(
            _Block(latent_channels, latent_channels, self_heads, dropout, cross=False) for _ in range(self_layers)
        )

    def forward(self, latents: Tensor, inputs: Tensor) -> Tensor:
        latents = self.cross(latents, inputs)
        for block in self.latent:
            latents = block(latents)
        return latents


class PerceiverIO(nn.Module):
    """Perceiver IO on channels-first inputs ``(B, C, *spatial)``.

    Returns ``(B, num_outputs)`` logits for ``kind="point"`` and ``(B, num_outputs, *spatial)``
    for ``kind="dense"``. The position features follow the input's size, so inputs of another
    size than ``input_shape`` (a fixture's grid) work too, except with ``dense_queries="single"``,
    whose output layer is sized for ``input_shape``.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        kind: Literal["point", "dense"] = "point",
        num_latents: int = 32,
        num_latent_channels: int = 128,
        num_layers: int = 3,
        num_self_attention_layers_per_block: int = 3,
        num_cross_attention_heads: int = 4,
        num_self_attention_heads: int = 4,
        num_decoder_heads: int = 1,
        num_frequency_bands: int = 32,
        max_resolution: Sequence[int] | None = None,
        dense_queries: Literal["position", "single"] = "position",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if kind not in ("point", "dense"):
            raise ValueError(f"kind must be 'point' or 'dense', got {kind!r}")
        if dense_queries not in ("position", "single"):
            raise ValueError(f"dense_queries must be 'position' or 'single', got {dense_queries!r}")
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        in_channels, *spatial = (int(s) for s in input_shape)
        self.spatial, self.kind, self.num_outputs, self.num_layers = tuple(spatial), kind, num_outputs, num_layers
        self.num_bands, self.max_resolution = num_frequency_bands, max_resolution
        self._positions: dict[tuple, Tensor] = {}  # Fourier features per (input size, device, dtype)
        pos_channels = num_fourier_channels(len(spatial), num_frequency_bands)
        make_layer = lambda: _EncoderLayer(  # noqa: E731
            num_latent_channels,
            in_channels + pos_channels,
            num_cross_attention_heads,
            num_self_attention_heads,
            num_self_attention_layers_per_block,
            dropout,
        )
        self.latents = nn.Parameter(torch.empty(num_latents, num_latent_channels))
        self.first = make_layer()
        self.repeated = make_layer() if num_layers > 1 else None  # weights shared by layers 2..num_layers
        self.position_queries = kind == "dense" and dense_queries == "position"
        if self.position_queries:
            query_channels, outputs = pos_channels, num_outputs
            self.query = None
        else:
            query_channels = num_latent_channels
            outputs = num_outputs * (math.prod(spatial) if kind == "dense" else 1)
            self.query = nn.Parameter(torch.empty(1, query_channels))
        self.decoder = _Block(query_channels, num_latent_channels, num_decoder_heads, dropout, cross=True)
        self.head = nn.Linear(query_channels, outputs)
        with torch.no_grad():
            for p in (self.latents, self.query):
                if p is not None:
                    p.normal_(0.0, 0.02).clamp_(-2.0, 2.0)

    def positions(self, size: Sequence[int], device: torch.device, dtype: torch.dtype) -> Tensor:
        """Fourier features of an input of spatial ``size`` (up to its own resolution unless ``max_resolution`` is set)."""
        key = (tuple(size), device, dtype)
        if key not in self._positions:
            self._positions[key] = fourier_features(size, self.num_bands, self.max_resolution).to(device, dtype)
        return self._positions[key]

    def forward(self, x: Tensor) -> Tensor:
        b, size = x.shape[0], tuple(x.shape[2:])
        if len(size) != len(self.spatial) or (self.kind == "dense" and not self.position_queries and size != self.spatial):
            raise ValueError(f"Perceiver built for inputs of size {self.spatial}, got {size}")
        positions = self.positions(size, x.device, x.dtype)
        inputs = torch.cat([x.flatten(2).transpose(1, 2), positions.expand(b, -1, -1)], dim=2)
        latents = self.first(self.latents.expand(b, -1, -1), inputs)
        for _ in range(self.num_layers - 1):
            latents = self.repeated(latents, inputs)
        queries = (positions if self.position_queries else self.query).expand(b, -1, -1)
        out = self.head(self.decoder(queries, latents))
        if self.kind == "point":
            return out[:, 0]
        # (B, positions, outputs) -> channels first
        return (
            out.transpose(1, 2).reshape(b, self.num_outputs, *size)
            if self.position_queries
            else out.reshape(b, self.num_outputs, *size)
        )


@register_network("perceiver")
def build_perceiver(spec: TaskSpec, dropout: float = 0.0, **options: object) -> PerceiverIO:
    """Perceiver IO for a task (input shape, outputs, point/dense from the spec); ``options`` as :class:`PerceiverIO`."""
    return PerceiverIO(spec.input_shape, spec.num_outputs, spec.kind, dropout=dropout, **options)  # type: ignore[arg-type]
