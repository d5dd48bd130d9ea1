"""The NB201 topology supernet for any task: every edge of every cell a mixed operation over the 5 operations.

The supernet *is* a :class:`~nb360.models.nb201.network.TinyNetwork` (stem, three stages of
cells, two reduction slots, BN-ReLU, the task's head; dense tasks replace the reduction
blocks by cells that change the width at stride 1) whose cells are replaced by
:class:`SearchCell` s of the same widths; the edges are built by
:func:`~nb360.models.nb201.ops.make_op`. All cells share one set of
architecture parameters ``alphas`` (6 edges x 5 operations, initialised ``1e-3 N(0, 1)``)
as in xautodl's ``GenericNAS201Model``.

As in the NATS weight-sharing searches, the BatchNorms inside the searched cells and the
final BN are ``affine=False, track_running_stats=False`` by default (the stem and the
reduction blocks keep the default BN). The operations' convolutions have no bias
(xautodl adds one when ``affine=False``; before a BN that normalises with batch
statistics a bias cancels out, so the function is the same).

Forward modes (:attr:`NB201SuperNet.mode`):

* ``"joint"`` (DARTS, SETN's architecture step): every edge is ``sum_k softmax(alpha)_k op_k(x)``;
* ``"gdas"`` (GDAS): a hard Gumbel-softmax one-hot per edge with straight-through gradients
  (``one_hot - p.detach() + p``); only the sampled operation is computed, the others add
  their weight (0 in value, a gradient to ``alpha``), as xautodl's ``forward_gdas``;
* ``"dynamic"`` (SETN, ENAS, candidate evaluation): a fixed discrete architecture
  (:attr:`NB201SuperNet.arch`), only the chosen operation per edge runs;
* ``"urs"`` (RSPS): every cell samples its own operations uniformly at every forward,
  resampling a node whose inputs are all ``none`` (xautodl's ``forward_urs``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from nb360.models.nb201.cells import InferCell
from nb360.models.nb201.network import TinyNetwork, topology_widths
from nb360.models.nb201.ops import make_op
from nb360.spaces.nb201 import EDGES, OPS, TOPOLOGY

__all__ = ["MODES", "MixedEdge", "Routing", "SearchCell", "NB201SuperNet", "configure_batch_norm", "gumbel_hard", "tau_at"]

Mode = Literal["joint", "gdas", "dynamic", "urs"]
MODES = ("joint", "gdas", "dynamic", "urs")
NONE = OPS.index("none")
EMPTY_CELL = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"  # the skeleton's placeholder cells (no parameters)


def configure_batch_norm(module: nn.Module, affine: bool, track_running_stats: bool) -> nn.Module:
    """Replace every BatchNorm inside ``module`` by one with the given ``affine`` and ``track_running_stats``."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, type(child)(child.num_features, affine=affine, track_running_stats=track_running_stats))
        else:
            configure_batch_norm(child, affine, track_running_stats)
    return module


