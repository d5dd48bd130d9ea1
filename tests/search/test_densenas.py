"""DenseNAS: the space and its derivation rule, shapes for every task kind, FLOPs, the 80/20 split, train.py runs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from helpers import read_results
from torch import nn

from nb360.models import build_network, count_parameters
from nb360.models.densenas import Arch, Space, SuperNetwork, default_space, viterbi_path
from nb360.models.densenas.space import BasicBlock, random_choice
from nb360.search.bilevel import PairSampler
from nb360.tasks import get_task

TINY = Space(
    chs=(4, 6, 8, 8, 10), levels=(0, 1, 1, 1, 2), stages=(0, 1, 1, 1, 2, 3), layers=(0, 1, 2, 1, 1), last_dim=12, connect=3
)
TINY_DENSE = Space(chs=(4, 6, 8), levels=(0, 0, 0), stages=(0, 1, 1, 2), layers=(0, 1, 1), last_dim=8)
SPACE_ARG = json.dumps(TINY.to_dict())
DENSE_ARG = json.dumps(TINY_DENSE.to_dict())


def all_paths(space: Space) -> list[list[int]]:
    """Every chain of blocks from 0 to the last, by depth-first enumeration."""
    last = space.num_blocks - 1
    done, stack = [], [[0]]
    while stack:
        path = stack.pop()
        if path[-1] == last:
            done.append(path)
        stack.extend(path + [j] for j in space.outputs(path[-1]))
    return done


def supernet(task: str, space: Space) -> SuperNetwork:
    spec = get_task(task)
    return SuperNetwork(spec.dims, spec.kind, spec.input_shape[0], spec.num_outputs, space, spec.input_shape[1:])


# ---------------------------------------------------------------- the space and the derivation rule
def test_paths_follow_the_reference_connection_rule():
    assert TINY.outputs(0) == [1, 2, 3]  # same stage + 1, one halving
    assert TINY.outputs(1) == [2, 3, 4] and TINY.stride(1, 4) == 2 and TINY.stride(1, 2) == 1
    assert TINY.outputs(4) == [5] and TINY.inputs(5) == [4] and TINY.outputs(2) == [3, 4]  # stage 1 -> 3: too far
    assert not any(j - i > 1 for i in range(5) for j in TINY.outputs(i) if TINY.stages[j] - TINY.stages[i] > 1)
    big = default_space(get_task("cifar100"))
    assert big.num_blocks == 22 and big.outputs(0) == [1, 2, 3]  # 16 -> 8 only, stage 0 -> 1 only
    assert all(big.level(j) - big.level(i) in (0, 1) for i in range(21) for j in big.outputs(i))


@pytest.mark.parametrize("seed", range(5))
def test_viterbi_finds_the_most_probable_path_of_a_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    net = supernet("cifar100", TINY)
    with torch.no_grad():
        for beta in net.betas:
            beta.copy_(torch.randn(beta.shape, generator=g) * 2)
        for alpha in net.alphas:
            alpha.copy_(torch.randn(alpha.shape, generator=g))
    probs = {k: float(v.detach()) for k, v in net.path_probs().items()}

    def probability(path: list[int]) -> float:
        p = 1.0
        for i, j in itertools.pairwise(path):
            p *= probs[i, j]
        return p

    paths = all_paths(TINY)
    assert len(paths) > 5
    best = max(paths, key=probability)
    assert viterbi_path(TINY, probs) == best
    arch = net.derive()
    assert arch.path == best
    # each block on the path keeps the basic blocks whose alpha beats the skip connection's
    expected = []
    for i, j in itertools.pairwise(best[:-1]):
        alpha = net.stack_alpha(j)
        kept = 0 if alpha is None else int((alpha[:, 0] > alpha[:, 1]).sum())
        expected.append((TINY.chs[j], TINY.stride(i, j), kept))
    assert arch.blocks == expected and arch.stem == 4 and arch.last_dim == 12


def test_a_hand_set_architecture_is_derived():
    net = supernet("cifar100", TINY)
    with torch.no_grad():
        for beta in net.betas:
            beta.zero_()
        net.betas[0].copy_(torch.tensor([0.0, 3.0, 0.0]))  # 0 -> 2
        net.betas[2].copy_(torch.tensor([0.0, 5.0]))  # 2 -> 4
        net.stack_alpha(2).copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # block 2: keep one basic block of two
        net.stack_alpha(4).copy_(torch.tensor([[0.0, 1.0]]))  # block 4: skip its only layer
    arch = net.derive()
    assert arch.path == [0, 2, 4, 5]
    assert arch.blocks == [(8, 2, 1), (10, 2, 0)]
    assert Arch.from_dict(json.loads(json.dumps(arch.to_dict()))) == arch


# ---------------------------------------------------------------- shapes of every op and path
@pytest.mark.parametrize("task", ["cifar100", "darcy", "ecg", "satellite"])
def test_every_head_and_layer_has_the_shape_of_its_block(task):
    spec = get_task(task)
    space = TINY_DENSE if spec.kind == "dense" else TINY
    net = supernet(task, space)
    shape = [min(s, 40) for s in spec.input_shape[1:]]
    x = torch.randn(2, spec.input_shape[0], *shape)
    seen: dict[str, tuple[int, ...]] = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, k=k: seen.__setitem__(k, tuple(out.shape))) for k, m in net.heads.items()
    ]
    hooks += [
        layer.block.register_forward_hook(lambda mod, inp, out, k=f"{j}/{n}": seen.__setitem__(k, tuple(out.shape)))
        for j, stack in enumerate(net.stacks, start=1)
        for n, layer in enumerate(stack)
    ]
    out = net(x)
    for h in hooks:
        h.remove()
    for j in range(1, space.num_blocks):
        size = list(shape)
        for _ in range(0 if spec.kind == "dense" else 1 + space.level(j)):
            size = [-(-s // 2) for s in size]
        expect = (2, space.width(j), *size)
        for i in space.inputs(j):
            assert seen[f"{i}_{j}"] == expect, (i, j)
        for n in range(len(net.stacks[j - 1])):
            assert seen[f"{j}/{n}"] == expect
    expected = (2, spec.num_outputs) if spec.kind == "point" else (2, spec.num_outputs, *shape)
    assert tuple(out.shape) == expected
    arch = net.derive()
    assert tuple(build_network("densenas", spec, arch=arch.to_dict())(x).shape) == expected


def macs_by_hooks(net: nn.Module, x: torch.Tensor) -> float:
    """Convolution and 1x1 MACs per sample counted from the layers' actual outputs (an independent count)."""
    total = [0.0]

    def hook(mod, inp, out):
        if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            total[0] += mod.weight[0].numel() * out[0].numel()

    hooks = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    net(x)
    for h in hooks:
        h.remove()
    return total[0] / 1e6


