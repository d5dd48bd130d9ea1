"""AMBER: the 1-D model space, the controller and its REINFORCE update, the search through train.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import read_results

from nb360.errors import UsageError
from nb360.models import build_network, count_parameters
from nb360.models.amber import OPS, AmberArch, AmberNet, build_op, draw_arch, expansion_layers, random_arch
from nb360.search.amber import AmberController
from nb360.search.reinforce import Reinforce
from nb360.tasks import get_task

TASKS = ("ecg", "satellite", "deepsea")
SMALL = {"filters": 8, "fc_units": 16}


pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny steps: one intra-op thread


# ---------------------------------------------------------------- the space
def test_expansion_points_and_filters_follow_the_reference():
    net = AmberNet(1, 1000, 4)
    assert expansion_layers(12) == (2, 5, 8)
    assert net.filters == [32] * 3 + [64] * 3 + [128] * 3 + [256] * 3
    assert net.fc.in_features == 256 * 16 and net.fc.out_features == 925  # 1000 -> 250 -> 63 -> 16


@pytest.mark.parametrize("task", TASKS)
def test_every_op_and_the_child_network_keep_the_shapes_of_each_task(task):
    spec = get_task(task)
    length = spec.input_shape[-1]
    for channels in (8, 16):
        x = torch.randn(2, channels, length)
        for op in OPS:
            assert build_op(op, channels)(x).shape == x.shape, op
    x = torch.randn(2, *spec.input_shape)
    supernet = AmberNet(spec.in_channels, length, spec.num_outputs, **SMALL)
    generator = torch.Generator().manual_seed(0)
    for k in range(len(OPS)):
        arch = random_arch(generator=generator)
        arch["ops"] = [OPS[(k + j) % len(OPS)] for j in range(12)]  # every op in every block
        assert supernet(x, arch).shape == (2, spec.num_outputs)
        child = build_network("amber", spec, arch=arch, **SMALL)
        assert child(x).shape == (2, spec.num_outputs)
        assert count_parameters(child) < count_parameters(supernet)


def test_the_child_uses_the_supernet_computation_of_its_architecture():
    torch.manual_seed(0)
    arch = random_arch(generator=torch.Generator().manual_seed(3))
    supernet, child = AmberNet(1, 46, 24, **SMALL).eval(), AmberNet(1, 46, 24, arch=arch, **SMALL).eval()
    child.load_state_dict({k: v for k, v in supernet.state_dict().items() if k in child.state_dict()})
    x = torch.randn(3, 1, 46)
    torch.testing.assert_close(child(x), supernet(x, arch))


def test_architectures_round_trip_draw_and_bad_ones_are_one_line_errors(tmp_path):
    arch = random_arch(generator=torch.Generator().manual_seed(1))
    arch.save(tmp_path / "a.json")
    assert AmberArch.load(tmp_path / "a.json") == arch
    draw_arch(arch, tmp_path / "a")
    assert (tmp_path / "a.png").stat().st_size > 0 and (tmp_path / "a.svg").is_file()
    bad = [
        ({"ops": arch["ops"]}, "must be an object"),
        ({**arch, "ops": ["conv_k9"] + arch["ops"][1:]}, "unknown AMBER operation 'conv_k9'"),
        ({**arch, "skips": arch["skips"][:-1] + [[0]]}, "j flags"),
        ({**arch, "skips": [[], [2]] + arch["skips"][2:]}, "0 or 1"),
    ]
    for data, message in bad:
        with pytest.raises(UsageError, match=message) as err:
            AmberArch.from_dict(data)
        assert "\n" not in str(err.value)
    with pytest.raises(UsageError, match="network 'amber' is a 1-D classifier"):
        build_network("amber", get_task("cifar100"), arch=arch)


# ---------------------------------------------------------------- the controller
def test_controller_samples_valid_architectures_reproducibly():
    controller = AmberController()
    first = [controller(torch.Generator().manual_seed(s))[3] for s in range(5)]
    again = [controller(torch.Generator().manual_seed(s))[3] for s in range(5)]
    assert first == again and len({json.dumps(a) for a in first}) > 1
    log_prob, entropy, penalty, arch = controller(torch.Generator().manual_seed(0))
    assert AmberArch.from_dict(arch) == arch and len(arch["ops"]) == 12
    assert log_prob.item() < 0 and entropy.item() > 0 and penalty.item() >= 0
    grads = torch.autograd.grad(log_prob + penalty, list(controller.parameters()), allow_unused=True)
    assert sum(g is not None and g.abs().sum() > 0 for g in grads) >= 6


def test_reinforce_teaches_the_controller_the_rewarded_choice():
    """Reward 1 for ``max_pool`` in layer 0 (a priori 1/7): within 300 samples the controller prefers it."""
    torch.manual_seed(0)
    controller = AmberController(layers=3)
    reinforce = Reinforce(baseline_decay=0.9, aggregate=5)
    optimizer = torch.optim.Adam(controller.parameters(), lr=0.02)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        log_prob, _, penalty, arch = controller(generator)
        advantage, _ = reinforce.advantage(float(arch["ops"][0] == "max_pool"))
        if reinforce.accumulate(-log_prob * advantage, list(controller.parameters())):
            optimizer.step()
            optimizer.zero_grad()
    with torch.no_grad():
        picks = [controller(generator)[3]["ops"][0] for _ in range(100)]
    assert picks.count("max_pool") > 60
    assert int(reinforce.samples) == 300 and 0 < float(reinforce.baseline) <= 1


# ---------------------------------------------------------------- through train.py
def run_args(task: str, root: Path, options: dict, *extra: str) -> list[str]:
    small = ["--model.filters=8", "--model.fc_units=16", "--model.warmup_epochs=0", "--model.arch_every=1"]
    small += ["--model.controller_batch=2", "--model.candidates=3"]
    if task == "ecg":
        small.append(f"--model.length={options['window_size']}")
    data = [f"--data.{k}={v}" for k, v in options.items()]
    return ["--task", task, "--method", "amber", f"--data.root={root}", *data, *small, *extra]


@pytest.mark.parametrize("task", ["ecg", "satellite"])
def test_search_then_retrain_end_to_end(task, task_fixture, train, tmp_path):
    root, options = task_fixture(task)
    assert train(*run_args(task, root, options, "--search_epochs=2", "--eval_epochs=1")) == 0
    run_dir = tmp_path / "runs" / task / "amber" / "seed0"
    results = read_results(run_dir)
    arch = AmberArch.from_dict(results["genotype"])
    assert results["stage"] == "all" and results["split"] == "test"
    assert results["genotype"] == json.loads((run_dir / "genotype.json").read_text())
    length = options.get("window_size")
    assert results["params"] == count_parameters(build_network("amber", get_task(task), arch=arch, length=length, **SMALL))
    assert (run_dir / "genotype.png").stat().st_size > 0 and (run_dir / "genotype.svg").is_file()
    with open(run_dir / "search" / "metrics.csv") as f:
        header = f.readline()
    assert "train/arch_reward" in header and "arch/baseline" in header
    search = json.loads((run_dir / "search.json").read_text())
    assert search["epochs"] == 2 and search["genotype"] == results["genotype"]
    state = torch.load(run_dir / "search" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert int(state["reinforce.samples"]) > 0 and "net.controller.lstm.weight_ih_l0" in state


def test_amber_on_a_2d_task_is_a_one_line_refusal(train, capsys):
    capsys.readouterr()
    assert train("--task", "cifar100", "--method", "amber") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "method 'amber' does not apply to task 'cifar100': AMBER searches 1-D models; cifar100 is a 2-D point task" in err[0]


def test_ddp_search_gives_the_same_architecture_on_both_processes(task_fixture, tmp_path):
    import subprocess
    import sys

    from conftest import QUIET, REPO

    root, options = task_fixture("ecg")
    # each step trains one sampled child: the other operations' weights get no gradient
    ddp = ["--trainer.strategy=ddp_find_unused_parameters_true", "--trainer.devices=2", "--trainer.accelerator=cpu"]
    args = run_args("ecg", root, options, "--search_epochs=2", "--eval_epochs=1", *ddp, *QUIET)
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args, f"--output_dir={tmp_path}"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "ecg" / "amber" / "seed0"
    search = json.loads((run_dir / "search.json").read_text())
    assert search["processes"] == 2  # derive() compared the controllers and the picks of both processes
    assert read_results(run_dir)["genotype"] == search["genotype"]


def test_a_killed_search_resumes_to_the_same_architecture(task_fixture, train, tmp_path):
    root, options = task_fixture("satellite")
    base = run_args("satellite", root, options, "--search_epochs=3", "--stage=search")
    assert train(*base, output_dir=tmp_path / "straight") == 0
    kill = ["--trainer.callbacks+=helpers.KillAfterEpoch", "--trainer.callbacks.epoch=1"]
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(*base, *kill, output_dir=tmp_path / "killed")
    assert train(*base, "--ckpt_path=last", output_dir=tmp_path / "killed") == 0
    straight, resumed = (read_results(tmp_path / d / "satellite" / "amber" / "seed0") for d in ("straight", "killed"))
    assert resumed["genotype"] == straight["genotype"] and resumed["value"] == straight["value"]
