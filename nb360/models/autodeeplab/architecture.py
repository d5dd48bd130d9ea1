"""Auto-DeepLab architectures as plain data, and the two decoders that derive them from a search.

An architecture is a cell genotype plus a network path. The cell has ``steps`` nodes; node
``i`` sums two inputs, each an operation (one of the DARTS primitives but ``none``) on an
earlier state: 0 is the output of the layer before the previous one, 1 that of the previous
layer, ``2 + j`` node ``j``. The path gives, for each of the network's layers, the spatial
level of its cell: level ``L`` works at ``1/2**(L + 2)`` of the (padded) input resolution
(1/4 .. 1/32 for four levels); consecutive layers differ by at most one level and the first
layer follows the stem at level 0, so it is at level 0 or 1.

Network-level weights ``betas`` have shape ``(layers, levels, 3)``: ``betas[l, s, r]`` scores
the move from level ``s`` of layer ``l - 1`` (the stem for ``l = 0``) to level ``s - 1 + r``
of layer ``l`` (r = 0: finer, 1: same, 2: coarser). Each source's valid moves are
normalised by a softmax; at the finest and the coarsest level, with two moves only, the
softmax is scaled by 2/3 (as in the reference). :func:`decode_path` is the Viterbi
maximisation of the product of these weights along a path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from nb360.errors import UsageError
from nb360.io import write_json
from nb360.models.darts.genotype import Cell, read_json_file
from nb360.models.darts.ops import PRIMITIVES
from nb360.models.darts.supernet import derive_cell

__all__ = ["Architecture", "decode_cell", "decode_path", "transition_weights", "path_score", "pad_to_power_of_two"]


@dataclass(frozen=True)
class Architecture:
    """A derived Auto-DeepLab architecture: ``cell`` ((operation, input) per node input) and ``path`` (level per layer)."""

    cell: Cell
    path: tuple[int, ...]
    levels: int = 4

    @property
    def steps(self) -> int:
        return len(self.cell) // 2

    def validate(self) -> Architecture:
        """Check cell and path; raise a one-line :class:`UsageError` naming the first problem."""
        if not self.cell or len(self.cell) % 2:
            raise UsageError(f"autodeeplab arch: the cell needs two inputs per node, got {len(self.cell)} entries")
        for position, (op, index) in enumerate(self.cell):
            node = position // 2
            if op not in PRIMITIVES or op == "none":
                raise UsageError(f"autodeeplab arch: unknown operation {op!r}; choose one of: {', '.join(PRIMITIVES[1:])}")
            if not 0 <= index < node + 2:
                raise UsageError(f"autodeeplab arch: node {node} takes input {index}, but only states 0..{node + 1} exist")
        if not self.path:
            raise UsageError("autodeeplab arch: the path needs at least one layer")
        previous = 0
        for layer, level in enumerate(self.path):
            if not 0 <= level < self.levels or abs(level - previous) > 1:
                raise UsageError(
                    f"autodeeplab arch: layer {layer} is at level {level} after level {previous}; "
                    f"levels are 0..{self.levels - 1} and change by at most one per layer"
                )
            previous = level
        return self

    def to_dict(self) -> dict[str, Any]:
        return {"cell": [list(edge) for edge in self.cell], "path": list(self.path), "levels": self.levels}

    @classmethod
    def from_dict(cls, data: Any) -> Architecture:
        if not isinstance(data, dict) or "cell" not in data or "path" not in data:
            raise UsageError(
                "autodeeplab arch: expected an object with 'cell' ([[operation, input], ...]) and 'path' ([level, ...])"
            )
        unknown = set(data) - {"cell", "path", "levels"}
        if unknown:
            raise UsageError(f"autodeeplab arch: unknown field(s) {', '.join(sorted(unknown))}")
        try:
            cell = tuple((str(op), int(index)) for op, index in data["cell"])
            path = tuple(int(level) for level in data["path"])
            levels = int(data.get("levels", 4))
        except (TypeError, ValueError):
            raise UsageError("autodeeplab arch: 'cell' must be [operation, input] pairs and 'path' a list of levels") from None
        return cls(cell, path, levels).validate()

    def save(self, path: Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Architecture:
        return cls.from_dict(read_json_file(path, "architecture"))


def decode_cell(alphas: Tensor, steps: int) -> Cell:
    """DARTS' rule on ``softmax(alphas)`` (edges x operations): per node the two inputs whose strongest
    non-``none`` operation weighs most, each with that operation (ties: the earlier input, the earlier operation)."""
    op_weights = F.softmax(alphas.detach().cpu().double(), dim=-1)
    return derive_cell(op_weights, op_weights.new_ones(op_weights.shape[0]), steps)


def transition_weights(betas: Tensor) -> Tensor:
    """``betas`` (layers, levels, 3) -> move weights of the same shape; impossible moves weigh 0."""
    levels = betas.shape[1]
    rows = []
    for s in range(levels):
        row = betas[:, s]
        if levels == 1:
            rows.append(
                torch.stack([torch.zeros_like(row[:, 0]), torch.ones_like(row[:, 1]), torch.zeros_like(row[:, 2])], dim=-1)
            )
        elif s == 0:
            rows.append(F.pad(F.softmax(row[:, 1:], dim=-1) * (2 / 3), (1, 0)))
        elif s == levels - 1:
            rows.append(F.pad(F.softmax(row[:, :2], dim=-1) * (2 / 3), (0, 1)))
        else:
            rows.append(F.softmax(row, dim=-1))
    return torch.stack(rows, dim=1)


def path_score(weights: Tensor, path: tuple[int, ...]) -> float:
    """Product of the move weights along ``path`` (starting from level 0 before the first layer)."""
    score, previous = 1.0, 0
    for layer, level in enumerate(path):
        score *= float(weights[layer, previous, level - previous + 1])
        previous = level
    return score


def decode_path(betas: Tensor) -> tuple[int, ...]:
    """The path of maximal :func:`path_score` (Viterbi; ties: the finer level)."""
    weights = transition_weights(betas.detach().cpu().double())
    layers, levels = weights.shape[:2]
    best = torch.full((levels,), -math.inf, dtype=torch.float64)
    best[0] = 0.0  # log-score of the stem, at level 0
    back = torch.zeros(layers, levels, dtype=torch.long)
    for layer in range(layers):
        new = torch.full((levels,), -math.inf, dtype=torch.float64)
        for level in range(levels):
            for source in (level - 1, level, level + 1):
                if not 0 <= source < levels or best[source] == -math.inf:
                    continue
                w = float(weights[layer, source, level - source + 1])
                if w <= 0:
                    continue
                score = float(best[source]) + math.log(w)
                if score > new[level]:
                    new[level], back[layer, level] = score, source
        best = new
    level = int(torch.argmax(best))
    path = [level]
    for layer in range(layers - 1, 0, -1):
        level = int(back[layer, level])
        path.append(level)
    return tuple(reversed(path))


def pad_to_power_of_two(x: Tensor) -> tuple[Tensor, tuple[slice, ...]]:
    """Pad each spatial axis to the next power of two (the extra position first, as the reference pads
    Darcy's 85 x 85 by (22, 21)); return the padded input and the index that crops an output back."""
    pad, index = [], [slice(None), slice(None)]
    for size in x.shape[2:]:
        target = 1 << max(size - 1, 0).bit_length()
        before, after = (target - size + 1) // 2, (target - size) // 2
        index.append(slice(before, before + size))
        pad = [before, after, *pad]  # F.pad lists the last axis first
    if not any(pad):
        return x, tuple(index)
    return F.pad(x, pad), tuple(index)