@pytest.mark.parametrize("task", ["cifar100", "darcy", "ecg"])
def test_cost_of_a_one_hot_supernet_is_the_derived_networks_measured_cost(task):
    spec = get_task(task)
    space = TINY_DENSE if spec.kind == "dense" else TINY
    net = supernet(task, space)
    g = torch.Generator().manual_seed(1)
    path, ops = random_choice(space, g)
    with torch.no_grad():
        for i, beta in enumerate(net.betas):
            beta.fill_(-1e4)
            beta[0] = 0.0
            if i in path[:-1]:
                beta.fill_(-1e4)
                beta[space.outputs(i).index(path[path.index(i) + 1])] = 0.0
        for j, k in net.alpha_index.items():
            alpha = net.alphas[k]
            for n, o in enumerate(ops.get(j, [0] * len(alpha))):
                alpha[n] = torch.tensor([1e4, -1e4] if o == 0 else [-1e4, 1e4])
    arch = net.derive()
    assert arch.path == path
    x = torch.randn(1, spec.input_shape[0], *spec.input_shape[1:])
    derived = build_network("densenas", spec, arch=arch.to_dict()).eval()
    measured = macs_by_hooks(derived, x)
    stride = 1 if spec.kind == "dense" else 2
    assert arch.macs(spec.dims, spec.input_shape[0], spec.input_shape[1:], stride, spec.num_outputs) == pytest.approx(
        measured, rel=1e-6
    )
    assert float(net.expected_macs()) == pytest.approx(measured, rel=1e-4)
    # the cost is differentiable in both kinds of architecture parameters
    net2 = supernet(task, space)
    net2.expected_macs().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in [*net2.betas[:1], *net2.alphas])


def test_basic_block_shortcut_only_when_the_shape_changes():
    assert isinstance(BasicBlock(2, 8, 8).shortcut, nn.Identity)
    assert not isinstance(BasicBlock(1, 8, 8, stride=2).shortcut, nn.Identity)


