"""The NAS-Bench-101 space as data: its 423,624 cells in enumeration order, their strings and indexes.

A cell is written as its canonical adjacency matrix, row-major 0/1 (the reference's
``raw_adjacency`` form), ``|`` and its interior op labels as digits (0 ``conv3x3-bn-relu``,
1 ``conv1x1-bn-relu``, 2 ``maxpool3x3``). The Inception-like cell of the reference README is
``0111100000000100000010000001000001000000010000000|01200``; the 2-vertex cell ``0100|``.

The index order is the reference enumeration's (:mod:`nb360.nb101.enumerate`): by number of
vertices, then edge bits, then labels. The canonical codes ship as ``cells.npz`` (12 KB of
compressed differences); ``tests/nb101`` re-derives them. Any spec isomorphic to a cell (any
vertex order, extra pruned vertices) has that cell's index. Torch-free.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import numpy as np

from nb360.errors import UsageError
from nb360.nb101.spec import INPUT, OPS, OUTPUT, ModelSpec, OutOfDomainError, brute_force_canonical, pack

__all__ = ["NB101Space", "NB101", "format_codes"]


def format_codes(codes: np.ndarray) -> list[str]:
    """Cell strings of :func:`~nb360.nb101.spec.pack` codes (vectorised)."""
    from nb360.nb101.enumerate import unpack_codes

    codes = np.asarray(codes, dtype=np.uint32)
    vertices, A, labels = unpack_codes(codes)
    out: list[str] = [""] * len(codes)
    for n in np.unique(vertices):
        rows = np.flatnonzero(vertices == n)
        n = int(n)
        chars = np.concatenate(
            [
                A[rows][:, :n, :n].reshape(len(rows), n * n).astype(np.uint8) + ord("0"),
                np.full((len(rows), 1), ord("|"), dtype=np.uint8),
                labels[rows][:, 1 : n - 1].astype(np.uint8) + ord("0"),
            ],
            axis=1,
        )
        strings = np.ascontiguousarray(chars).view(f"S{chars.shape[1]}").ravel().astype(str).tolist()
        for r, s in zip(rows.tolist(), strings):
            out[r] = s
    return out


class NB101Space:
    """The NB101 cells (``len`` 423,624), registered as space ``nb101``.

    Architectures are given as an index, a cell string, a :class:`ModelSpec`, a
    ``{"matrix", "ops"}`` mapping or a ``(matrix, ops)`` pair.
    """

    name = "nb101"

    def __init__(self, codes: np.ndarray | None = None) -> None:
        self._codes = None if codes is None else np.asarray(codes, dtype=np.uint32)

    @functools.cached_property
    def codes(self) -> np.ndarray:
        """``(N,)`` uint32 canonical codes, ascending (= index order)."""
        if self._codes is not None:
            return self._codes
        with resources.files("nb360.nb101").joinpath("cells.npz").open("rb") as f, np.load(f) as z:
            codes = np.cumsum(z["diffs"].astype(np.int64)).astype(np.uint32)
        codes.flags.writeable = False
        return codes

    def __len__(self) -> int:
        return len(self.codes)

    @functools.cached_property
    def archs(self) -> tuple[str, ...]:
        return tuple(format_codes(self.codes))

    def __repr__(self) -> str:
        return f"NB101Space({len(self)} cells)"

    # ----------------------------------------------------------------------- conversions
    def arch(self, index: int) -> str:
        if not 0 <= int(index) < len(self):
            raise UsageError(f"space {self.name}: index {index} is out of range 0..{len(self) - 1}")
        return self.archs[int(index)]

    def code_index(self, code: int) -> int:
        """Index of a canonical code (:class:`OutOfDomainError` if it is not a cell)."""
        i = int(np.searchsorted(self.codes, code))
        if i >= len(self.codes) or int(self.codes[i]) != int(code):
            raise OutOfDomainError(f"code {code:#x} is not a canonical NB101 cell")
        return i

    def parse(self, arch: str) -> ModelSpec:
        """The (canonical) spec of a cell string; malformed strings raise a one-line :class:`UsageError`."""
        bits, sep, ops = str(arch).strip().partition("|")
        n = int(round(len(bits) ** 0.5))
        if sep != "|" or n * n != len(bits) or n < 2 or set(bits) - {"0", "1"} or len(ops) != n - 2 or set(ops) - {"0", "1", "2"}:
            raise UsageError(
                f"NB101 cell {arch!r}: expected V*V matrix bits (row-major 0/1), '|' and V-2 op digits 0/1/2, "
                "e.g. '0100|' or '011001000|0'"
            )
        matrix = np.array([int(b) for b in bits], dtype=np.int8).reshape(n, n)
        return ModelSpec(matrix, [INPUT, *(OPS[int(c)] for c in ops), OUTPUT])

    def spec(self, arch: Any) -> ModelSpec:
        """The cell's canonical :class:`ModelSpec`."""
        return self.parse(self.arch(self.index(arch)))

    def index(self, arch: Any) -> int:
        """Index of a cell given as an index, a string, a spec or a ``{"matrix", "ops"}`` mapping (isomorphism-invariant)."""
        if isinstance(arch, (int, np.integer)):
            self.arch(int(arch))
            return int(arch)
        spec = self.parse(arch) if isinstance(arch, str) else ModelSpec.coerce(arch)
        return self.code_index(self.canonical_code(spec))

    @staticmethod
    def canonical_code(spec: ModelSpec) -> int:
        """The canonical code of a spec's pruned cell (:class:`OutOfDomainError` outside the data set)."""
        labels = spec.labels()  # checks the spec
        code = pack(spec.matrix, labels)
        return code if spec.num_vertices <= 3 else brute_force_canonical(spec.matrix, labels)

    def to_string(self, arch: Any) -> str:
        return self.arch(self.index(arch))

    def __contains__(self, arch: Any) -> bool:
        try:
            self.index(arch)
        except UsageError:
            return False
        return True


NB101 = NB101Space()
