"""The NB201 cell as a fixed network (xautodl's ``InferCell``)."""

from __future__ import annotations

from torch import Tensor, nn

from nb360.models.nb201.ops import make_op
from nb360.spaces.nb201 import TOPOLOGY, cell_edges

__all__ = ["InferCell"]


class InferCell(nn.Module):
    """A 4-node NB201 cell: node ``j`` is the sum of its edges ``op_ij(node_i)``, ``i < j``; node 3 is the output.

    Edges out of node 0 map ``c_in`` to ``c_out`` channels and all others ``c_out`` to
    ``c_out``, so a cell can change the width (as the dense networks' replacement of the
    reduction blocks does) but never the resolution. Every edge is built and run, ``none``
    included, as in the reference.
    """

    def __init__(self, dim: int, arch: str, c_in: int, c_out: int) -> None:
        super().__init__()
        edges = cell_edges(arch)
        self.arch = TOPOLOGY.to_string(arch)
        self.sources = tuple(i for i, _, _ in edges)
        self.targets = tuple(j for _, j, _ in edges)
        self.edges = nn.ModuleList(make_op(op, dim, c_in if i == 0 else c_out, c_out) for i, _, op in edges)
        self.c_in, self.c_out = c_in, c_out

    def forward(self, x: Tensor) -> Tensor:
        nodes: list[Tensor] = [x]
        for j in range(1, self.targets[-1] + 1):
            terms = [edge(nodes[i]) for edge, i, t in zip(self.edges, self.sources, self.targets) if t == j]
            total = terms[0]
            for term in terms[1:]:
                total = total + term
            nodes.append(total)
        return nodes[-1]

    def extra_repr(self) -> str:
        return f"c_in={self.c_in}, c_out={self.c_out}, arch={self.arch}"