def test_the_eighty_twenty_split_pairs_disjoint_parts():
    sampler = PairSampler(100, seed=3, arch_fraction=0.2)
    sampler.set_epoch(1)
    pairs = list(sampler)
    assert len(pairs) == 20 and len(sampler) == 20
    weights, arch = zip(*pairs)
    assert all(w < 80 for w in weights) and sorted(arch) == list(range(80, 100)) and len(set(weights)) == 20
    sampler.set_epoch(2)
    assert list(sampler) != pairs
    half = list(PairSampler(10, seed=3))
    assert len(half) == 5 and all(w < 5 <= a for w, a in half)


# ---------------------------------------------------------------- through train.py
@pytest.fixture(scope="module")
def fixture_roots(task_fixture) -> dict:
    return {task: task_fixture(task) for task in ("cifar100", "darcy", "ecg")}


def run_args(task: str, root: Path, options: dict, *extra: str) -> list[str]:
    space = DENSE_ARG if get_task(task).kind == "dense" else SPACE_ARG
    return [
        "--task",
        task,
        f"--data.root={root}",
        *[f"--data.{k}={v}" for k, v in options.items()],
        f"--model.space={space}",
        *extra,
    ]


@pytest.mark.parametrize("task", ["cifar100", "darcy", "ecg"])
def test_search_then_retrain_end_to_end(task, fixture_roots, train, tmp_path):
    root, options = fixture_roots[task]
    args = run_args(
        task, root, options, "--method", "densenas", "--model.warmup_epochs=1", "--search_epochs=2", "--eval_epochs=1"
    )
    assert train(*args) == 0
    run_dir = tmp_path / "runs" / task / "densenas" / "seed0"
    results = read_results(run_dir)
    assert results["stage"] == "all" and results["split"] == "test"
    assert results["genotype"] == json.loads((run_dir / "genotype.json").read_text())
    arch = Arch.from_dict(results["genotype"])
    assert arch.path[0] == 0 and arch.path[-1] == (TINY_DENSE if task == "darcy" else TINY).num_blocks - 1
    assert results["params"] == count_parameters(build_network("densenas", get_task(task), arch=results["genotype"]))
    assert (run_dir / "genotype.png").stat().st_size > 0 and (run_dir / "genotype.svg").is_file()
    header = (run_dir / "search" / "metrics.csv").read_text().splitlines()[0]
    assert "arch/expected_mmacs" in header and "train/arch_loss" in header and "arch/path_0_1" in header


def test_random_search_retrains_the_best_by_validation_metric(fixture_roots, train, tmp_path, monkeypatch):
    import nb360.search.densenas as method

    scores = {}

    def fake_trial(ctx, module, number, epochs):
        arch = Arch.from_dict(module.hparams.network_options["arch"])
        scores[number] = (float(sum(c * (n + 1) for c, _, n in arch.blocks) % 7), arch.to_dict())
        return scores[number][0]  # cifar100 scores error: lower is better

    monkeypatch.setattr(method, "train_trial", fake_trial)
    root, options = fixture_roots["cifar100"]
    args = ["--task", "cifar100", f"--data.root={root}", *[f"--data.{k}={v}" for k, v in options.items()]]
    assert train(*args, "--method", "densenas_random", f"--search.space={SPACE_ARG}", "--search.trials=6", "--eval_epochs=1") == 0
    run_dir = tmp_path / "runs" / "cifar100" / "densenas_random" / "seed0"
    best = min(scores.values(), key=lambda s: s[0])
    assert read_results(run_dir)["genotype"] == best[1]
    search = json.loads((run_dir / "search.json").read_text())
    assert search["value"] == best[0] and search["trials"] == 6
    assert len((run_dir / "trials.jsonl").read_text().splitlines()) == 6


def test_ddp_search_derives_the_same_architecture_on_both_processes(fixture_roots, tmp_path):
    import subprocess
    import sys

    from conftest import QUIET, REPO

    root, options = fixture_roots["cifar100"]
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]
    args = run_args(
        "cifar100", root, options, "--method", "densenas", "--model.warmup_epochs=0", "--search_epochs=2", "--stage=search"
    )
    command = [sys.executable, str(REPO / "train.py"), *args, *ddp, *QUIET, f"--output_dir={tmp_path}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    search = json.loads((tmp_path / "cifar100" / "densenas" / "seed0" / "search.json").read_text())
    assert search["processes"] == 2  # derive() compared the architecture parameters and the paths of both processes
