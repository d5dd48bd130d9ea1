"""TE-NAS (Chen et al., ICLR 2021): training-free pruning search in the DARTS or the NB201 cell space (``--method tenas``).

The search starts from the supernet with every operation on every edge (``none`` excluded from the start, as the
reference) and prunes it without training any weight. Each round measures, for every edge with more than one
operation left and every operation on it, the network with that operation removed: the NTK condition number
(:func:`~nb360.proxies.tenas.ntk_condition_number`) and the number of linear regions
(:func:`~nb360.proxies.tenas.linear_regions`), each as a relative change against the current network, averaged
over ``repeats`` fresh random initialisations and batches of the task's search-split training data. The candidates
are ranked by each change (the NTK change descending: removing the op lowers the condition number; the region
change ascending: removing it keeps or raises the count), the two ranks summed, and on every edge the
``prune_number`` operations with the smallest sum are pruned. Rounds repeat until every edge has one operation.
In the DARTS space the edges into each node are then pruned the same way, node by node, down to the two whose
removal harms the measures most; the cells give a DARTS :class:`~nb360.models.darts.genotype.Genotype`. In the
NB201 space the six remaining operations are the architecture string.

The measured networks are small supernets of the task's shape (the reference: C = 1 and one normal plus one
reduction cell for DARTS, C = 3 and N = 1 for NB201; linear regions on C = 1 networks fed 3x3 crops), in train
mode, pruned operations not run; the DARTS one gets the reference's BN-ReLU before its head. Every round's
measures go to ``tenas.json`` in the run directory; the architecture is saved as the ``darts`` or ``nb201``
methods save theirs and retrained by their evaluation stage (``--eval.*`` for DARTS, ``--eval_nb201.*`` for NB201).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn

from nb360.errors import UsageError
from nb360.io import write_json
from nb360.methods import Method, register_method
from nb360.models.darts.genotype import Genotype
from nb360.models.darts.ops import PRIMITIVES, reduction_layers
from nb360.models.darts.supernet import SearchNetwork, node_slices
from nb360.models.nb201.supernet import NB201SuperNet
from nb360.models.nb201.supernet import SearchCell as NB201SearchCell
from nb360.models.ops import batch_norm
from nb360.proxies.tenas import condition_number, count_regions
from nb360.run import RunContext
from nb360.search import darts as darts_method
from nb360.search.nb201_stages import NB201Eval, stages_for
from nb360.search.pipeline import SearchStages, add_stage_arguments, record_search, search_then_evaluate
from nb360.search.task_module import TaskModule
from nb360.spaces.nb201 import EDGES, OPS, TOPOLOGY
from nb360.tasks import TaskSpec

__all__ = ["Candidate", "MaskedDarts", "MaskedNB201", "TenasModule", "prune_edges", "prune_ops", "rank_candidates"]

LOG_FILE = "tenas.json"
Masks = dict[str, Tensor]  # cell kind -> (edges, ops) bool: the operations still in the supernet
Candidate = tuple[str, int, int]  # (cell kind, edge, op); op -1: the whole edge


def _uniform_terms(ops: nn.ModuleList, active: Tensor, h: Tensor) -> list[Tensor]:
    """The active operations of one edge on ``h``, each weighted 1 / (number active): softmax over the remaining
    operations' equal architecture weights, the pruned ones not run at all (so their ReLUs never fire)."""
    chosen = active.nonzero().flatten().tolist()
    return [op(h) / len(chosen) for op in (ops[i] for i in chosen)]


def _total(terms: list[Tensor]) -> Tensor:
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


