"""Discrete architecture spaces as products of choices, with a fixed index order.

A space of this kind is a tuple of *decisions* (an NB201 cell edge, a layer width),
each with its own tuple of *choices*. An architecture is one choice per decision: as
data it is a tuple of choice codes (``codes``), as text the space's own string
(``|nor_conv_3x3~0|+...`` or ``64:32:...``). Benchmarks store architectures in an order
of their own (NB201 shuffles), so every space also carries its index order. The code
here is torch-free: tabular benchmarks and search algorithms use it without loading
PyTorch.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from nb360.errors import UsageError

__all__ = ["ProductSpace", "HasToStr", "Codes"]

Codes = tuple[int, ...]


@runtime_checkable
class HasToStr(Protocol):
    """Anything with NATS-Bench's ``tostr()`` (e.g. xautodl's ``CellStructure``)."""

    def tostr(self) -> str: ...


class ProductSpace:
    """A product of ``decisions``; subclasses define the string form, the index order and the canonical key.

    Args:
        name: the space's registry name.
        decision_names: one name per decision (e.g. ``"1<-0"`` for an NB201 edge).
        choices: for every decision, its choices in code order.
    """

    def __init__(self, name: str, decision_names: Sequence[str], choices: Sequence[Sequence[str]]) -> None:
        if len(decision_names) != len(choices):
            raise ValueError("one tuple of choices per decision")
        self.name = name
        self.decision_names = tuple(decision_names)
        self.choices = tuple(tuple(c) for c in choices)

    # --- string form (subclasses) -------------------------------------------------
    def format(self, codes: Codes) -> str:
        raise NotImplementedError

    def parse(self, arch: str) -> Codes:
        """Codes of an architecture string; malformed strings raise a one-line :class:`UsageError`."""
        raise NotImplementedError

    def _ordered_strings(self) -> tuple[str, ...]:
        """All architecture strings in the benchmark's index order."""
        raise NotImplementedError

    def canonical(self, arch: str | Codes) -> str:
        """A key shared by architectures that compute the same function (identity by default)."""
        return self.to_string(arch)

    # --- sizes and orders ---------------------------------------------------------
    @property
    def num_decisions(self) -> int:
        return len(self.choices)

    @property
    def radices(self) -> tuple[int, ...]:
        return tuple(len(c) for c in self.choices)

    def __len__(self) -> int:
        return int(np.prod(self.radices))

    @functools.cached_property
    def archs(self) -> tuple[str, ...]:
        """Every architecture string, in index order."""
        archs = self._ordered_strings()
        if len(archs) != len(self) or len(set(archs)) != len(archs):
            raise RuntimeError(f"space {self.name}: the index order must list each of the {len(self)} architectures once")
        return archs

    @functools.cached_property
    def _index(self) -> dict[str, int]:
        return {arch: i for i, arch in enumerate(self.archs)}

    @functools.cached_property
    def codes_array(self) -> np.ndarray:
        """``(len(space), num_decisions)`` int8 array: the codes of every architecture, in index order."""
        return np.array([self.parse(a) for a in self.archs], dtype=np.int8)

    def arch(self, index: int) -> str:
        if not 0 <= int(index) < len(self):
            raise UsageError(f"space {self.name}: index {index} is out of range 0..{len(self) - 1}")
        return self.archs[int(index)]

    def index(self, arch: str | Codes | HasToStr | int) -> int:
        """Index of an architecture given as a string, codes, an object with ``tostr()`` or an index."""
        if isinstance(arch, (int, np.integer)):
            self.arch(int(arch))
            return int(arch)
        return self._index[self.to_string(arch)]

    def to_string(self, arch: str | Codes | HasToStr) -> str:
        """The normalised string of ``arch`` (validated)."""
        if isinstance(arch, HasToStr):
            arch = arch.tostr()
        if isinstance(arch, str):
            return self.format(self.parse(arch))
        return self.format(self.check_codes(arch))

    def to_codes(self, arch: str | Codes | HasToStr | int) -> Codes:
        if isinstance(arch, (int, np.integer)):
            return tuple(int(c) for c in self.codes_array[self.index(arch)])
        if isinstance(arch, HasToStr):
            arch = arch.tostr()
        return self.parse(arch) if isinstance(arch, str) else self.check_codes(arch)

    def check_codes(self, codes: Sequence[int]) -> Codes:
        codes = tuple(int(c) for c in codes)
        if len(codes) != self.num_decisions or any(not 0 <= c < r for c, r in zip(codes, self.radices)):
            raise UsageError(f"space {self.name}: {codes} is not a valid choice for each of its {self.num_decisions} decisions")
        return codes

    # --- what search algorithms need ----------------------------------------------
    def sample(self, rng: np.random.Generator) -> str:
        """A uniformly random architecture string."""
        return self.format(tuple(int(rng.integers(r)) for r in self.radices))

    def mutate(self, arch: str | Codes, rng: np.random.Generator) -> str:
        """Change one uniformly chosen decision to a different choice (the REA mutation of NATS-Bench)."""
        codes = list(self.to_codes(arch))
        decision = int(rng.integers(self.num_decisions))
        other = int(rng.integers(self.radices[decision] - 1))
        codes[decision] = other if other < codes[decision] else other + 1
        return self.format(tuple(codes))

    def neighbours(self, arch: str | Codes) -> list[str]:
        """All architectures one decision away, in decision-then-choice order."""
        codes = self.to_codes(arch)
        out = []
        for d, radix in enumerate(self.radices):
            for c in range(radix):
                if c != codes[d]:
                    out.append(self.format(codes[:d] + (c,) + codes[d + 1 :]))
        return out

    def one_hot(self, arch: str | Codes) -> np.ndarray:
        """``(num_decisions, max choices)`` float32 one-hot encoding (rows padded with zeros)."""
        codes = self.to_codes(arch)
        out = np.zeros((self.num_decisions, max(self.radices)), dtype=np.float32)
        out[np.arange(self.num_decisions), codes] = 1.0
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self)} architectures)"
