"""TE-NAS: the pruning rule on a controlled measure, the masked supernets, and end-to-end runs in both spaces."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import read_results

from nb360.models import build_network, count_parameters
from nb360.models.darts import PRIMITIVES, Genotype
from nb360.models.darts.supernet import node_slices
from nb360.proxies.tenas import condition_number
from nb360.search.tenas import (
    MaskedDarts,
    MaskedNB201,
    darts_genotype,
    initial_masks,
    nb201_arch,
    prune_edges,
    prune_ops,
    rank_candidates,
    removed,
)
from nb360.spaces.nb201 import OPS, TOPOLOGY
from nb360.tasks import get_task

TINY = [
    "--model.repeats=1",
    "--model.prune_number=3",
    "--model.ntk_batch=2",
    "--model.region_samples=8",
    "--model.region_batches=1",
    "--model.layers=3",
    "--model.steps=2",
    "--eval.channels=4",
    "--eval.layers=3",
    "--eval_nb201.channels=4",
    "--eval_nb201.cells=1",
    "--search_epochs=1",
    "--eval_epochs=1",
    "--trainer.limit_train_batches=2",
]


pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny steps: one intra-op thread


def table_measure(table: dict, calls: list | None = None):
    """A measure returning a fixed (ntk change, region change) per (cell, edge, op), whatever the masks."""

    def measure(masks, candidates):
        if calls is not None:
            calls.append((masks, list(candidates)))
        return {c: table(c) for c in candidates}

    return measure


# ---------------------------------------------------------------- the pruning rule
def test_rank_sum_uses_dense_ranks_with_ties_after_rounding():
    changes = {("c", 0, 1): (0.5, 0.0), ("c", 0, 2): (0.5004, -0.1), ("c", 1, 1): (0.1, 0.2), ("c", 1, 2): (-0.3, 0.2)}
    # ntk descending: 0.5 (both, rounded) -> 0, 0.1 -> 1, -0.3 -> 2; regions ascending: -0.1 -> 0, 0.0 -> 1, 0.2 -> 2
    assert rank_candidates(changes, precision=3) == {("c", 0, 1): 1, ("c", 0, 2): 0, ("c", 1, 1): 3, ("c", 1, 2): 4}


def test_each_round_prunes_exactly_one_op_per_edge_the_least_harmful_one():
    spec = get_task("ninapro")
    masks = initial_masks("nb201", spec)
    assert masks["cell"].sum() == 6 * 4 and not masks["cell"][:, 0].any()  # none is out from the start
    # removing op o of edge e lowers kappa by (o + e) % 4 / 10 and the regions by ((o + e) % 4) / 10 as well:
    # the op with the largest (o + e) % 4 is the least harmful to remove on each edge
    table = lambda c: (((c[2] + c[1]) % 4) / 10, -((c[2] + c[1]) % 4) / 10)  # noqa: E731
    calls: list = []
    rounds = 0
    while (masks["cell"].sum(1) > 1).any():
        before = masks["cell"].clone()
        masks, pruned, log = prune_ops(masks, table_measure(table, calls), prune_number=1, precision=3)
        rounds += 1
        assert (before.sum(1) - masks["cell"].sum(1)).tolist() == [1] * 6
        for kind, e, o in pruned:
            alive = before[e].nonzero().flatten().tolist()
            assert o == max(alive, key=lambda op: ((op + e) % 4, -alive.index(op)))
        assert len(calls[-1][1]) == int(before.sum())  # every remaining op of every edge was measured
    assert rounds == 3
    arch = nb201_arch(masks)
    # the op left on edge e is the one with the smallest (o + e) % 4 among 1..4
    expected = tuple(min(range(1, 5), key=lambda o: ((o + e) % 4, o)) for e in range(6))
    assert TOPOLOGY.parse(arch) == expected


def test_prune_number_and_edges_with_one_op_left():
    masks = {"cell": torch.tensor([[False, True, True, True, True], [False, False, True, False, False]])}
    new, pruned, _ = prune_ops(masks, table_measure(lambda c: (c[2] / 10, 0.0)), prune_number=3, precision=3)
    # ntk change highest for the largest op index: prune 4, 3, 2 on edge 0; edge 1 has one op and is not touched
    assert sorted(pruned) == [("cell", 0, 2), ("cell", 0, 3), ("cell", 0, 4)]
    assert new["cell"][0].nonzero().flatten().tolist() == [1] and new["cell"][1].nonzero().flatten().tolist() == [2]


def test_darts_edge_pruning_keeps_the_two_most_harmful_edges_per_node():
    spec = get_task("cifar100")
    masks = initial_masks("darts", spec)
    for kind in masks:  # one op per edge: op 1 + edge % 7
        masks[kind][:] = False
        for e in range(14):
            masks[kind][e, 1 + e % 7] = True
    # removing edge e lowers the regions by e / 100 of their count: the later the input, the more harmful its removal
    new, logs = prune_edges(masks, table_measure(lambda c: (0.0, c[1] / 100)), steps=4, precision=3)
    genotype = darts_genotype(new)
    for node, edges in enumerate(node_slices(4)):
        inputs = sorted(j for _, j in genotype.normal[2 * node : 2 * node + 2])
        assert inputs == [node, node + 1]  # the two last inputs
        assert [op for op, _ in genotype.normal[2 * node : 2 * node + 2]] == [
            PRIMITIVES[1 + e % 7] for e in (edges.stop - 2, edges.stop - 1)
        ]
    assert genotype.reduce is not None and len(logs) == 2 * 3  # nodes 1..3 of both cells have more than 2 inputs
    assert Genotype.from_dict(genotype.to_dict()) == genotype


# ---------------------------------------------------------------- masked supernets
@pytest.mark.parametrize("task", ["cifar100", "darcy", "ecg"])
def test_masked_supernets_run_only_unmasked_ops(task):
    spec = get_task(task)
    x = torch.randn(2, spec.input_shape[0], *[min(s, 8) for s in spec.input_shape[1:]])
    for net in (MaskedDarts(spec, 1, 3), MaskedNB201(spec, 2, 1)):
        ran: list = []
        hooks = []
        for cell in net.net.cells:
            if not hasattr(cell, "edges"):
                continue  # NB201's residual reduction blocks
            kind = "cell" if isinstance(net, MaskedNB201) else "reduce" if cell.reduction else "normal"
            for e, edge in enumerate(cell.edges):
                for o, op in enumerate(edge.ops):
                    hooks.append(op.register_forward_hook(lambda m, i, out, key=(kind, e, o): ran.append(key)))
        net.masks = removed(net.masks, ("normal" if isinstance(net, MaskedDarts) else "cell", 0, 2))
        out = net(x)
        assert out.shape[0] == 2 and torch.isfinite(out).all()
        assert ran and all(o != 0 for _, _, o in ran)  # "none" never runs
        assert ("normal" if isinstance(net, MaskedDarts) else "cell", 0, 2) not in ran
        assert all(key in ran for key in [(k, 0, 1) for k in net.masks])
        if isinstance(net, MaskedDarts) and spec.kind == "point":
            assert ("reduce", 0, 2) in ran  # the reduction cell keeps its own mask
        for h in hooks:
            h.remove()
        # a well-conditioned NTK (without the BN-ReLU before the DARTS head it is singular: kappa ~ 1e12)
        batch = torch.randn(4, *x.shape[1:], generator=torch.Generator().manual_seed(0))
        assert 1.0 <= condition_number(net, batch) < 1e4


# ---------------------------------------------------------------- through train.py
@pytest.fixture(scope="module")
def cifar(task_fixture):
    return task_fixture("cifar100")


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_search_then_retrain_end_to_end(space, cifar, train, tmp_path):
    root, options = cifar
    data = [f"--data.{k}={v}" for k, v in options.items()] + ["--data.batch_size=4", "--data.eval_batch_size=4"]
    args = ["--task", "cifar100", "--method", "tenas", f"--data.root={root}", *data, *TINY, f"--model.space={space}"]
    assert train(*args) == 0
    run_dir = tmp_path / "runs" / "cifar100" / "tenas" / "seed0"
    results = read_results(run_dir)
    saved = json.loads((run_dir / "genotype.json").read_text())
    assert results["stage"] == "all" and results["split"] == "test" and results["genotype"] == saved
    assert (run_dir / "genotype.png").stat().st_size > 0
    log = json.loads((run_dir / "tenas.json").read_text())
    assert log["architecture"] == saved and log["rounds"]
    first = log["rounds"][0]
    assert len(first["ntk_cond"]) == 1 and len(first["regions"]) == 1 and first["candidates"]
    if space == "darts":
        genotype = Genotype.from_dict(saved)
        assert genotype.reduce is not None and len(genotype.normal) == 4 and genotype.normal_concat == (2, 3)  # 2 nodes
        assert len([r for r in log["rounds"] if r["stage"] == "ops"]) == 2  # 7 ops, 3 pruned per round: 7 -> 4 -> 1
        assert log["rounds"][-1]["stage"] == "edges" and len(log["rounds"][-1]["nodes"]) == 2  # node 1 of both cells
        network = build_network("darts", get_task("cifar100"), genotype=saved, channels=4, layers=3)  # --eval.*
    else:
        assert saved["space"] == "nb201" and "none" not in saved["arch"]
        TOPOLOGY.parse(saved["arch"])
        assert len(log["rounds"]) == 1 and len(OPS) - 1 == 4  # 4 ops, 3 pruned in the first round
        network = build_network("nb201", get_task("cifar100"), arch=saved["arch"], channels=4, cells=1)  # --eval_nb201.*
    assert results["params"] == count_parameters(network)
    strict = {"parse_constant": lambda name: pytest.fail(f"search.json holds {name}, which is not JSON")}
    search = json.loads((run_dir / "search.json").read_text(), **strict)
    assert search["rounds"] == len(log["rounds"]) and search["genotype"] == saved
    assert search["value"] is None  # a training-free search has no validation score


def test_nb201_stages_separately(cifar, train, tmp_path):
    root, options = cifar
    data = [f"--data.{k}={v}" for k, v in options.items()] + ["--data.batch_size=4", "--data.eval_batch_size=4"]
    base = ["--task", "cifar100", "--method", "tenas", f"--data.root={root}", *data, *TINY, "--model.space=nb201"]
    assert train(*base, "--stage=search") == 0
    run_dir = tmp_path / "runs" / "cifar100" / "tenas" / "seed0"
    searched = read_results(run_dir)
    assert searched["stage"] == "search" and not (run_dir / "eval").exists()
    assert train(*base, "--stage=eval") == 0  # retrains the architecture the search left, with --eval_nb201.*
    results = read_results(run_dir)
    assert results["stage"] == "all" and results["genotype"] == searched["genotype"]
    network = build_network("nb201", get_task("cifar100"), arch=searched["genotype"]["arch"], channels=4, cells=1)
    assert results["params"] == count_parameters(network)
    assert train(*base, "--stage=search", output_dir=tmp_path / "again") == 0  # seeded: the same search again
    again = json.loads((tmp_path / "again" / "cifar100" / "tenas" / "seed0" / "tenas.json").read_text())
    assert again == json.loads((run_dir / "tenas.json").read_text())