class MaskedDarts(nn.Module):
    """The DARTS supernet (no partial channels, no edge normalisation) whose edges run only the unmasked operations.

    As in TE-NAS' DARTS supernet, BN and ReLU (``lastact``) precede the head: without them the pooled output is a
    sum of batch-normalised (non-affine) features, whose batch mean is zero, so the Jacobian rows of a batch sum
    to zero and the NTK is singular (its condition number is rounding noise).
    """

    def __init__(self, spec: TaskSpec, channels: int, layers: int, steps: int = 4, multiplier: int = 4) -> None:
        super().__init__()
        self.net = SearchNetwork(
            spec.dims, spec.kind, spec.in_channels, spec.num_outputs, channels, layers, steps, multiplier,
            stem_multiplier=1, k=1, edge_normalization=False, shift=spec.dims == 2,
        )  # fmt: skip
        for p in self.net.arch_parameters():
            p.requires_grad_(False)
        c = channels
        for i in range(layers):
            c *= 2 if i in reduction_layers(spec.kind, layers) else 1
        self.lastact = nn.Sequential(batch_norm(spec.dims, multiplier * c), nn.ReLU())
        self.steps, self.multiplier = steps, multiplier
        self.masks: Masks = initial_masks("darts", spec, steps)

    def forward(self, x: Tensor) -> Tensor:
        net = self.net
        s0 = s1 = net.stem(x)
        for cell in net.cells:
            mask = self.masks["reduce" if cell.reduction else "normal"]
            states = [cell.preprocess0(s0), cell.preprocess1(s1)]
            for edges in node_slices(cell.steps):
                terms = [
                    term
                    for e, h in zip(range(edges.start, edges.stop), states)
                    if mask[e].any()
                    for term in _uniform_terms(cell.edges[e].ops, mask[e], h)
                ]
                if not terms:
                    raise ValueError("a node of the DARTS cell has no operation left")
                states.append(_total(terms))
            s0, s1 = s1, torch.cat(states[-cell.multiplier :], dim=1)
        return net.head(self.lastact(s1))


class MaskedNB201(nn.Module):
    """The NB201 topology supernet whose edges run only the unmasked operations."""

    def __init__(self, spec: TaskSpec, channels: int, cells: int) -> None:
        super().__init__()
        self.net = NB201SuperNet(
            spec.dims, spec.kind, spec.in_channels, spec.num_outputs, channels, cells, True, True, arch_parameters=False
        )
        self.masks: Masks = initial_masks("nb201", spec)

    def _cell(self, cell: NB201SearchCell, x: Tensor) -> Tensor:
        mask, nodes = self.masks["cell"], [x]
        for j in range(1, EDGES[-1][1] + 1):
            terms = [
                term for e, (i, t) in enumerate(EDGES) if t == j for term in _uniform_terms(cell.edges[e].ops, mask[e], nodes[i])
            ]
            if not terms:
                raise ValueError("a node of the NB201 cell has no operation left")
            nodes.append(_total(terms))
        return nodes[-1]

    def forward(self, x: Tensor) -> Tensor:
        net = self.net
        x = net.stem(x)
        for layer in net.cells:
            x = self._cell(layer, x) if isinstance(layer, NB201SearchCell) else layer(x)
        return net.head(net.lastact(x))


def cell_kinds(space: str, spec: TaskSpec) -> tuple[str, ...]:
    if space == "nb201":
        return ("cell",)
    return ("normal", "reduce") if spec.kind == "point" else ("normal",)


def initial_masks(space: str, spec: TaskSpec, steps: int = 4) -> Masks:
    """Every operation but ``none`` on every edge."""
    edges, ops = (len(EDGES), len(OPS)) if space == "nb201" else (sum(2 + i for i in range(steps)), len(PRIMITIVES))
    masks = {}
    for kind in cell_kinds(space, spec):
        mask = torch.ones(edges, ops, dtype=torch.bool)
        mask[:, 0] = False  # "none" is index 0 of both spaces
        masks[kind] = mask
    return masks


def removed(masks: Masks, candidate: Candidate) -> Masks:
    """``masks`` with the candidate's operation (or, for op -1, every operation of its edge) removed."""
    kind, edge, op = candidate
    out = {k: m.clone() for k, m in masks.items()}
    if op < 0:
        out[kind][edge] = False
    else:
        out[kind][edge, op] = False
    return out


