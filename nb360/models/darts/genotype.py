"""DARTS genotypes as plain data: JSON that round-trips, validates, and builds the evaluation network.

A cell has ``steps`` intermediate nodes; node ``i`` (0-based) sums two inputs, each an
operation applied to an earlier state: 0 and 1 are the cell's inputs (the outputs of the
previous two cells), ``2 + j`` is intermediate node ``j``. The cell outputs the
concatenation of the states listed in ``*_concat``. Dense tasks have no reduction cell,
so their genotype's ``reduce`` is ``None``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nb360.errors import UsageError
from nb360.io import write_json
from nb360.models.darts.ops import PRIMITIVES

__all__ = ["Genotype", "Cell", "read_json_file"]

Cell = tuple[tuple[str, int], ...]


def _cell(value: Any, what: str) -> Cell:
    try:
        return tuple((str(op), int(index)) for op, index in value)
    except (TypeError, ValueError):
        raise UsageError(f"genotype: {what} must be a list of [operation, input] pairs, got {value!r}") from None


@dataclass(frozen=True)
class Genotype:
    normal: Cell
    normal_concat: tuple[int, ...]
    reduce: Cell | None = None
    reduce_concat: tuple[int, ...] | None = None

    @property
    def steps(self) -> int:
        return len(self.normal) // 2

    def validate(self) -> Genotype:
        """Check the cell structure; raise a one-line :class:`UsageError` describing the first problem."""
        cells = [("normal", self.normal, self.normal_concat)]
        if self.reduce is not None or self.reduce_concat is not None:
            cells.append(("reduce", self.reduce or (), self.reduce_concat or ()))
        for name, cell, concat in cells:
            if not cell or len(cell) % 2:
                raise UsageError(f"genotype: the {name} cell needs two inputs per node, got {len(cell)} entries")
            steps = len(cell) // 2
            if steps != self.steps:
                raise UsageError(f"genotype: the normal cell has {self.steps} nodes but the {name} cell has {steps}")
            for position, (op, index) in enumerate(cell):
                node = position // 2
                if op not in PRIMITIVES or op == "none":
                    raise UsageError(
                        f"genotype: unknown operation {op!r} in the {name} cell; choose one of: {', '.join(PRIMITIVES[1:])}"
                    )
                if not 0 <= index < node + 2:
                    raise UsageError(
                        f"genotype: node {node} of the {name} cell takes input {index}, but only states 0..{node + 1} exist"
                    )
            if not concat or any(not 0 <= i < steps + 2 for i in concat):
                raise UsageError(f"genotype: the {name} cell concatenates states {list(concat)}, outside 0..{steps + 1}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "normal": [list(edge) for edge in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": None if self.reduce is None else [list(edge) for edge in self.reduce],
            "reduce_concat": None if self.reduce_concat is None else list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Genotype:
        if not isinstance(data, dict) or "normal" not in data or "normal_concat" not in data:
            raise UsageError(
                "genotype: expected an object with 'normal' and 'normal_concat' (and optionally 'reduce', 'reduce_concat')"
            )
        unknown = set(data) - {"normal", "normal_concat", "reduce", "reduce_concat"}
        if unknown:
            raise UsageError(f"genotype: unknown field(s) {', '.join(sorted(unknown))}")
        try:
            normal_concat = tuple(int(i) for i in data["normal_concat"])
            reduce_concat = None if data.get("reduce_concat") is None else tuple(int(i) for i in data["reduce_concat"])
        except (TypeError, ValueError):
            raise UsageError("genotype: '*_concat' must be lists of state indices") from None
        reduce = None if data.get("reduce") is None else _cell(data["reduce"], "'reduce'")
        return cls(_cell(data["normal"], "'normal'"), normal_concat, reduce, reduce_concat).validate()

    def save(self, path: Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        return cls.from_dict(read_json_file(path))


def read_json_file(path: str | Path, what: str = "genotype") -> Any:
    """The JSON content of an architecture file; a one-line :class:`UsageError` if it cannot be read or parsed."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise UsageError(f"cannot read {what} file {path}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise UsageError(f"{what} file {path} is not valid JSON: {err}") from None
