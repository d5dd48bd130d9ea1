"""Auto-DeepLab: path and cell decoding, shapes on the dense tasks, architectures as data, pipeline runs, refusal, DDP."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import read_results

from nb360.errors import UsageError
from nb360.models import build_network, count_parameters
from nb360.models.autodeeplab import Architecture, AutoDeepLabSearchNetwork, decode_cell, decode_path, transition_weights
from nb360.models.darts import PRIMITIVES
from nb360.tasks import get_task

DENSE = ("darcy", "psicov", "cosmic")
TINY = {"layers": 3, "filter_multiplier": 2, "block_multiplier": 2, "steps": 2}
REFERENCE_PATH = (1, 1, 1, 0, 1, 2, 3, 3, 3, 3, 3, 3)  # NB360's committed autodeeplab/archs/*/network_path.npy example


# ---------------------------------------------------------------- decoding
def _move_weights(betas: np.ndarray) -> np.ndarray:
    """Independent numpy move weights: softmax per source over its valid moves, x 2/3 at the two border levels."""
    layers, levels, _ = betas.shape
    out = np.zeros_like(betas)
    for layer, s in itertools.product(range(layers), range(levels)):
        valid = [r for r in range(3) if 0 <= s - 1 + r < levels]
        e = np.exp(betas[layer, s, valid] - betas[layer, s, valid].max())
        out[layer, s, valid] = e / e.sum() * (2 / 3 if len(valid) == 2 else 1.0)
    return out


def _brute_force_path(betas: np.ndarray) -> tuple[int, ...]:
    weights = _move_weights(betas)
    layers, levels, _ = betas.shape
    best, best_score = None, -1.0
    for path in itertools.product(range(levels), repeat=layers):
        previous, score = 0, 1.0
        for layer, level in enumerate(path):
            if abs(level - previous) > 1:
                score = -1.0
                break
            score *= weights[layer, previous, level - previous + 1]
            previous = level
        if score > best_score:
            best, best_score = path, score
    return best


@pytest.mark.parametrize("layers, levels", [(5, 3), (6, 4), (4, 2)])
def test_viterbi_path_matches_a_brute_force_over_all_paths(layers, levels):
    rng = np.random.default_rng(layers * 10 + levels)
    for _ in range(20):
        betas = rng.normal(scale=2.0, size=(layers, levels, 3))
        np.testing.assert_allclose(transition_weights(torch.from_numpy(betas)).numpy(), _move_weights(betas), rtol=1e-12)
        assert decode_path(torch.from_numpy(betas)) == _brute_force_path(betas)


def test_hand_set_betas_decode_to_the_reference_path_and_monotone_paths():
    moves = {-1: 0, 0: 1, 1: 2}  # level change -> move index (finer, same, coarser)
    betas = torch.zeros(12, 4, 3)
    previous = 0
    for layer, level in enumerate(REFERENCE_PATH):
        betas[layer, previous, moves[level - previous]] = 5.0
        previous = level
    assert decode_path(betas) == REFERENCE_PATH
    coarser = torch.zeros(6, 4, 3)
    coarser[:, :, 2] = 4.0
    coarser[:, 3, 1] = 4.0  # the coarsest level cannot go coarser: its "coarser" score is ignored
    assert decode_path(coarser) == (1, 2, 3, 3, 3, 3)
    finer = torch.zeros(6, 4, 3)
    finer[:, :, 0] = 4.0
    finer[:, 0, 1] = 4.0  # likewise the finest level cannot go finer
    assert decode_path(finer) == (0, 0, 0, 0, 0, 0)


def test_cell_decoding_on_hand_set_alphas():
    steps = 3  # edges: node 0 <- {0, 1}, node 1 <- {0, 1, 2}, node 2 <- {0, 1, 2, 3}
    alphas = torch.zeros(9, len(PRIMITIVES))
    alphas[:, 0] = 100.0  # "none" dominates everywhere and must never be chosen
    op = PRIMITIVES.index
    alphas[0, op("sep_conv_3x3")] = 3.0  # node 0: edges 0, 1 (inputs 0, 1)
    alphas[1, op("max_pool_3x3")] = 2.0
    alphas[2, op("dil_conv_5x5")] = 1.0  # node 1: edges 2, 3, 4 (inputs 0, 1, 2); input 0 is the weakest
    alphas[3, op("skip_connect")] = 4.0
    alphas[4, op("avg_pool_3x3")] = 3.0
    alphas[8, op("sep_conv_5x5")] = 5.0  # node 2: edges 5..8 (inputs 0..3); input 3 first, then input 1
    alphas[6, op("dil_conv_3x3")] = 0.5
    alphas[5, op("dil_conv_3x3")] = 0.4
    cell = decode_cell(alphas, steps)
    assert cell == (
        ("sep_conv_3x3", 0), ("max_pool_3x3", 1),
        ("skip_connect", 1), ("avg_pool_3x3", 2),
        ("sep_conv_5x5", 3), ("dil_conv_3x3", 1),
    )  # fmt: skip


# ---------------------------------------------------------------- shapes
@pytest.mark.parametrize("task", DENSE)
def test_every_level_and_every_operation_has_the_right_shape(task):
    spec = get_task(task)
    torch.manual_seed(0)
    net = AutoDeepLabSearchNetwork(spec.in_channels, spec.num_outputs, layers=4, filter_multiplier=2, block_multiplier=2, steps=2)
    side = 21 if task == "darcy" else 32  # Darcy's sides are padded to a power of two (85 -> 128 at full size)
    x = torch.randn(2, spec.in_channels, side, side)
    padded = 32
    seen = {}
    hooks = [cell.register_forward_hook(lambda m, i, o, key=key: seen.__setitem__(key, o)) for key, cell in net.cells.items()]
    out = net(x)
    for h in hooks:
        h.remove()
    assert tuple(out.shape) == (2, spec.num_outputs, side, side)
    assert set(seen) == {f"{layer}_{level}" for layer in range(4) for level in range(min(layer + 2, 4))}
    for key, outputs in seen.items():
        level = int(key.split("_")[1])
        for tensor in outputs.values():  # one output per incoming move, all at the level's resolution
            assert tuple(tensor.shape) == (2, 2 * 2 * 2**level, padded // 2 ** (level + 2), padded // 2 ** (level + 2))
    out.sum().backward()
    assert net.alphas.grad.abs().sum() > 0 and net.betas.grad.abs().sum() > 0
    # the derived network: a cell with every operation, along a path through all levels
    ops = [*PRIMITIVES[1:], "sep_conv_3x3"]
    arch = Architecture(tuple((op, [0, 1, 2, 1, 3, 0, 4, 2][i]) for i, op in enumerate(ops)), (1, 2, 3, 2, 1, 0))
    derived = build_network("autodeeplab", spec, arch=arch.to_dict(), filter_multiplier=2, block_multiplier=2, stem_channels=4)
    seen.clear()
    hooks = [cell.register_forward_hook(lambda m, i, o, k=k: seen.__setitem__(k, o)) for k, cell in enumerate(derived.cells)]
    assert tuple(derived(x).shape) == (2, spec.num_outputs, side, side)
    for k, level in enumerate(arch.path):
        assert tuple(seen[k].shape) == (2, 2 * 2 * 2**level, padded // 2 ** (level + 2), padded // 2 ** (level + 2))
    for h in hooks:
        h.remove()


def test_point_and_one_dimensional_tasks_have_no_autodeeplab_network():
    with pytest.raises(ValueError, match="2-D dense tasks"):
        build_network("autodeeplab", get_task("cifar100"), arch={"cell": [["skip_connect", 0], ["skip_connect", 1]], "path": [0]})


def test_architectures_round_trip_and_bad_ones_are_one_line_errors(tmp_path):
    arch = Architecture((("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_3x3", 2), ("max_pool_3x3", 0)), REFERENCE_PATH)
    arch.save(tmp_path / "a.json")
    assert Architecture.load(tmp_path / "a.json") == arch
    good = arch.to_dict()
    bad = [
        ({**good, "cell": good["cell"][:-1]}, "two inputs per node"),
        ({**good, "cell": [["none", 0], *good["cell"][1:]]}, "unknown operation 'none'"),
        ({**good, "cell": [["sep_conv_3x3", 2], *good["cell"][1:]]}, "node 0 takes input 2"),
        ({**good, "path": [2, 3]}, "layer 0 is at level 2"),
        ({**good, "path": [0, 1, 3]}, "layer 2 is at level 3 after level 1"),
        ({**good, "extra": 1}, "unknown field"),
        ({"cell": good["cell"]}, "expected an object"),
    ]
    for data, message in bad:
        with pytest.raises(UsageError, match=message) as err:
            Architecture.from_dict(data)
        assert "\n" not in str(err.value)


# ---------------------------------------------------------------- through train.py
def run_args(task: str, root: Path, fixture_args: dict, *extra: str) -> list[str]:
    # batches of 8: whole fixture splits in one batch, so no batch of one sample meets batch norm on a 1 x 1 map
    small = [f"--model.{k}={v}" for k, v in TINY.items()]
    small += [
        "--model.warmup_epochs=0",
        "--eval.filter_multiplier=2",
        "--eval.block_multiplier=2",
        "--eval.stem_channels=4",
        "--eval.batch_size=8",
    ]
    data = [f"--data.{k}={v}" for k, v in fixture_args.items()]
    return ["--task", task, "--method", "autodeeplab", f"--data.root={root}", *data, "--data.batch_size=8", *small, *extra]


@pytest.mark.parametrize("task", DENSE)
def test_search_then_retrain_end_to_end(task, task_fixture, train, tmp_path):
    root, options = task_fixture(task)
    assert train(*run_args(task, root, options, "--search_epochs=2", "--eval_epochs=1")) == 0
    run_dir = tmp_path / "runs" / task / "autodeeplab" / "seed0"
    results = read_results(run_dir)
    assert results["stage"] == "all" and results["split"] == "test"
    assert results["genotype"] == json.loads((run_dir / "genotype.json").read_text())
    arch = Architecture.from_dict(results["genotype"])
    assert len(arch.path) == TINY["layers"] and arch.steps == TINY["steps"]
    network = build_network("autodeeplab", get_task(task), arch=arch, filter_multiplier=2, block_multiplier=2, stem_channels=4)
    assert results["params"] == count_parameters(network)
    assert (run_dir / "genotype.png").stat().st_size > 0 and (run_dir / "genotype.svg").is_file()
    with open(run_dir / "search" / "metrics.csv") as f:
        header = f.readline()
    assert (
        "arch/path/layer0_level0/coarser" in header
        and "arch/cell/node1_input2/sep_conv_3x3" in header
        and "train/arch_loss" in header
    )
    search = json.loads((run_dir / "search.json").read_text())
    assert search["epochs"] == 2 and results["wall_time_s"] > search["wall_time_s"] > 0


def test_retraining_a_given_architecture(task_fixture, train, tmp_path):
    """``--stage eval --genotype FILE``: NB360's committed Darcy path with a hand-made 5-node cell, at tiny width."""
    root, options = task_fixture("darcy")
    cell = [["sep_conv_3x3", 1], ["skip_connect", 0], ["dil_conv_3x3", 2], ["sep_conv_5x5", 1], ["max_pool_3x3", 3],
            ["avg_pool_3x3", 2], ["dil_conv_5x5", 4], ["sep_conv_3x3", 0], ["skip_connect", 5], ["sep_conv_3x3", 1]]  # fmt: skip
    arch = {"cell": cell, "path": list(REFERENCE_PATH), "levels": 4}
    (tmp_path / "arch.json").write_text(json.dumps(arch))
    args = run_args("darcy", root, options, "--stage=eval", f"--genotype={tmp_path / 'arch.json'}", "--eval_epochs=1")
    assert train(*args) == 0
    results = read_results(tmp_path / "runs" / "darcy" / "autodeeplab" / "seed0")
    assert results["genotype"] == arch and results["stage"] == "all"


def test_point_tasks_are_refused_with_one_line(task_fixture, train, capsys):
    root, options = task_fixture("cifar100")
    assert train("--task", "cifar100", "--method", "autodeeplab", f"--data.root={root}", "--search_epochs=1") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "Auto-DeepLab searches dense (per-pixel) models; cifar100 is a point task (one prediction per input)" in err[0]


def test_ddp_search_gives_the_same_architecture_on_both_processes(task_fixture, tmp_path):
    import subprocess
    import sys

    from conftest import QUIET, REPO

    root, options = task_fixture("darcy")
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu", "--stage=search", "--search_epochs=2"]
    args = run_args("darcy", root, options, *ddp, *QUIET)
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args, f"--output_dir={tmp_path}"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    search = json.loads((tmp_path / "darcy" / "autodeeplab" / "seed0" / "search.json").read_text())
    assert search["processes"] == 2  # derive() compared the alphas, betas and architectures of both processes
    Architecture.from_dict(search["genotype"])
