"""Every unique NAS-Bench-101 cell, vectorised: canonical codes for deduplication, then the reference hashes.

The reference (``generate_graphs.py``) loops over every upper-triangular matrix of V = 2..7
vertices, keeps the "full DAGs" (no dangling vertex) with at most 9 edges, loops over all
3^(V-2) labellings and keeps the first graph seen for each MD5 fingerprint, about six
minutes of Python. Here:

1. the full DAGs of each V are found with bit operations over all 2^(V(V-1)/2) matrices;
2. every labelled graph gets its canonical :func:`~nb360.nb101.spec.pack` code (the smallest
   over the vertex orderings that keep it upper-triangular), one permutation at a time over
   all graphs at once. Codes ascend in the reference's enumeration order, so the canonical
   code of a class *is* the first encoding the reference meets; the unique codes are the
   cells, in enumeration order. This is exact isomorphism, stronger than the fingerprint;
   the counts agree because the fingerprint has no false positives in this space;
3. the reference MD5 fingerprint of each cell (:func:`reference_hashes`) is the same
   iterated hashing, vectorised: each round, the vertex states of all graphs are
   deduplicated with NumPy and only the distinct MD5 inputs are hashed (in 2 processes).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from nb360.nb101.spec import MAX_EDGES, MAX_VERTICES, NUM_EDGE_BITS, edge_bit, hash_module, pack

__all__ = [
    "Enumeration",
    "canonical_codes",
    "enumerate_cells",
    "reference_hashes",
    "straightforward_enumeration",
    "unpack_codes",
    "save",
    "load",
]

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def _popcount(x: np.ndarray, nbits: int) -> np.ndarray:
    out = np.zeros(x.shape, dtype=np.int64)
    for b in range(nbits):
        out += (x >> b) & 1
    return out


def full_dags(n: int, max_edges: int = MAX_EDGES) -> np.ndarray:
    """Edge bits (ascending) of every n-vertex upper-triangular matrix with no dangling vertex and <= ``max_edges`` edges."""
    nbits = n * (n - 1) // 2
    bits = np.arange(1 << nbits, dtype=np.int64)
    keep = _popcount(bits, nbits) <= max_edges
    for v in range(n):
        if v < n - 1:  # every vertex but OUT has an out-edge
            keep &= (bits & sum(1 << edge_bit(v, y) for y in range(v + 1, n))) != 0
        if v > 0:  # every vertex but IN has an in-edge
            keep &= (bits & sum(1 << edge_bit(x, v) for x in range(v))) != 0
    return bits[keep]


def canonical_codes(n: int, bits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``(len(bits), len(labels))`` canonical codes of every matrix (edge bits) with every interior labelling (base-3 int).

    A labelling is the base-3 number of the interior labels, first interior vertex most
    significant. The minimum is over the orderings of the interior vertices that keep each
    matrix upper-triangular (IN is the only source and OUT the only sink of a full DAG).
    """
    bits = np.asarray(bits, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int64)
    k = n - 2
    digits = np.stack([(labels // 3 ** (k - 1 - i)) % 3 for i in range(k)]) if k else np.zeros((0, len(labels)), np.int64)
    best = np.full((len(bits), len(labels)), np.iinfo(np.int64).max, dtype=np.int64)
    for perm in itertools.permutations(range(1, n - 1)):
        order = (0, *perm, n - 1)  # new vertex i is old vertex order[i]
        pos = {old: new for new, old in enumerate(order)}
        new_bits = np.zeros_like(bits)
        bad = 0
        for y in range(1, n):
            for x in range(y):
                if pos[x] > pos[y]:
                    bad |= 1 << edge_bit(x, y)
                else:
                    new_bits |= ((bits >> edge_bit(x, y)) & 1) << edge_bit(pos[x], pos[y])
        lab = np.zeros(len(labels), dtype=np.int64)
        for i in range(1, n - 1):
            lab = lab * 3 + digits[order[i] - 1]
        cand = (new_bits[:, None] << 8) | lab[None, :]
        cand[(bits & bad) != 0] = np.iinfo(np.int64).max
        np.minimum(best, cand, out=best)
    return best | (n << 29)


class Enumeration:
    """The unique cells: ``codes`` (uint32, ascending = enumeration order), their ``hashes`` and counts."""

    def __init__(self, codes: np.ndarray, hashes: np.ndarray | None, labelled: dict[int, int]) -> None:
        self.codes = np.asarray(codes, dtype=np.uint32)
        self.hashes = hashes
        self.labelled = dict(labelled)  # vertices -> labelled valid graphs (before deduplication)

    @property
    def vertices(self) -> np.ndarray:
        return (self.codes >> 29).astype(np.int64)

    def counts(self) -> dict[int, int]:
        """Unique cells per number of vertices."""
        v, c = np.unique(self.vertices, return_counts=True)
        return {int(a): int(b) for a, b in zip(v, c)}

    def __len__(self) -> int:
        return len(self.codes)


def enumerate_cells(
    max_vertices: int = MAX_VERTICES,
    *,
    hashes: bool = True,
    workers: int | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> Enumeration:
    """All unique cells with at most ``max_vertices`` vertices (and 9 edges, 3 ops); ``hashes`` adds the MD5 fingerprints."""
    if not 2 <= max_vertices <= MAX_VERTICES:
        raise ValueError(f"max_vertices must be in 2..{MAX_VERTICES}")
    parts, labelled = [], {}
    for n in range(2, max_vertices + 1):
        bits = full_dags(n)
        canon = canonical_codes(n, bits, np.arange(3 ** (n - 2)))
        labelled[n] = int(canon.size)
        parts.append(np.unique(canon))
        if progress:
            progress(f"{n} vertices", 1)
    codes = np.concatenate(parts).astype(np.uint32)
    digests = reference_hashes(codes, workers=workers, progress=progress) if hashes else None
    return Enumeration(codes, digests, labelled)


def unpack_codes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(vertices (N,), matrices (N, 7, 7) bool padded, labels (N, 7) int8 padded with IN -1 ... OUT -2)``."""
    codes = np.asarray(codes, dtype=np.int64)
    n = codes >> 29
    bits = (codes >> 8) & ((1 << NUM_EDGE_BITS) - 1)
    lab = codes & 0xFF
    N = len(codes)
    A = np.zeros((N, MAX_VERTICES, MAX_VERTICES), dtype=bool)
    for y in range(1, MAX_VERTICES):
        for x in range(y):
            A[:, x, y] = (bits >> edge_bit(x, y)) & 1
    labels = np.full((N, MAX_VERTICES), -3, dtype=np.int8)
    labels[:, 0] = -1
    for V in np.unique(n):
        rows = n == V
        k = int(V) - 2
        for i in range(k):
            labels[rows, 1 + i] = (lab[rows] // 3 ** (k - 1 - i)) % 3
        labels[rows, int(V) - 1] = -2
    return n, A, labels


def straightforward_enumeration(max_vertices: int) -> tuple[dict[str, int], int]:
    """``generate_graphs.py`` as written (a loop, one hash per labelled graph), for tests and the benchmark.

    Returns ``{fingerprint: code of the first graph seen}`` and the number of labelled graphs.
    """
    buckets: dict[str, int] = {}
    total = 0
    for n in range(2, max_vertices + 1):
        for bits in range(2 ** (n * (n - 1) // 2)):
            m = np.zeros((n, n), dtype=np.int8)
            for y in range(1, n):
                for x in range(y):
                    m[x, y] = (bits >> edge_bit(x, y)) & 1
            if m.sum() > MAX_EDGES or (m[: n - 1].sum(axis=1) == 0).any() or (m[:, 1:].sum(axis=0) == 0).any():
                continue
            for labels in itertools.product(range(3), repeat=n - 2):
                total += 1
                buckets.setdefault(hash_module(m, [-1, *labels, -2]), pack(m, labels))
    return buckets, total


# --------------------------------------------------------------------------- reference hashes
def _to_hex(digests: np.ndarray) -> np.ndarray:
    """``(U, 16)`` uint8 digests -> ``(U, 32)`` uint8 lowercase hex."""
    out = np.empty((len(digests), 32), dtype=np.uint8)
    out[:, 0::2] = _HEX[digests >> 4]
    out[:, 1::2] = _HEX[digests & 15]
    return out


def _md5_fixed(buf: np.ndarray) -> np.ndarray:
    """MD5 digests ``(U, 16)`` of the rows of a uint8 matrix."""
    width = buf.shape[1]
    data = np.ascontiguousarray(buf).tobytes()
    md5 = hashlib.md5
    out = b"".join([md5(data[i : i + width]).digest() for i in range(0, len(data), width)])
    return np.frombuffer(out, dtype=np.uint8).reshape(len(buf), 16)


def _rank(digests: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort digests like their hex strings: ``(order, hex table sorted)``."""
    hi = digests[:, :8].copy().view(">u8").ravel().astype(np.uint64)
    order = np.argsort(hi)
    if np.any(np.diff(hi[order]) == 0):  # equal leading 8 bytes (never seen): sort on all 16
        lo = digests[:, 8:].copy().view(">u8").ravel()
        order = np.lexsort((lo, hi))
    return order, _to_hex(digests[order])


_MIX = np.random.default_rng(20190512).integers(1, 2**62, size=64, dtype=np.int64) | 1


def _dedup(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(one row of each distinct key, inverse)``; rows are mixed into 64 bits, then checked for collisions."""
    with np.errstate(over="ignore"):
        mixed = (keys.astype(np.uint64) * _MIX[: keys.shape[1]].astype(np.uint64)).sum(axis=1, dtype=np.uint64)
        mixed ^= mixed >> np.uint64(29)
    order = np.argsort(mixed)
    ordered = mixed[order]
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    inverse = np.empty(len(order), dtype=np.int64)
    inverse[order] = np.cumsum(starts) - 1
    first = order[starts]
    if not np.array_equal(keys[first[inverse]], keys):
        raise RuntimeError("hash collision while deduplicating vertex states")
    return first, inverse


def _hash_group(n: int, A: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Reference fingerprints (``(G, 32)`` uint8 hex) of G graphs with n vertices."""
    G = len(A)
    out_deg, in_deg = A.sum(axis=2), A.sum(axis=1)
    init = np.stack([out_deg, in_deg, labels.astype(np.int64)], axis=-1).reshape(-1, 3)
    uniq, inverse = np.unique(init, axis=0, return_inverse=True)
    digests = np.array(
        [np.frombuffer(hashlib.md5(str(tuple(int(x) for x in row)).encode()).digest(), np.uint8) for row in uniq]
    ).reshape(len(uniq), 16)
    order, table = _rank(digests)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    h = rank[inverse.ravel()].reshape(G, n)
    bar = np.full((1,), ord("|"), dtype=np.uint8)
    for _ in range(n):
        big = len(table)  # the padding id, sorted after every real one
        ins = np.sort(np.where(A.transpose(0, 2, 1), h[:, None, :], big), axis=2)
        outs = np.sort(np.where(A, h[:, None, :], big), axis=2)
        keys = np.concatenate([ins, outs, h[:, :, None]], axis=2).reshape(G * n, 2 * n + 1)
        first, inverse = _dedup(keys)
        uk = keys[first]
        U = len(uk)
        digests = np.empty((U, 16), dtype=np.uint8)
        degrees = (uk[:, :n] < big).sum(axis=1) * (n + 1) + (uk[:, n : 2 * n] < big).sum(axis=1)
        for d in np.unique(degrees).tolist():  # one fixed-width block of MD5 inputs per (in, out) degree pair
            rows = np.flatnonzero(degrees == d)
            a, b, k = d // (n + 1), d % (n + 1), len(rows)
            sel = uk[rows]
            buf = np.concatenate(
                [
                    table[sel[:, :a]].reshape(k, 32 * a),
                    np.broadcast_to(bar, (k, 1)),
                    table[sel[:, n : n + b]].reshape(k, 32 * b),
                    np.broadcast_to(bar, (k, 1)),
                    table[sel[:, 2 * n]],
                ],
                axis=1,
            )
            digests[rows] = _md5_fixed(buf)
        order, table = _rank(digests)
        rank = np.empty_like(order)
        rank[order] = np.arange(U)
        h = rank[inverse].reshape(G, n)
    # fingerprint: md5(str(sorted(hashes))) = md5("['h0', 'h1', ...]")
    hs = table[np.sort(h, axis=1)]  # (G, n, 32), sorted like the strings
    quote = np.frombuffer(b"'", np.uint8)
    sep = np.frombuffer(b"', '", np.uint8)
    pieces = [np.broadcast_to(np.frombuffer(b"['", np.uint8), (G, 2))]
    for i in range(n):
        pieces.append(hs[:, i])
        pieces.append(np.broadcast_to(sep if i < n - 1 else quote, (G, len(sep) if i < n - 1 else 1)))
    pieces.append(np.broadcast_to(np.frombuffer(b"]", np.uint8), (G, 1)))
    return _to_hex(_md5_fixed(np.concatenate(pieces, axis=1)))


def _hash_chunk(codes: np.ndarray) -> np.ndarray:
    n_all, A, labels = unpack_codes(codes)
    out = np.zeros((len(codes), 32), dtype=np.uint8)
    for n in np.unique(n_all):
        rows = np.flatnonzero(n_all == n)
        n = int(n)
        out[rows] = _hash_group(n, A[rows][:, :n, :n], labels[rows][:, :n])
    return out


def reference_hashes(
    codes: np.ndarray, *, workers: int | None = None, chunk: int = 60_000, progress: Callable[[str, int], None] | None = None
) -> np.ndarray:
    """The reference MD5 fingerprints (numpy ``S32``) of cells given as :func:`~nb360.nb101.spec.pack` codes."""
    codes = np.asarray(codes, dtype=np.uint32)
    pieces = [codes[i : i + chunk] for i in range(0, len(codes), chunk)] or [codes]
    workers = workers if workers is not None else min(2, os.cpu_count() or 1)
    results = []
    if workers <= 1 or len(pieces) == 1:
        for p in pieces:
            results.append(_hash_chunk(p))
            if progress:
                progress("hashes", 1)
    else:
        with ProcessPoolExecutor(workers) as pool:
            for r in pool.map(_hash_chunk, pieces):
                results.append(r)
                if progress:
                    progress("hashes", 1)
    return np.ascontiguousarray(np.concatenate(results)).view("S32").ravel()


# --------------------------------------------------------------------------- files
def save(path: str | os.PathLike[str], enum: Enumeration) -> Path:
    """Write ``matrices`` (N, 7, 7 packed bits), ``ops`` (N, 7 int8 labels), ``vertices``, ``codes``, ``hashes`` atomically."""
    from nb360.io import atomic_path

    path = Path(path)
    vertices, A, labels = unpack_codes(enum.codes)
    arrays: dict[str, Any] = {
        "codes": enum.codes,
        "vertices": vertices.astype(np.int8),
        "matrices": np.packbits(A.reshape(len(A), -1), axis=1),
        "ops": labels,
        "labelled": np.array(sorted(enum.labelled.items()), dtype=np.int64).reshape(-1, 2),
    }
    if enum.hashes is not None:
        arrays["hashes"] = enum.hashes
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return path


def load(path: str | os.PathLike[str]) -> Enumeration:
    from nb360.errors import DataError

    try:
        with np.load(path, allow_pickle=False) as z:
            codes = z["codes"]
            hashes = z["hashes"] if "hashes" in z.files else None
            labelled = {int(a): int(b) for a, b in z["labelled"]}
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{path} is not an NB101 enumeration file: {type(err).__name__}: {err}") from None
    return Enumeration(codes, hashes, labelled)
