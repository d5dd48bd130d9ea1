"""The NAS-Bench-201 / NATS-Bench spaces: the topology space S_t and the size space S_s.

S_t (NAS-Bench-201, NATS "tss"): a cell of 4 nodes; each of the 6 edges ``j <- i``
(``i < j``) carries one of 5 operations, node ``j`` is the sum of its incoming edges and
node 3 is the output: 5^6 = 15,625 cells. The string form is NB201's
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (node 1, node 2, node 3; ``op~i`` is the edge
from node ``i``). The index order is the published one: the lexicographic product
shuffled with ``random.seed(88)`` by NB201's generator; it is shipped as data
(``nb201_archs.txt.gz``), and ``tests/spaces`` re-derives it.

S_s (NATS "sss"): the best S_t cell on CIFAR-100, one cell per stage, and a width out
of {8, ..., 64} for each of 5 layers: 8^5 = 32,768 networks, written ``c0:c1:c2:c3:c4``
and indexed in product order (first width outermost).
"""

from __future__ import annotations

import gzip
import itertools
from importlib import resources

from nb360.errors import UsageError
from nb360.spaces.base import Codes, ProductSpace

__all__ = [
    "OPS",
    "EDGES",
    "WIDTHS",
    "SSS_CELL",
    "TopologySpace",
    "SizeSpace",
    "TOPOLOGY",
    "SIZE",
    "cell_edges",
    "has_path",
]

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))  # (from, to), in the order of the arch string
NODES = 4
WIDTHS = (8, 16, 24, 32, 40, 48, 56, 64)
SSS_LAYERS = 5
SSS_CELL = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


class TopologySpace(ProductSpace):
    """S_t: 6 edges x 5 operations, NB201 strings and index order, isomorphism-aware keys."""

    def __init__(self) -> None:
        super().__init__("nb201", [f"{j}<-{i}" for i, j in EDGES], [OPS] * len(EDGES))
        self._codes = {op: code for code, op in enumerate(OPS)}

    def format(self, codes: Codes) -> str:
        ops = [OPS[c] for c in self.check_codes(codes)]
        nodes, k = [], 0
        for j in range(1, NODES):
            nodes.append("|" + "|".join(f"{ops[k + i]}~{i}" for i in range(j)) + "|")
            k += j
        return "+".join(nodes)

    def parse(self, arch: str) -> Codes:
        if not isinstance(arch, str):
            raise UsageError(f"an NB201 cell is a string like {SSS_CELL!r}, got {type(arch).__name__}")
        nodes = arch.strip().split("+")
        if len(nodes) != NODES - 1:
            raise UsageError(f"NB201 cell {arch!r}: expected {NODES - 1} '+'-separated nodes, found {len(nodes)}")
        codes: list[int] = []
        for j, node in enumerate(nodes, start=1):
            terms = [t for t in node.split("|") if t]
            if not (node.startswith("|") and node.endswith("|")) or len(terms) != j:
                raise UsageError(f"NB201 cell {arch!r}: node {j} must be '|op~0|...|op~{j - 1}|' with {j} edges, found {node!r}")
            for i, term in enumerate(terms):
                op, sep, source = term.partition("~")
                if sep != "~" or source != str(i):
                    raise UsageError(f"NB201 cell {arch!r}: edge {term!r} of node {j} must read 'op~{i}'")
                if op not in self._codes:
                    raise UsageError(f"NB201 cell {arch!r}: unknown operation {op!r}; choose one of: {', '.join(OPS)}")
                codes.append(self._codes[op])
        return tuple(codes)

    def _ordered_strings(self) -> tuple[str, ...]:
        with resources.files(__package__).joinpath("nb201_archs.txt.gz").open("rb") as raw:
            text = gzip.decompress(raw.read()).decode("ascii")
        return tuple(text.split())

    def canonical(self, arch: str | Codes, consider_zero: bool = True) -> str:
        """NB201's ``to_unique_str``: one key per class of cells that compute the same function.

        Built bottom-up: node 0 is ``"0"``; an edge is ``#`` (zero) if its op is ``none`` or
        its source *is* ``#``, its source's key for ``skip_connect``, else ``(source)@op``;
        a node is the ``+``-join of its sorted edge terms. As in the reference, a node whose
        terms are all zero is ``"#+#"`` (not ``"#"``), so zeros propagate only through a
        single edge. 6,466 keys with ``consider_zero`` (12,751 without).
        """
        ops = [OPS[c] for c in self.to_codes(arch)]
        keys = ["0"]
        for j in range(1, NODES):
            terms = []
            for i in range(j):
                op, source = ops[EDGES.index((i, j))], keys[i]
                if consider_zero and (op == "none" or source == "#"):
                    terms.append("#")
                elif op == "skip_connect":
                    terms.append(source)
                else:
                    terms.append(f"({source})@{op}")
            keys.append("+".join(sorted(terms)))
        return keys[-1]


def cell_edges(arch: str) -> list[tuple[int, int, str]]:
    """``(from, to, op)`` for the 6 edges of an S_t cell string, in string order."""
    ops = TOPOLOGY.to_codes(arch)
    return [(i, j, OPS[c]) for (i, j), c in zip(EDGES, ops)]


def has_path(arch: str) -> bool:
    """Whether the input reaches the output through non-``none`` edges (NB201's ``check_valid``).

    Cells without such a path output zeros whatever their input; they are still members of
    the space (the benchmark trains them), but searches may want to skip them.
    """
    live = {0}
    for i, j, op in cell_edges(arch):
        if op != "none" and i in live:
            live.add(j)
    return NODES - 1 in live


class SizeSpace(ProductSpace):
    """S_s: a width in :data:`WIDTHS` for each of the 5 searched layers, strings ``c0:c1:c2:c3:c4``."""

    def __init__(self) -> None:
        super().__init__("nats_sss", [f"c{k}" for k in range(SSS_LAYERS)], [tuple(map(str, WIDTHS))] * SSS_LAYERS)

    def format(self, codes: Codes) -> str:
        return ":".join(str(WIDTHS[c]) for c in self.check_codes(codes))

    def parse(self, arch: str) -> Codes:
        if not isinstance(arch, str):
            raise UsageError(f"a NATS size architecture is a string like '64:64:64:64:64', got {type(arch).__name__}")
        parts = arch.strip().split(":")
        if len(parts) != SSS_LAYERS or not all(p.isdigit() and int(p) in WIDTHS for p in parts):
            raise UsageError(
                f"NATS size architecture {arch!r}: expected {SSS_LAYERS} ':'-separated widths "
                f"out of {', '.join(map(str, WIDTHS))}"
            )
        return tuple(WIDTHS.index(int(p)) for p in parts)

    def _ordered_strings(self) -> tuple[str, ...]:
        return tuple(self.format(codes) for codes in itertools.product(range(len(WIDTHS)), repeat=SSS_LAYERS))

    def widths(self, arch: str | Codes) -> tuple[int, ...]:
        return tuple(WIDTHS[c] for c in self.to_codes(arch))


TOPOLOGY = TopologySpace()
SIZE = SizeSpace()