def _dense_ranks(values: Sequence[float], descending: bool) -> list[int]:
    """0 for the best value, +1 per distinct value (ties share a rank), as the reference ranks."""
    distinct = sorted(set(values), reverse=descending)
    position = {v: i for i, v in enumerate(distinct)}
    return [position[v] for v in values]


def rank_candidates(changes: dict[Candidate, tuple[float, float]], precision: int) -> dict[Candidate, int]:
    """Sum of the two ranks per candidate: the NTK change descending, the region change ascending (both rounded
    to ``precision`` decimals); the smaller the sum, the less removing the candidate harms the network."""
    keys = list(changes)
    ntk_rank = _dense_ranks([round(changes[k][0], precision) for k in keys], descending=True)
    region_rank = _dense_ranks([round(changes[k][1], precision) for k in keys], descending=False)
    return {k: a + b for k, a, b in zip(keys, ntk_rank, region_rank)}


Measure = Callable[[Masks, list[Candidate]], dict[Candidate, tuple[float, float]]]


def prune_ops(masks: Masks, measure: Measure, prune_number: int, precision: int) -> tuple[Masks, list[Candidate], dict]:
    """One pruning round: measure every remaining op of every edge with more than one, prune per edge the
    ``prune_number`` (at most all but one) with the smallest rank sum. Returns the new masks, the pruned ops and the log."""
    candidates = [
        (kind, e, o)
        for kind, mask in masks.items()
        for e in range(mask.shape[0])
        if int(mask[e].sum()) > 1
        for o in mask[e].nonzero().flatten().tolist()
    ]
    changes = measure(masks, candidates)
    scores = rank_candidates(changes, precision)
    order = sorted(candidates, key=lambda c: scores[c])  # stable: ties keep the measuring order
    pruned: list[Candidate] = []
    per_edge: dict[tuple[str, int], int] = {}
    for kind, e, o in order:
        allowed = min(prune_number, int(masks[kind][e].sum()) - 1)
        if per_edge.get((kind, e), 0) < allowed:
            per_edge[(kind, e)] = per_edge.get((kind, e), 0) + 1
            pruned.append((kind, e, o))
    new = {k: m.clone() for k, m in masks.items()}
    for kind, e, o in pruned:
        new[kind][e, o] = False
    log = {"candidates": [[k, e, o, *changes[(k, e, o)], scores[(k, e, o)]] for k, e, o in candidates]}
    return new, pruned, log


def prune_edges(masks: Masks, measure: Measure, steps: int, precision: int, keep: int = 2) -> tuple[Masks, list[dict]]:
    """DARTS' edge pruning: node by node (normal cell first), measure removing each of its edges, keep the ``keep``
    with the largest rank sums (the most harmful to remove), prune the others; a node's pruning is applied before
    the next node is measured, as the reference does."""
    logs = []
    for kind in list(masks):
        for node, edges in enumerate(node_slices(steps)):
            alive = [e for e in range(edges.start, edges.stop) if masks[kind][e].any()]
            if len(alive) <= keep:
                continue
            candidates = [(kind, e, -1) for e in alive]
            changes = measure(masks, candidates)
            scores = rank_candidates(changes, precision)
            order = sorted(candidates, key=lambda c: scores[c])
            for candidate in order[: len(order) - keep]:
                masks = removed(masks, candidate)
            logs.append(
                {
                    "cell": kind,
                    "node": node,
                    "candidates": [[k, e, *changes[(k, e, o)], scores[(k, e, o)]] for k, e, o in candidates],
                    "pruned_edges": [e for _, e, _ in order[: len(order) - keep]],
                }
            )
    return masks, logs