def gumbel_hard(alphas: Tensor, tau: float, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """GDAS' sample: ``(hard weights, index)`` with ``hard = one_hot(argmax p) - p.detach() + p``,
    ``p = softmax((log_softmax(alpha) + Gumbel) / tau)``; resampled while any value is not finite (as the reference)."""
    while True:
        gumbels = -torch.empty_like(alphas).exponential_(generator=generator).log()
        probs = torch.softmax((alphas.log_softmax(dim=-1) + gumbels) / tau, dim=-1)
        if torch.isfinite(gumbels).all() and torch.isfinite(probs).all():
            break
    index = probs.argmax(dim=-1)
    one_hot = torch.zeros_like(probs).scatter_(-1, index[:, None], 1.0)
    return one_hot - probs.detach() + probs, index


def tau_at(epoch: int, epochs: int, tau_max: float = 10.0, tau_min: float = 0.1) -> float:
    """The Gumbel-softmax temperature of GDAS and the size searches (NATS' search-cell.py, search-size.py).

    Linear from ``tau_max`` at epoch 0 down to ``tau_min`` at the last epoch.
    """
    if epochs <= 1:
        return tau_max
    return tau_max - (tau_max - tau_min) * epoch / (epochs - 1)


class MixedEdge(nn.Module):
    """One edge: the 5 NB201 operations from ``c_in`` to ``c_out`` channels."""

    def __init__(self, dim: int, c_in: int, c_out: int, affine: bool, track_running_stats: bool) -> None:
        super().__init__()
        self.ops = nn.ModuleList(configure_batch_norm(make_op(op, dim, c_in, c_out), affine, track_running_stats) for op in OPS)

    def forward(self, x: Tensor, weights: Tensor) -> Tensor:
        """The softmax-weighted sum of all operations."""
        total = weights[0] * self.ops[0](x)
        for w, op in zip(weights[1:], self.ops[1:]):
            total = total + w * op(x)
        return total

    def forward_gdas(self, x: Tensor, weights: Tensor, index: int) -> Tensor:
        """Only operation ``index`` runs; the others contribute their (zero-valued) straight-through weight."""
        total = weights[index] * self.ops[index](x)
        for k in range(len(self.ops)):
            if k != index:
                total = total + weights[k]
        return total


class Routing:
    """What the cells of one supernet forward read: the mode and the weights or operation indices per edge."""

    def __init__(self) -> None:
        self.mode: str = "joint"
        self.weights: Tensor | None = None
        self.index: list[int] | None = None


class SearchCell(nn.Module):
    """A 4-node NB201 cell whose 6 edges are :class:`MixedEdge` s (edges out of node 0 map ``c_in`` to ``c_out``).

    How the edges combine their operations is read from ``routing``, shared by all cells of a supernet.
    """

    def __init__(
        self, dim: int, c_in: int, c_out: int, affine: bool, track_running_stats: bool, routing: Routing | None = None
    ) -> None:
        super().__init__()
        self.edges = nn.ModuleList(
            MixedEdge(dim, c_in if i == 0 else c_out, c_out, affine, track_running_stats) for i, _ in EDGES
        )
        self.routing = routing or Routing()
        self.c_in, self.c_out = c_in, c_out

    def _nodes(self, x: Tensor, edge_out: Callable[[int, Tensor], Tensor]) -> Tensor:
        nodes = [x]
        for j in range(1, EDGES[-1][1] + 1):
            terms = [edge_out(e, nodes[i]) for e, (i, t) in enumerate(EDGES) if t == j]
            total = terms[0]
            for term in terms[1:]:
                total = total + term
            nodes.append(total)
        return nodes[-1]

    def forward(self, x: Tensor) -> Tensor:
        mode, weights, index = self.routing.mode, self.routing.weights, self.routing.index
        if mode == "joint":
            return self._nodes(x, lambda e, h: self.edges[e](h, weights[e]))
        if mode == "gdas":
            return self._nodes(x, lambda e, h: self.edges[e].forward_gdas(h, weights[e], index[e]))
        if mode == "urs":  # every cell its own uniform path
            index = _uniform_codes()
        return self._nodes(x, lambda e, h: self.edges[e].ops[index[e]](h))  # one operation per edge

    def extra_repr(self) -> str:
        return f"c_in={self.c_in}, c_out={self.c_out}"


def _uniform_codes(generator: torch.Generator | None = None) -> list[int]:
    """Uniform operations per edge, a node's inputs resampled until one of them is not ``none`` (xautodl's URS)."""
    codes: list[int] = []
    for j in range(1, EDGES[-1][1] + 1):
        while True:
            node = torch.randint(len(OPS), (j,), generator=generator).tolist()
            if any(c != NONE for c in node):
                break
        codes += node
    return codes


class NB201SuperNet(TinyNetwork):
    """The NB201 topology supernet (see the module docstring).

    Args:
        dim, kind, in_channels, num_outputs: the task (1-D/2-D, point/dense, input channels, outputs).
        channels, cells: C and N (widths :func:`topology_widths`).
        affine, track_running_stats: the BatchNorms of the searched cells and of the final BN.
        arch_parameters: ``True``: learnable ``alphas``; ``False``: ``alphas`` exist but are frozen
            (methods whose architecture lives elsewhere, or nowhere: ENAS' controller, RSPS).
    """

    def __init__(
        self,
        dim: int,
        kind: str,
        in_channels: int,
        num_outputs: int,
        channels: int = 16,
        cells: int = 5,
        affine: bool = False,
        track_running_stats: bool = False,
        arch_parameters: bool = True,
    ) -> None:
        super().__init__(dim, kind, in_channels, num_outputs, EMPTY_CELL, topology_widths(channels, cells))
        self.routing = Routing()
        for index, layer in enumerate(self.cells):
            if isinstance(layer, InferCell):
                self.cells[index] = SearchCell(dim, layer.c_in, layer.c_out, affine, track_running_stats, self.routing)
        configure_batch_norm(self.lastact, affine, track_running_stats)
        self.alphas = nn.Parameter(1e-3 * torch.randn(len(EDGES), len(OPS)), requires_grad=arch_parameters)
        self.mode: str = "joint"
        self.arch: tuple[int, ...] | None = None  # the architecture of mode "dynamic"
        self.tau = 10.0

    # ----------------------------------------------------------------- parameters
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name != "alphas"]

    # ----------------------------------------------------------------- modes
    def set_mode(self, mode: str, arch: str | tuple[int, ...] | None = None) -> None:
        """Choose the forward mode; ``dynamic`` needs ``arch`` (a cell string or codes)."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
        if mode == "dynamic":
            if arch is None:
                raise ValueError("mode 'dynamic' needs an architecture")
            self.arch = TOPOLOGY.to_codes(arch)
        self.mode = mode

    def forward(self, x: Tensor) -> Tensor:
        routing = self.routing
        routing.mode, routing.weights, routing.index = self.mode, None, None
        if self.mode == "joint":
            routing.weights = torch.softmax(self.alphas, dim=-1)
        elif self.mode == "gdas":
            routing.weights, chosen = gumbel_hard(self.alphas, self.tau)
            routing.index = chosen.tolist()
        elif self.mode == "dynamic":
            routing.index = list(self.arch)
        return super().forward(x)

    # ----------------------------------------------------------------- architectures
    def genotype(self) -> str:
        """The architecture string: per edge the argmax of ``alphas`` over all 5 operations, ``none`` included (xautodl)."""
        return TOPOLOGY.format(tuple(int(i) for i in self.alphas.detach().argmax(dim=-1)))

    def log_prob(self, arch: str | tuple[int, ...]) -> float:
        """``sum_e log softmax(alpha_e)[op_e]`` (xautodl's ``get_log_prob``)."""
        codes = TOPOLOGY.to_codes(arch)
        logits = torch.log_softmax(self.alphas.detach().double(), dim=-1)
        return float(sum(logits[e, c] for e, c in enumerate(codes)))

    def top_k(self, k: int) -> list[str]:
        """The ``k`` most probable architectures under ``softmax(alpha)`` (xautodl's ``return_topK(k, False)``)."""
        logits = torch.log_softmax(self.alphas.detach().double(), dim=-1)
        grids = torch.meshgrid(*[logits[e] for e in range(len(EDGES))], indexing="ij")
        total = sum(grids).flatten()
        k = min(k, total.numel()) if k > 0 else total.numel()
        order = torch.argsort(-total, stable=True)[:k]
        shape = [len(OPS)] * len(EDGES)
        return [TOPOLOGY.format(tuple(int(c) for c in torch.unravel_index(i, shape))) for i in order]

    def sample(self, generator: torch.Generator | None = None, from_alphas: bool = False) -> str:
        """One architecture: uniform per edge, or from ``softmax(alpha)`` per edge (xautodl's ``dync_genotype``)."""
        if from_alphas:
            codes = torch.multinomial(torch.softmax(self.alphas.detach(), dim=-1), 1, generator=generator)[:, 0].tolist()
        else:
            codes = torch.randint(len(OPS), (len(EDGES),), generator=generator).tolist()
        return TOPOLOGY.format(tuple(codes))

    def extra_repr(self) -> str:
        return f"kind={self.kind}, widths={list(self.widths)}, mode={self.mode}, edges={len(EDGES)}x{len(OPS)}, tau={self.tau}"
