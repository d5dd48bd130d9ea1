"""DARTS space and GAEA/DARTS search: shapes, genotypes, optimiser separation, the second-order gradient, pipeline runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import read_results

from nb360.errors import UsageError
from nb360.models import build_network, count_parameters
from nb360.models.darts import PRIMITIVES, Genotype, SearchNetwork
from nb360.models.darts.supernet import MixedOp, node_slices
from nb360.search.darts import DartsSearchModule, ExponentiatedGradient
from nb360.tasks import get_task, task_names

DARTS_V2 = {  # the genotype published with DARTS (Liu et al. 2019), second order, CIFAR-10
    "normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 0], ["sep_conv_3x3", 1], ["sep_conv_3x3", 1], ["skip_connect", 0], ["skip_connect", 0], ["dil_conv_3x3", 2]],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [["max_pool_3x3", 0], ["max_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1], ["max_pool_3x3", 0], ["skip_connect", 2], ["skip_connect", 2], ["max_pool_3x3", 1]],
    "reduce_concat": [2, 3, 4, 5],
}


def tiny_module(task: str = "cifar100", **kwargs) -> DartsSearchModule:
    return DartsSearchModule(task=task, channels=4, layers=3, **kwargs)


def batch_for(task: str, n: int = 4, seed: int = 0) -> dict[str, torch.Tensor]:
    spec = get_task(task)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *spec.input_shape, generator=g)
    if spec.kind == "dense":
        y = torch.rand(n, 1, *spec.input_shape[1:], generator=g) + 0.5
    elif spec.loss == "bce_with_logits":
        y = torch.randint(0, 2, (n, spec.num_outputs), generator=g).float()
    else:
        y = torch.randint(0, spec.num_outputs, (n,), generator=g)
    return {"x": x, "y": y}


# ---------------------------------------------------------------- the space
def test_the_evaluation_network_of_the_published_darts_cell_has_the_published_size():
    """DARTS reports 3.3M parameters (3,349,342 by its own count) for its second-order cell on CIFAR-10."""
    from dataclasses import replace

    cifar10 = replace(get_task("cifar100"), num_outputs=10)
    assert count_parameters(build_network("darts", cifar10, genotype=DARTS_V2, channels=36, layers=20)) == 3_349_342


@pytest.mark.parametrize("task", task_names())
def test_supernet_and_evaluation_network_shapes_for_every_task(task):
    spec = get_task(task)
    net = SearchNetwork(spec.dims, spec.kind, spec.in_channels, spec.num_outputs, channels=8, layers=3)
    x = torch.randn(2, *spec.input_shape[:1], *[min(s, 64) for s in spec.input_shape[1:]])
    out = net(x)
    expected = (2, spec.num_outputs) if spec.kind == "point" else (2, spec.num_outputs, *x.shape[2:])
    assert tuple(out.shape) == expected
    assert net.has_reduction == (spec.kind == "point")
    genotype = net.genotype()
    assert (genotype.reduce is None) == (spec.kind == "dense")
    evaluation = build_network("darts", spec, genotype=genotype.to_dict(), channels=8, layers=4)
    assert tuple(evaluation(x).shape) == expected


@pytest.mark.parametrize("dim, size", [(2, (9, 13)), (2, (16, 16)), (1, (101,)), (1, (46,))])
@pytest.mark.parametrize("stride", [1, 2])
def test_partial_channel_mixed_op_keeps_shapes_and_shuffles(dim, size, stride):
    op = MixedOp(dim, 8, stride, k=4, shift=True)
    x = torch.randn(2, 8, *size)
    weights = torch.softmax(torch.randn(len(PRIMITIVES)), 0)
    out = op(x, weights)
    assert out.shape[:2] == (2, 8)
    assert tuple(out.shape[2:]) == tuple(-(-s // stride) for s in size)
    if stride == 1:
        # channel shuffle with k=4 groups: output channel 4 * c + g comes from group g's channel c,
        # so the bypassed channels 2..7 (group 1..3) land on positions 1, 5, 2, 6, 3, 7
        torch.testing.assert_close(out[:, [1, 5, 2, 6, 3, 7]], x[:, 2:])


def test_genotype_derivation_takes_the_top_two_non_none_inputs_per_node():
    net = SearchNetwork(2, "point", 3, 10, channels=4, layers=3)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        net.alphas_normal.copy_(torch.from_numpy(rng.normal(size=net.alphas_normal.shape)))
        net.alphas_normal[:, 0] = 50.0  # "none" dominates every edge but must never be chosen
        net.betas_normal.copy_(torch.from_numpy(rng.normal(size=net.betas_normal.shape)))
    genotype = net.genotype()
    # independent numpy version of the rule: weight = softmax(alpha) * per-node softmax(beta), none excluded
    alphas, betas = net.alphas_normal.detach().numpy(), net.betas_normal.detach().numpy()
    op_w = np.exp(alphas) / np.exp(alphas).sum(1, keepdims=True)
    expected = []
    for edges in node_slices(4):
        b = np.exp(betas[edges]) / np.exp(betas[edges]).sum()
        w = op_w[edges] * b[:, None]
        w[:, 0] = -np.inf
        best = np.argsort(-w.max(1), kind="stable")[:2]
        expected += [(PRIMITIVES[int(w[j].argmax())], int(j)) for j in best]
    assert genotype.normal == tuple(expected)
    assert all(op != "none" for op, _ in genotype.normal + genotype.reduce)
    assert genotype.normal_concat == (2, 3, 4, 5)


def test_genotypes_round_trip_and_bad_ones_are_one_line_errors(tmp_path):
    genotype = Genotype.from_dict(DARTS_V2)
    genotype.save(tmp_path / "g.json")
    assert Genotype.load(tmp_path / "g.json") == genotype
    assert json.loads((tmp_path / "g.json").read_text()) == DARTS_V2
    bad = [
        ({**DARTS_V2, "normal": DARTS_V2["normal"][:-1]}, "two inputs per node"),
        ({**DARTS_V2, "normal": [["conv_9x9", 0]] + DARTS_V2["normal"][1:]}, "unknown operation 'conv_9x9'"),
        ({**DARTS_V2, "normal": [["sep_conv_3x3", 2]] + DARTS_V2["normal"][1:]}, "node 0 of the normal cell takes input 2"),
        ({**DARTS_V2, "reduce_concat": [2, 9]}, "outside 0..5"),
        ({"normal": DARTS_V2["normal"]}, "expected an object"),
    ]
    for data, message in bad:
        with pytest.raises(UsageError, match=message) as err:
            Genotype.from_dict(data)
        assert "\n" not in str(err.value)
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(UsageError, match="not valid JSON"):
        Genotype.load(tmp_path / "broken.json")


# ---------------------------------------------------------------- optimisation
def test_exponentiated_gradient_update():
    p = torch.nn.Parameter(torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, 1.0]]))
    p.grad = torch.tensor([[0.1, -0.2, 0.3], [1.0, 0.0, -1.0]])
    ExponentiatedGradient([p], lr=0.5).step()
    raw = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 1.0]]) * np.exp(-0.5 * np.array([[0.1, -0.2, 0.3], [1.0, 0.0, -1.0]]))
    np.testing.assert_allclose(p.detach().numpy(), raw / raw.sum(1, keepdims=True), rtol=1e-6)


class _Trainerless:
    """Enough of a Lightning trainer for one manual step outside of ``fit``."""

    def __init__(self, module: DartsSearchModule) -> None:
        self.module = module
        self.weights, self.arch = torch.optim.SGD(module.net.weight_parameters(), lr=0.05, momentum=0.9), ExponentiatedGradient(module.net.arch_parameters(), 0.1)

    def weight_step(self, batch) -> None:
        self.weights.zero_grad()
        self.module.batch_loss(batch).backward()
        self.weights.step()

    def arch_step(self, batch) -> None:
        self.arch.zero_grad()
        self.module.batch_loss(batch).backward()
        self.arch.step()


def test_gradients_reach_both_levels_and_each_optimiser_touches_only_its_own():
    torch.manual_seed(0)
    module = tiny_module()
    steps = _Trainerless(module)
    batch = batch_for("cifar100")
    module.batch_loss(batch).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.net.arch_parameters())
    assert sum(p.grad.abs().sum() > 0 for p in module.net.weight_parameters() if p.grad is not None) > len(module.net.weight_parameters()) // 2
    weights_before = [p.detach().clone() for p in module.net.weight_parameters()]
    arch_before = [p.detach().clone() for p in module.net.arch_parameters()]
    steps.arch_step(batch)
    assert all(torch.equal(a, b) for a, b in zip(weights_before, module.net.weight_parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(arch_before, module.net.arch_parameters()))
    arch_after = [p.detach().clone() for p in module.net.arch_parameters()]
    steps.weight_step(batch)
    assert all(torch.equal(a, b) for a, b in zip(arch_after, module.net.arch_parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(weights_before, module.net.weight_parameters()))
    ids = {id(p) for p in module.net.arch_parameters()}
    assert not ids & {id(p) for p in module.net.weight_parameters()}
    assert len(ids) + len(module.net.weight_parameters()) == len(list(module.net.parameters()))


def test_second_order_gradient_matches_finite_differences_of_the_unrolled_loss():
    torch.manual_seed(0)
    # a small finite-difference step: the tiny random network is far from smooth at DARTS' default 0.01
    module = tiny_module("ecg", partial_channels=1, edge_normalization=False, unroll_eps=1e-7).double()
    spec_input = (1, 48)
    g = torch.Generator().manual_seed(1)
    train = {"x": torch.randn(6, *spec_input, generator=g, dtype=torch.float64), "y": torch.randint(0, 4, (6,), generator=g)}
    arch = {"x": torch.randn(6, *spec_input, generator=g, dtype=torch.float64), "y": torch.randint(0, 4, (6,), generator=g)}
    with torch.no_grad():
        for p in module.net.arch_parameters():
            p.normal_(0, 0.5, generator=g)
    xi, decay = 0.5, 3e-4
    optimizer = torch.optim.SGD(module.net.weight_parameters(), lr=xi, momentum=0.0, weight_decay=decay)
    analytic, _ = module.unrolled_arch_gradients(train, arch, optimizer)
    first_order = torch.autograd.grad(module.batch_loss(arch), module.net.arch_parameters())

    def unrolled_loss(alpha: torch.Tensor) -> float:
        """L_arch(w'(alpha), alpha) with w' one plain SGD step on a copy of the network."""
        clone = copy.deepcopy(module)
        clone.net.alphas_normal.data.copy_(alpha)
        weights = clone.net.weight_parameters()
        grads = torch.autograd.grad(clone.batch_loss(train), weights)
        with torch.no_grad():
            for w, gr in zip(weights, grads):
                w -= xi * (gr + decay * w)
        with torch.no_grad():
            return float(clone.batch_loss(arch))

    alpha0 = module.net.alphas_normal.detach().clone()
    h = 1e-6
    for index in [(0, 1), (3, 4), (7, 6), (12, 2)]:
        plus, minus = alpha0.clone(), alpha0.clone()
        plus[index] += h
        minus[index] -= h
        numeric = (unrolled_loss(plus) - unrolled_loss(minus)) / (2 * h)
        assert analytic[0][index].item() == pytest.approx(numeric, rel=2e-3, abs=1e-7)
        assert abs(numeric - first_order[0][index].item()) > 100 * abs(numeric - analytic[0][index].item())


# ---------------------------------------------------------------- through train.py
def run_args(task: str, root: Path, fixture_args: dict, *extra: str) -> list[str]:
    small = ["--model.channels=4", "--model.layers=3", "--model.warmup_epochs=0", "--eval.channels=4", "--eval.layers=3"]
    return ["--task", task, f"--data.root={root}", *[f"--data.{k}={v}" for k, v in fixture_args.items()], *small, *extra]


@pytest.fixture(scope="module")
def fixture_roots(task_fixture) -> dict:
    return {task: task_fixture(task) for task in ("cifar100", "darcy", "ecg")}


@pytest.mark.parametrize("task, method", [("cifar100", "gaea"), ("darcy", "darts"), ("ecg", "darts2")])
def test_search_then_retrain_end_to_end(task, method, fixture_roots, train, tmp_path):
    root, options = fixture_roots[task]
    assert train(*run_args(task, root, options, "--method", method, "--search_epochs=2", "--eval_epochs=1")) == 0
    run_dir = tmp_path / "runs" / task / method / "seed0"
    results = read_results(run_dir)
    assert results["stage"] == "all" and results["split"] == "test" and results["genotype"] == json.loads((run_dir / "genotype.json").read_text())
    genotype = Genotype.from_dict(results["genotype"])
    assert results["params"] == count_parameters(build_network("darts", get_task(task), genotype=genotype, channels=4, layers=3))
    assert (run_dir / "genotype.png").stat().st_size > 0 and (run_dir / "genotype.svg").is_file()
    with open(run_dir / "search" / "metrics.csv") as f:
        header = f.readline()
    assert "arch/normal/node3_input4/sep_conv_3x3" in header and "train/arch_loss" in header
    search = json.loads((run_dir / "search.json").read_text())
    assert search["epochs"] == 2 and results["wall_time_s"] > search["wall_time_s"] > 0


def test_stages_separately_and_a_given_genotype(fixture_roots, train, tmp_path, capsys):
    root, options = fixture_roots["cifar100"]
    base = run_args("cifar100", root, options, "--method", "gaea", "--search_epochs=1", "--eval_epochs=1")
    assert train(*base, "--stage=search") == 0
    run_dir = tmp_path / "runs" / "cifar100" / "gaea" / "seed0"
    assert read_results(run_dir)["stage"] == "search" and not (run_dir / "eval").exists()
    assert train(*base, "--stage=eval") == 0  # retrains the architecture the search left in the run directory
    assert read_results(run_dir)["stage"] == "all"
    (tmp_path / "g.json").write_text(json.dumps(DARTS_V2))
    assert train(*base, "--stage=eval", f"--genotype={tmp_path / 'g.json'}", "--seed=5") == 0
    assert read_results(tmp_path / "runs" / "cifar100" / "gaea" / "seed5")["genotype"] == DARTS_V2
    capsys.readouterr()
    assert train(*base, "--stage=eval", "--seed=6") == 2
    assert "needs --genotype FILE or a finished search" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps({**DARTS_V2, "normal": [["conv_9x9", 0]]}))
    assert train(*base, "--stage=eval", f"--genotype={tmp_path / 'bad.json'}", "--seed=7") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "two inputs per node" in err[0]


def test_a_killed_search_resumes_to_the_same_architecture(fixture_roots, train, tmp_path):
    root, options = fixture_roots["cifar100"]
    base = run_args("cifar100", root, options, "--method", "gaea", "--search_epochs=3", "--stage=search")
    assert train(*base, output_dir=tmp_path / "straight") == 0
    kill = ["--trainer.callbacks+=helpers.KillAfterEpoch", "--trainer.callbacks.epoch=1"]
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(*base, *kill, output_dir=tmp_path / "killed")
    assert train(*base, "--ckpt_path=last", output_dir=tmp_path / "killed") == 0
    straight = read_results(tmp_path / "straight" / "cifar100" / "gaea" / "seed0")
    resumed = read_results(tmp_path / "killed" / "cifar100" / "gaea" / "seed0")
    assert resumed["genotype"] == straight["genotype"] and resumed["value"] == straight["value"]
    states = [torch.load(d / "cifar100/gaea/seed0/search/checkpoints/last.ckpt", weights_only=True)["state_dict"] for d in (tmp_path / "straight", tmp_path / "killed")]
    for key in ("net.alphas_normal", "net.betas_normal", "net.alphas_reduce", "net.betas_reduce"):
        assert torch.equal(states[0][key], states[1][key])


def test_ddp_search_and_retrain_agree_across_processes(fixture_roots, tmp_path):
    """Two gloo processes; second order, whose unrolled gradients bypass DDP's own gradient averaging."""
    import subprocess
    import sys

    from conftest import QUIET, REPO

    root, options = fixture_roots["cifar100"]
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]
    args = run_args("cifar100", root, options, "--method", "darts2", "--search_epochs=2", "--eval_epochs=1", *ddp, *QUIET)
    done = subprocess.run([sys.executable, str(REPO / "train.py"), *args, f"--output_dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "cifar100" / "darts2" / "seed0"
    search = json.loads((run_dir / "search.json").read_text())
    assert search["processes"] == 2  # derive() compared architecture parameters and genotypes of both processes
    assert read_results(run_dir)["genotype"] == search["genotype"]
