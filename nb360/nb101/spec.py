"""NAS-Bench-101 cells: :class:`ModelSpec` (validation, pruning), the reference graph hash and a canonical code.

A cell is a V x V upper-triangular 0/1 adjacency matrix and V op labels, ``'input'`` first
and ``'output'`` last. Like the reference ``ModelSpec``, the constructor keeps the original
matrix and ops and prunes every vertex that is not on a path from IN to OUT; a spec whose IN
and OUT are disconnected is invalid (``valid_spec=False``, ``matrix``/``ops`` None).

Two isomorphism-invariant keys of a pruned cell:

* :meth:`ModelSpec.hash` is the reference fingerprint (``graph_util.hash_module``): the MD5
  strings of the published data set;
* :meth:`ModelSpec.code` is the smallest :func:`pack` code over all orderings of the vertices
  that keep the matrix upper-triangular. Codes sort like the reference enumeration
  (``generate_graphs.py``: vertices, then edge bits, then op labels), so the canonical code
  is the first encoding of the cell that the enumeration meets, the one the data set stores.

Torch-free.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from nb360.errors import UsageError

__all__ = [
    "INPUT",
    "OUTPUT",
    "CONV3X3",
    "CONV1X1",
    "MAXPOOL3X3",
    "OPS",
    "MAX_VERTICES",
    "MAX_EDGES",
    "ModelSpec",
    "OutOfDomainError",
    "edge_bit",
    "hash_module",
    "pack",
    "unpack",
    "brute_force_canonical",
]

INPUT, OUTPUT = "input", "output"
CONV3X3, CONV1X1, MAXPOOL3X3 = "conv3x3-bn-relu", "conv1x1-bn-relu", "maxpool3x3"
#: The interior ops in canonical order (label 0, 1, 2), as the reference ``config['available_ops']``.
OPS = (CONV3X3, CONV1X1, MAXPOOL3X3)
MAX_VERTICES = 7
MAX_EDGES = 9
NUM_EDGE_BITS = MAX_VERTICES * (MAX_VERTICES - 1) // 2  # 21


class OutOfDomainError(UsageError):
    """The cell (or the epoch budget) is outside the NAS-Bench-101 data set (the reference's error name)."""


def edge_bit(x: int, y: int) -> int:
    """Bit of edge ``x -> y`` (``x < y``) in the reference's column-major order: ``x + y (y - 1) / 2``."""
    return x + y * (y - 1) // 2


def hash_module(matrix: Any, labeling: Sequence[int]) -> str:
    """The reference fingerprint of a (pruned) matrix and integer labels (IN -1, OUT -2, ops 0..2).

    Iterated neighbourhood hashing: every vertex starts from the MD5 of ``str((out-degree,
    in-degree, label))``; V times, it becomes the MD5 of its in-neighbours' sorted hashes, ``|``,
    its out-neighbours' sorted hashes, ``|`` and its own hash; the fingerprint is the MD5 of
    ``str()`` of the sorted final hashes.
    """
    m = np.asarray(matrix)
    n = m.shape[0]
    rows = m.tolist()
    in_edges = [int(sum(rows[w][v] for w in range(n))) for v in range(n)]
    out_edges = [int(sum(rows[v])) for v in range(n)]
    labels = [int(x) for x in labeling]
    if len(labels) != n:
        raise ValueError("one label per vertex")
    hashes = [hashlib.md5(str(h).encode("utf-8")).hexdigest() for h in zip(out_edges, in_edges, labels)]
    ins = [[w for w in range(n) if rows[w][v]] for v in range(n)]
    outs = [[w for w in range(n) if rows[v][w]] for v in range(n)]
    for _ in range(n):
        hashes = [
            hashlib.md5(
                (
                    "".join(sorted(hashes[w] for w in ins[v]))
                    + "|"
                    + "".join(sorted(hashes[w] for w in outs[v]))
                    + "|"
                    + hashes[v]
                ).encode("utf-8")
            ).hexdigest()
            for v in range(n)
        ]
    return hashlib.md5(str(sorted(hashes)).encode("utf-8")).hexdigest()


def pack(matrix: Any, labels: Sequence[int]) -> int:
    """A 32-bit code of an upper-triangular matrix and its interior op labels (0..2).

    ``V << 29 | edge bits << 8 | labels in base 3`` (first interior vertex most significant):
    ascending codes are the reference enumeration's order.
    """
    m = np.asarray(matrix)
    n = m.shape[0]
    bits = 0
    for y in range(1, n):
        for x in range(y):
            if m[x, y]:
                bits |= 1 << edge_bit(x, y)
    lab = 0
    for op in labels:
        lab = lab * 3 + int(op)
    return (n << 29) | (bits << 8) | lab


def unpack(code: int) -> tuple[np.ndarray, list[int]]:
    """``(matrix int8, interior labels)`` of a :func:`pack` code."""
    code = int(code)
    n, bits, lab = code >> 29, (code >> 8) & ((1 << NUM_EDGE_BITS) - 1), code & 0xFF
    matrix = np.zeros((n, n), dtype=np.int8)
    for y in range(1, n):
        for x in range(y):
            matrix[x, y] = (bits >> edge_bit(x, y)) & 1
    labels = []
    for _ in range(n - 2):
        labels.append(lab % 3)
        lab //= 3
    return matrix, labels[::-1]


def brute_force_canonical(matrix: Any, labels: Sequence[int]) -> int:
    """The smallest :func:`pack` code over all interior-vertex permutations that keep the matrix upper-triangular."""
    m = np.asarray(matrix)
    n = m.shape[0]
    best = None
    for perm in itertools.permutations(range(1, n - 1)):
        order = (0, *perm, n - 1)  # new vertex i is old vertex order[i]
        p = m[np.ix_(order, order)]
        if np.any(np.tril(p)):
            continue
        code = pack(p, [labels[order[i] - 1] for i in range(1, n - 1)])
        best = code if best is None or code < best else best
    assert best is not None  # the identity keeps the matrix upper-triangular
    return best


class ModelSpec:
    """A NAS-Bench-101 cell: ``matrix`` (V x V, upper-triangular 0/1) and ``ops`` (V labels), pruned on creation.

    ``original_matrix``/``original_ops`` keep the input; ``matrix``/``ops`` are the pruned cell
    (None if invalid). Malformed input (not square, wrong op count, not upper-triangular, not
    0/1) raises :class:`UsageError`; a cell outside the data set's limits is still a spec
    (:meth:`check` says why it cannot be queried).
    """

    def __init__(self, matrix: Any, ops: Sequence[str]) -> None:
        try:
            m = np.array(matrix, dtype=np.int64)
        except (TypeError, ValueError):
            raise UsageError(f"NB101 matrix must be a square 0/1 array, got {matrix!r}") from None
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise UsageError(f"NB101 matrix must be square, got shape {m.shape}")
        ops = [str(o) for o in ops]
        if m.shape[0] != len(ops):
            raise UsageError(f"NB101 spec: {len(ops)} ops for a {m.shape[0]}x{m.shape[0]} matrix")
        if np.any((m != 0) & (m != 1)):
            raise UsageError("NB101 matrix entries must be 0 or 1")
        if np.any(np.tril(m)):
            raise UsageError("NB101 matrix must be upper triangular (zero on and below the diagonal)")
        self.original_matrix = m.astype(np.int8)
        self.original_ops = list(ops)
        self.matrix: np.ndarray | None = self.original_matrix.copy()
        self.ops: list[str] | None = list(ops)
        self.valid_spec = True
        self._prune()

    def _prune(self) -> None:
        m = self.original_matrix
        n = m.shape[0]
        if n == 0:
            self.matrix, self.ops, self.valid_spec = None, None, False
            return
        forward, frontier = {0}, [0]
        while frontier:
            top = frontier.pop()
            for v in range(top + 1, n):
                if m[top, v] and v not in forward:
                    forward.add(v)
                    frontier.append(v)
        backward, frontier = {n - 1}, [n - 1]
        while frontier:
            top = frontier.pop()
            for v in range(top):
                if m[v, top] and v not in backward:
                    backward.add(v)
                    frontier.append(v)
        keep = sorted(forward & backward)
        if len(keep) < 2:  # IN and OUT are disconnected (or coincide)
            self.matrix, self.ops, self.valid_spec = None, None, False
            return
        self.matrix = m[np.ix_(keep, keep)].copy()
        self.ops = [self.original_ops[i] for i in keep]

    # ------------------------------------------------------------------ queries
    @property
    def num_vertices(self) -> int:
        return 0 if self.matrix is None else int(self.matrix.shape[0])

    @property
    def num_edges(self) -> int:
        return 0 if self.matrix is None else int(self.matrix.sum())

    def check(self) -> None:
        """Raise :class:`OutOfDomainError` unless the pruned cell is in the data set (the reference ``_check_spec``)."""
        if not self.valid_spec:
            raise OutOfDomainError("invalid spec, provided graph is disconnected.")
        if self.num_vertices > MAX_VERTICES:
            raise OutOfDomainError(f"too many vertices, got {self.num_vertices} (max vertices = {MAX_VERTICES})")
        if self.num_edges > MAX_EDGES:
            raise OutOfDomainError(f"too many edges, got {self.num_edges} (max edges = {MAX_EDGES})")
        assert self.ops is not None
        if self.ops[0] != INPUT:
            raise OutOfDomainError("first operation should be 'input'")
        if self.ops[-1] != OUTPUT:
            raise OutOfDomainError("last operation should be 'output'")
        for op in self.ops[1:-1]:
            if op not in OPS:
                raise OutOfDomainError(f"unsupported op {op} (available ops = {list(OPS)})")

    def is_valid(self) -> bool:
        try:
            self.check()
        except OutOfDomainError:
            return False
        return True

    def labels(self) -> list[int]:
        """Interior op labels (0..2) of the pruned cell; the cell must pass :meth:`check`."""
        self.check()
        assert self.ops is not None
        return [OPS.index(op) for op in self.ops[1:-1]]

    def hash(self) -> str:
        """The reference MD5 fingerprint (``ModelSpec.hash_spec(available_ops)``) of the pruned cell."""
        return hash_module(self.matrix, [-1, *self.labels(), -2])

    def code(self) -> int:
        """The canonical :func:`pack` code of the pruned cell (its smallest over vertex orderings)."""
        return brute_force_canonical(self.matrix, self.labels())

    def to_dict(self) -> dict[str, Any]:
        """``{"matrix": nested lists, "ops": labels}`` of the original (unpruned) cell."""
        return {"matrix": self.original_matrix.tolist(), "ops": list(self.original_ops)}

    @classmethod
    def from_code(cls, code: int) -> ModelSpec:
        matrix, labels = unpack(code)
        return cls(matrix, [INPUT, *(OPS[c] for c in labels), OUTPUT])

    @classmethod
    def coerce(cls, spec: Any) -> ModelSpec:
        """A :class:`ModelSpec` from a spec, a ``{"matrix", "ops"}`` mapping or a ``(matrix, ops)`` pair."""
        if isinstance(spec, ModelSpec):
            return spec
        if isinstance(spec, dict):
            if set(spec) != {"matrix", "ops"}:
                raise UsageError(f"an NB101 spec mapping has the keys 'matrix' and 'ops', got {sorted(spec)}")
            return cls(spec["matrix"], spec["ops"])
        if hasattr(spec, "original_matrix") and hasattr(spec, "original_ops"):  # the reference ModelSpec
            return cls(spec.original_matrix, spec.original_ops)
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            return cls(spec[0], spec[1])
        raise UsageError(f"expected an NB101 ModelSpec or {{'matrix': ..., 'ops': ...}}, got {type(spec).__name__}")

    def __repr__(self) -> str:
        return f"ModelSpec(matrix={self.original_matrix.tolist()}, ops={self.original_ops})"
