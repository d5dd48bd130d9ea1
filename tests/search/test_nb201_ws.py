"""NB201 weight-sharing searches: the supernet's modes, GDAS' schedule, every method through train.py, benchmark lookup, DDP."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from helpers import read_results

from nb360.models import build_network
from nb360.models.nb201.supernet import NB201SuperNet, SearchCell
from nb360.spaces.nb201 import OPS, TOPOLOGY
from nb360.tasks import get_task

TINY = ["--model.channels=4", "--model.cells=1", "--model.candidates=4", "--eval.channels=4", "--eval.cells=1"]
FAST = ["--search_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--model.controller_aggregate=2"]


@pytest.fixture(scope="module")
def roots(task_fixture) -> dict:
    return {task: task_fixture(task) for task in ("ninapro", "darcy", "ecg")}


def args_for(task: str, roots: dict, method: str, *extra: str) -> list[str]:
    root, options = roots[task]
    data = [f"--data.{k}={v}" for k, v in options.items()] + ["--data.batch_size=2", "--data.eval_batch_size=4"]
    return ["--task", task, "--method", method, f"--data.root={root}", *data, *TINY, *FAST, *extra]


# ---------------------------------------------------------------- supernet
def test_gdas_temperature_is_linear_from_10_to_0_1_over_the_epochs():
    from nb360.models.nb201.supernet import tau_at as gdas_tau

    assert [round(gdas_tau(e, 4), 10) for e in range(4)] == [10.0, 6.7, 3.4, 0.1]
    assert (
        gdas_tau(0, 100) == 10.0
        and gdas_tau(99, 100) == pytest.approx(0.1)
        and gdas_tau(50, 100) == pytest.approx(10 - 9.9 * 50 / 99)
    )
    assert gdas_tau(0, 1) == 10.0


def test_gdas_edge_computes_only_the_sampled_op_with_straight_through_weights():
    torch.manual_seed(0)
    cell = SearchCell(2, 4, 4, affine=True, track_running_stats=False)
    edge = cell.edges[0]
    x = torch.randn(2, 4, 6, 6)
    alphas = torch.randn(6, len(OPS), requires_grad=True)
    from nb360.models.nb201.supernet import gumbel_hard

    hard, index = gumbel_hard(alphas, tau=1.0)
    chosen = int(index[0])
    out = edge.forward_gdas(x, hard[0], chosen)
    torch.testing.assert_close(out, edge.ops[chosen](x))  # the value is the chosen op's output (hard weight 1, others 0)
    out.sum().backward()
    assert alphas.grad is not None and alphas.grad[0].abs().sum() > 0  # straight-through gradient reaches alpha
    for k, op in enumerate(edge.ops):
        grads = [p.grad for p in op.parameters()]
        if k == chosen:
            assert all(g is not None for g in grads)
        else:
            assert all(g is None for g in grads)  # never computed


@pytest.mark.parametrize("task", ["ninapro", "darcy", "ecg"])
def test_one_hot_darts_supernet_equals_the_discrete_network_with_the_same_weights(task):
    torch.manual_seed(1)
    spec = get_task(task)
    arch = "|nor_conv_3x3~0|+|skip_connect~0|none~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"
    supernet = NB201SuperNet(
        spec.dims, spec.kind, spec.in_channels, spec.num_outputs, 4, 1, affine=True, track_running_stats=True
    )
    network = build_network("nb201", spec, arch=arch, channels=4, cells=1)
    codes = TOPOLOGY.to_codes(arch)
    with torch.no_grad():
        supernet.alphas.fill_(-1e4)
        for e, c in enumerate(codes):
            supernet.alphas[e, c] = 1e4
    state = {k: v for k, v in supernet.state_dict().items() if ".edges." not in k and k != "alphas"}
    for name in list(network.state_dict()):
        parts = name.split(".")
        if parts[0] == "cells" and parts[2] == "edges":  # cells.<layer>.edges.<e>.<rest> <- supernet's ops[code]
            layer, e = int(parts[1]), int(parts[3])
            state[name] = supernet.state_dict()[
                ".".join(["cells", str(layer), "edges", str(e), "ops", str(codes[e]), *parts[4:]])
            ]
    network.load_state_dict(state)
    supernet.eval(), network.eval()
    x = torch.randn(2, *spec.input_shape[:1], *[min(s, 24) for s in spec.input_shape[1:]])
    torch.testing.assert_close(supernet(x), network(x))
    supernet.set_mode("dynamic", arch)
    torch.testing.assert_close(supernet(x), network(x))
    assert supernet.genotype() == arch


def test_top_k_follows_the_product_of_probabilities():
    net = NB201SuperNet(2, "point", 1, 3, 4, 1)
    with torch.no_grad():
        net.alphas.copy_(torch.randn(6, 5, generator=torch.Generator().manual_seed(3)))
    top = net.top_k(7)
    logp = [net.log_prob(a) for a in top]
    assert top[0] == net.genotype() and logp == sorted(logp, reverse=True) and len(set(top)) == 7
    assert all(
        net.log_prob(TOPOLOGY.arch(i)) <= logp[-1] + 1e-12 for i in range(0, len(TOPOLOGY), 97) if TOPOLOGY.arch(i) not in top
    )


# ---------------------------------------------------------------- through train.py
@pytest.mark.parametrize(
    "task, method",
    [
        ("ninapro", "nb201_darts"),
        ("ecg", "nb201_darts2"),
        ("darcy", "nb201_gdas"),
        ("ninapro", "nb201_setn"),
        ("ecg", "nb201_enas"),
        ("darcy", "nb201_rsps"),
    ],
)
def test_every_method_searches_and_yields_a_valid_cell(task, method, roots, train, tmp_path):
    stage = "--stage=all" if method == "nb201_darts" else "--stage=search"
    assert train(*args_for(task, roots, method, stage, "--eval_epochs=1")) == 0
    run_dir = tmp_path / "runs" / task / method / "seed0"
    results = read_results(run_dir)
    saved = json.loads((run_dir / "genotype.json").read_text())
    assert saved["space"] == "nb201" and results["genotype"] == saved
    TOPOLOGY.parse(saved["arch"])
    assert (run_dir / "genotype.png").stat().st_size > 0 and (run_dir / "genotype.svg").is_file()
    if method == "nb201_darts":  # retrained on the final split
        assert results["stage"] == "all" and results["split"] == "test" and "source" not in results
    with open(run_dir / "search" / "metrics.csv") as f:
        header = f.readline()
    if method == "nb201_gdas":
        assert "arch/tau" in header and "arch/3<-2/nor_conv_3x3" in header
    if method == "nb201_enas":
        assert "train/arch_reward" in header


def test_benchmark_lookup_replaces_retraining(roots, train, tmp_path):
    from nb360.tabular.api import create
    from nb360.tabular.fixture import write_fixture

    base = args_for("ninapro", roots, "nb201_gdas")
    assert train(*base, "--stage=search") == 0
    run_dir = tmp_path / "runs" / "ninapro" / "nb201_gdas" / "seed0"
    arch = json.loads((run_dir / "genotype.json").read_text())["arch"]
    index = TOPOLOGY.index(arch)
    other = (index + 1) % len(TOPOLOGY)
    path = write_fixture(
        tmp_path / "bench", indexes=(other, index), dataset="ninapro", hp="200", epochs=2, eval_names=("x-valid", "ori-test")
    )
    assert train(*base, "--stage=eval", f"--benchmark={path}") == 0
    results = read_results(run_dir)
    # fixture: eval acc1 = 40 + 10 k + e + 2 q; the arch is k = 1, last epoch e = 1, ori-test is q = 1 -> 53 %
    bench = create(path)
    info = bench.score_info("ninapro")
    expected = 100 - 53.0 if info["name"] == "error" else 53.0
    assert results["source"] == "benchmark" and results["value"] == pytest.approx(expected)
    assert results["value"] == bench.score(index, "ninapro", "200", "ori-test")
    assert results["metric"] == info["name"] and results["lower_is_better"] == info["lower_is_better"]
    assert results["benchmark_hp"] == "200" and results["benchmark_set"] == "ori-test" and results["genotype"]["arch"] == arch
    assert not (run_dir / "eval").exists()


def test_ddp_darts_and_gdas_agree_across_processes(roots, tmp_path):
    """Two gloo processes each; derive() compares the architecture parameters and the arch of both."""
    from conftest import QUIET, REPO

    for method, strategy in (("nb201_darts", "ddp"), ("nb201_gdas", "ddp_find_unused_parameters_true")):
        ddp = [f"--trainer.strategy={strategy}", "--trainer.devices=2", "--trainer.accelerator=cpu", "--stage=search"]
        command = [
            sys.executable,
            str(REPO / "train.py"),
            *args_for("ninapro", roots, method, *ddp, *QUIET),
            f"--output_dir={tmp_path}",
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        search = json.loads((tmp_path / "ninapro" / method / "seed0" / "search.json").read_text())
        assert search["processes"] == 2
        TOPOLOGY.parse(search["genotype"]["arch"])


def test_a_missing_or_corrupt_benchmark_fails_before_the_search(roots, train, tmp_path, capsys):
    corrupt = tmp_path / "NATS-tss-v1_0-bad.pickle.pbz2"
    corrupt.write_bytes(b"not a bz2 pickle")
    for path, message in ((tmp_path / "missing.nb360", "does not exist"), (corrupt, "is not a readable pickle")):
        out = tmp_path / f"runs-{path.stem}"
        assert train(*args_for("ninapro", roots, "nb201_gdas"), f"--benchmark={path}", output_dir=out) != 0
        assert message in capsys.readouterr().err.strip().splitlines()[-1]
        assert not list(out.rglob("genotype.json")) and not list(out.rglob("*.ckpt"))  # no search ran