def darts_genotype(masks: Masks, steps: int = 4, multiplier: int = 4) -> Genotype:
    """The cells of a fully pruned DARTS supernet: per node its two edges (by input index), each with its one operation."""
    cells = {}
    for kind, mask in masks.items():
        cell = []
        for edges in node_slices(steps):
            for j, e in enumerate(range(edges.start, edges.stop)):
                ops = mask[e].nonzero().flatten().tolist()
                if len(ops) > 1:
                    raise ValueError(f"edge {e} of the {kind} cell still has {len(ops)} operations")
                if ops:
                    cell.append((PRIMITIVES[ops[0]], j))
        cells[kind] = tuple(cell)
    concat = tuple(range(2 + steps - multiplier, steps + 2))
    if "reduce" in cells:
        return Genotype(cells["normal"], concat, cells["reduce"], concat).validate()
    return Genotype(cells["normal"], concat).validate()


def nb201_arch(masks: Masks) -> str:
    codes = []
    for e, row in enumerate(masks["cell"]):
        ops = row.nonzero().flatten().tolist()
        if len(ops) != 1:
            raise ValueError(f"NB201 edge {e} has {len(ops)} operations, not one")
        codes.append(ops[0])
    return TOPOLOGY.format(tuple(codes))


class TenasModule(TaskModule):
    """TE-NAS' settings (``--model.*``). Nothing is trained: the module only carries the options and the task's metric.

    Args:
        task: the task.
        space: ``darts`` (default, as NB360's Table 4) or ``nb201``.
        ntk_channels: C of the network the NTK is measured on (reference: 1 for DARTS, 3 for NB201).
        region_channels: C of the network the linear regions are counted on (reference: 1).
        layers: cells of the DARTS measuring networks (3: a normal and two reduction cells on point tasks;
            the reference's depth-2 network has one of each).
        steps: intermediate nodes of a DARTS cell (the DARTS space: 4; every cell concatenates all of them).
        cells: N of the NB201 measuring networks (reference: 1).
        repeats: fresh initialisations and batches each measure is averaged over (reference: 3).
        ntk_batch: inputs of the NTK batch (default: 14 for DARTS, 72 for NB201, the reference's CIFAR settings).
        region_samples, region_batches: inputs per forward and forwards of the region count (reference: 1000, 3).
        region_size: side of the random crops of training inputs the regions are counted on (reference: 3).
        prune_number: operations pruned per edge and round (at most all but one; the reference: 1 for NB201, 3 for
            DARTS on CIFAR-10, 2 on ImageNet).
        precision: decimals the relative changes are rounded to before ranking (ties share a rank; reference: 3).
    """

    def __init__(
        self,
        task: str = "cifar100",
        space: Literal["darts", "nb201"] = "darts",
        ntk_channels: int | None = None,
        region_channels: int = 1,
        layers: int = 3,
        steps: int = 4,
        cells: int = 1,
        repeats: int = 3,
        ntk_batch: int | None = None,
        region_samples: int = 1000,
        region_batches: int = 3,
        region_size: int = 3,
        prune_number: int = 1,
        precision: int = 3,
        metric_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(task, metric_options)
        self.save_hyperparameters()
        for name in (
            "region_channels",
            "layers",
            "steps",
            "cells",
            "repeats",
            "region_samples",
            "region_batches",
            "region_size",
            "prune_number",
        ):
            if getattr(self.hparams, name) < 1:
                raise UsageError(f"--model.{name} must be at least 1, got {getattr(self.hparams, name)}")
        if self.ntk_batch < 2:
            raise UsageError(
                f"--model.ntk_batch must be at least 2 (the NTK of one sample has one eigenvalue), got {self.ntk_batch}"
            )
        self.net = self.measuring_network(self.ntk_channels)

    @property
    def ntk_channels(self) -> int:
        h = self.hparams
        return h.ntk_channels if h.ntk_channels is not None else (1 if h.space == "darts" else 3)

    @property
    def ntk_batch(self) -> int:
        h = self.hparams
        return h.ntk_batch if h.ntk_batch is not None else (14 if h.space == "darts" else 72)

    def measuring_network(self, channels: int) -> nn.Module:
        h = self.hparams
        if h.space == "darts":
            return MaskedDarts(self.spec, channels, h.layers, h.steps, h.steps)
        return MaskedNB201(self.spec, channels, h.cells)


class Measurer:
    """The measures of a round: ``repeats`` (initialisation, NTK batch, crops) draws, shared by every candidate of the
    round (common random numbers: a candidate's change is measured against the current network on the same draw)."""

    def __init__(self, module: TenasModule, dataset: Any, seed: int, round_index: int, device: torch.device) -> None:
        h = module.hparams
        self.module, self.device = module, device
        self.draws = []
        for r in range(h.repeats):
            seed_r = seed * 1_000_003 + round_index * 1009 + r
            gen = torch.Generator().manual_seed(seed_r)
            if module.ntk_batch > len(dataset):  # a repeated input makes the NTK singular: draw without replacement
                raise UsageError(f"--model.ntk_batch {module.ntk_batch} exceeds the {len(dataset)} training inputs")
            x = _inputs(dataset, torch.randperm(len(dataset), generator=gen)[: module.ntk_batch].tolist()).to(device)
            crops = _crops(dataset, h.region_samples * h.region_batches, h.region_size, gen).to(device)
            torch.manual_seed(seed_r)
            ntk_net = module.measuring_network(module.ntk_channels).to(device)
            region_net = module.measuring_network(h.region_channels).to(device)
            self.draws.append((x, crops, ntk_net, region_net))
        self.base: dict[str, list[float]] | None = None

    def _measure(self, masks: Masks) -> list[tuple[float, float]]:
        out = []
        for x, crops, ntk_net, region_net in self.draws:
            ntk_net.masks, region_net.masks = masks, masks
            kappa = condition_number(ntk_net, x)  # train mode, as the reference
            regions = count_regions(region_net, crops, batch_size=self.module.hparams.region_samples)
            out.append((kappa, regions))
        return out

    def __call__(self, masks: Masks, candidates: list[Candidate]) -> dict[Candidate, tuple[float, float]]:
        base = self._measure(masks)
        self.base = {"ntk_cond": [b[0] for b in base], "regions": [b[1] for b in base]}
        changes = {}
        for candidate in candidates:
            pruned = self._measure(removed(masks, candidate))
            ntk_change = sum((b[0] - p[0]) / b[0] for b, p in zip(base, pruned)) / len(base)
            region_change = sum((b[1] - p[1]) / b[1] for b, p in zip(base, pruned)) / len(base)
            changes[candidate] = (ntk_change, region_change)
        return changes


def _inputs(dataset: Any, indices: list[int]) -> Tensor:
    from nb360.search.bilevel import _gather

    return _gather(dataset, indices)["x"].float()


def _crops(dataset: Any, count: int, size: int, gen: torch.Generator, chunk: int = 256) -> Tensor:
    """``count`` random ``size``-wide crops (every spatial axis; the whole axis where it is shorter), each of a
    random training input."""
    crops = []
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        x = _inputs(dataset, torch.randint(len(dataset), (n,), generator=gen).tolist())
        spatial = x.shape[2:]
        sizes = [min(size, s) for s in spatial]
        for i in range(n):
            offsets = [int(torch.randint(s - w + 1, (1,), generator=gen)) for s, w in zip(spatial, sizes)]
            index = (i, slice(None), *(slice(o, o + w) for o, w in zip(offsets, sizes)))
            crops.append(x[index])
    return torch.stack(crops)


def _device(ctx: RunContext) -> torch.device:
    accelerator = str(ctx.trainer_kwargs.get("accelerator", "auto"))
    return torch.device("cuda" if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available() else "cpu")


def search(ctx: RunContext, stages: SearchStages) -> tuple[Any, dict[str, Any]]:
    """The pruning search on the search split's training data; ends with :func:`record_search`."""
    from tqdm.auto import tqdm

    module: TenasModule = ctx.model
    h = module.hparams
    start = time.perf_counter()
    datamodule = ctx.datamodule
    datamodule.prepare_data()
    datamodule.setup("fit")
    dataset = datamodule.datasets["train"]
    seed, device = ctx.seed, _device(ctx)
    masks = initial_masks(h.space, module.spec, h.steps)
    settings = {**dict(h), "ntk_channels": module.ntk_channels, "ntk_batch": module.ntk_batch}
    log: dict[str, Any] = {"space": h.space, "settings": settings, "rounds": []}
    write = rank_zero_only.rank == 0

    def save_log() -> None:
        if write:
            write_json(ctx.run_dir / LOG_FILE, log)

    edges_left = lambda m: sum(int((row.sum() > 1).item()) for mask in m.values() for row in mask)  # noqa: E731
    show = bool(ctx.trainer_kwargs.get("enable_progress_bar", True)) and write
    rounds = 0
    with tqdm(desc="TE-NAS pruning rounds", unit="round", disable=not show) as bar:
        while edges_left(masks):
            measurer = Measurer(module, dataset, seed, rounds, device)
            masks, pruned, entry = prune_ops(masks, measurer, h.prune_number, h.precision)
            entry = {"round": rounds, "stage": "ops", **(measurer.base or {}), **entry}
            entry["pruned"] = [[k, e, _op_name(h.space, o)] for k, e, o in pruned]
            log["rounds"].append(entry)
            save_log()
            rounds += 1
            bar.update(1)
            bar.set_postfix(edges_with_choice=edges_left(masks))
        if h.space == "darts":
            measurer = Measurer(module, dataset, seed, rounds, device)
            masks, edge_logs = prune_edges(masks, measurer, h.steps, h.precision)
            log["rounds"].append({"round": rounds, "stage": "edges", "nodes": edge_logs})
            rounds += 1
            bar.update(1)
    architecture = darts_genotype(masks, h.steps, h.steps) if h.space == "darts" else nb201_arch(masks)
    log["architecture"] = stages.to_dict(architecture)
    save_log()
    wall = time.perf_counter() - start
    extra = {"params": module.num_parameters, "rounds": rounds, "processes": 1}
    return architecture, record_search(ctx, stages, architecture, float("nan"), wall, extra, write=write)


def _op_name(space: str, op: int) -> str:
    return (OPS if space == "nb201" else PRIMITIVES)[op]


# ---------------------------------------------------------------------------------------------- registration
def _nb201_context(ctx: RunContext) -> RunContext:
    """The run seen by the NB201 stages: ``--eval_nb201.*`` as their ``--eval.*``."""
    args = copy.copy(ctx.args)
    args.eval = ctx.args.eval_nb201
    return dataclasses.replace(ctx, args=args)


def _run(ctx: RunContext) -> dict[str, Any]:
    if ctx.model.hparams.space == "darts":
        return search_then_evaluate(ctx, darts_method.STAGES, search=search)
    return search_then_evaluate(_nb201_context(ctx), stages_for("nb201"), search=search)


def _defaults(spec: TaskSpec) -> dict[str, Any]:
    defaults = {
        "data.split": "search",
        "eval.batch_size": darts_method.EVAL_BATCH.get(spec.name, spec.reference.batch_size),
        "eval_nb201.batch_size": spec.reference.batch_size,
    }
    if spec.name in darts_method.EVAL_CHANNELS:
        defaults["eval.channels"] = darts_method.EVAL_CHANNELS[spec.name]
    return defaults


def _arguments(parser: Any) -> None:
    add_stage_arguments(parser, search_epochs=0, eval_epochs=150)  # --search_epochs is unused: nothing is trained
    parser.add_class_arguments(
        darts_method.DartsEval, "eval", help="retraining of a DARTS-space architecture (--model.space darts)"
    )
    parser.add_class_arguments(NB201Eval, "eval_nb201", help="retraining of an NB201 architecture (--model.space nb201)")


register_method(
    Method(
        name="tenas",
        description="TE-NAS: training-free pruning by NTK condition number and linear regions (DARTS or NB201 space)",
        module=TenasModule,
        run=_run,
        defaults=_defaults,
        add_arguments=_arguments,
    )
)
