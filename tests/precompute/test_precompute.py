"""Precompute generation: sharding, resumable runs, what a run records, and the merged store answering queries."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import KillAfterEpoch
from lightning.pytorch.callbacks import Callback

from nb360.errors import UsageError
from nb360.models.nb201.costs import arch_costs
from nb360.precompute.__main__ import main
from nb360.precompute.protocol import Protocol, parse_shard
from nb360.precompute.worker import Layout, Worker, claim_directory, select_architectures
from nb360.spaces.nb201 import TOPOLOGY
from nb360.tabular import create
from nb360.tasks import get_task

N = 16  # NinaPro fixture windows per part


@pytest.fixture(scope="module")
def ninapro_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from nb360.datamodules.ninapro import NinaProDataModule

    root = tmp_path_factory.mktemp("ninapro")
    NinaProDataModule.write_fixture(root, N, seed=1)
    return root


def protocol(epochs: int = 1, **overrides) -> Protocol:
    return Protocol(**{"space": "nb201", "task": "ninapro", "epochs": epochs, "hp": str(epochs), "batch_size": 8, **overrides})


def worker(tmp: Path, root: Path, proto: Protocol) -> tuple[Worker, Layout]:
    layout = Layout(tmp)
    claim_directory(layout, proto)
    return Worker(proto, layout, accelerator="cpu", progress=False, root=str(root)), layout


def test_shards_partition_the_selection() -> None:
    chosen = list(range(5, 40, 3))
    shards = [select_architectures(15_625, "5:40:3", (i, 4)) for i in range(4)]
    assert sorted(sum(shards, [])) == chosen
    assert shards[1] == chosen[1::4]  # strided, so each shard mixes cheap and costly cells
    assert select_architectures(10, None, (0, 1)) == list(range(10))
    assert select_architectures(10, "7,2", (0, 1)) == [7, 2]
    for bad in ("x:y", "3,a", "99999"):
        with pytest.raises(UsageError):
            select_architectures(15_625, bad, (0, 1))
    for bad in ("2/2", "1", "-1/3", "a/b"):
        with pytest.raises(UsageError, match="--shard"):
            parse_shard(bad)


def test_a_directory_keeps_its_protocol(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    claim_directory(layout, protocol(epochs=12))
    claim_directory(layout, protocol(epochs=12))  # the same protocol: another worker joins
    with pytest.raises(UsageError, match="epochs"):
        claim_directory(layout, protocol(epochs=200, hp="12"))


class Capture(Callback):
    def on_train_end(self, trainer, pl_module) -> None:
        self.module = pl_module


def test_recorded_test_error_matches_an_independent_evaluation(tmp_path: Path, ninapro_root: Path) -> None:
    w, layout = worker(tmp_path, ninapro_root, protocol(epochs=1))
    capture = Capture()
    w.callbacks = [capture]
    assert w.run([123]) == {"trained": 1, "finished_before": 0, "claimed_elsewhere": 0}
    result = json.loads(layout.result(123, 777).read_text())
    # the reference protocol by hand: windows (N, 52, 16) -> (N, 1, 16, 52), argmax vs labels
    x = torch.from_numpy(np.load(ninapro_root / "ninapro_test.npy")).transpose(1, 2).unsqueeze(1)
    y = torch.from_numpy(np.load(ninapro_root / "label_test.npy"))
    net = capture.module.net.eval()
    with torch.no_grad():
        logits = net(x)
    assert result["evals"]["ori-test"]["metric"] == [pytest.approx(100.0 * (logits.argmax(1) != y).float().mean().item())]
    assert result["evals"]["ori-test"]["loss"] == [pytest.approx(torch.nn.functional.cross_entropy(logits, y).item(), rel=1e-5)]
    assert result["arch"] == TOPOLOGY.arch(123) and result["seed"] == 777
    params, flops = arch_costs(TOPOLOGY.arch(123), get_task("ninapro"))
    assert (result["params"], result["flops"]) == (params, flops)
    assert result["latency"] and all(t > 0 for t in result["latency"])
    assert result["train"]["time"][0] > 0 and result["evals"]["ori-test"]["time"][0] > 0
    assert not layout.checkpoint(123, 777).exists()  # the run's checkpoint goes once its result is written


def test_a_killed_run_resumes_to_the_same_numbers(tmp_path: Path, ninapro_root: Path) -> None:
    w, layout = worker(tmp_path / "killed", ninapro_root, protocol(epochs=2))
    w.callbacks = [KillAfterEpoch(1)]
    with pytest.raises(RuntimeError, match="simulated kill"):
        w.run([9])
    assert not layout.result(9, 777).exists() and layout.checkpoint(9, 777).exists()
    w.callbacks = []
    assert w.run([9])["trained"] == 1
    assert w.run([9])["finished_before"] == 1  # idempotent: a finished run is never trained again
    resumed = json.loads(layout.result(9, 777).read_text())

    clean, clean_layout = worker(tmp_path / "clean", ninapro_root, protocol(epochs=2))
    clean.run([9])
    straight = json.loads(clean_layout.result(9, 777).read_text())
    for part in ("train", "evals"):
        a = resumed[part] if part == "train" else resumed[part]["ori-test"]
        b = straight[part] if part == "train" else straight[part]["ori-test"]
        assert a["loss"] == pytest.approx(b["loss"]) and a["metric"] == b["metric"]


def test_holdout_protocol_scores_validation_and_test_separately(tmp_path: Path, ninapro_root: Path) -> None:
    w, layout = worker(tmp_path, ninapro_root, protocol(eval_protocol="holdout"))
    w.run([0])
    evals = json.loads(layout.result(0, 777).read_text())["evals"]
    assert list(evals) == ["x-valid", "x-test"]
    assert evals["x-valid"]["loss"] != evals["x-test"]["loss"]  # different data: never aliased


def test_slice_end_to_end_two_shards_merge_and_query(tmp_path: Path, ninapro_root: Path, capsys) -> None:
    """The CI slice: 20 architectures x 1 epoch in two shards, merged into a store that answers queries."""
    out, store = tmp_path / "out", tmp_path / "ninapro.nb360"
    common = ["run", "--space", "nb201", "--task", "ninapro", "--data.root", str(ninapro_root), "--epochs", "1"]
    common += ["--archs", "0:20", "--out", str(out), "--batch_size", "8", "--accelerator", "cpu", "--quiet"]
    assert main([*common, "--shard", "0/2"]) == 0
    assert main(["status", "--out", str(out)]) == 0
    assert "10/15625 runs finished" in capsys.readouterr().out
    assert main([*common, "--shard", "1/2"]) == 0
    assert main(["merge", "--out", str(out), "--store", str(store)]) == 0

    bench = create(store)
    results = {i: json.loads(Layout(out).result(i, 777).read_text()) for i in range(20)}
    errors = bench.scores("ninapro", "1", "ori-test")
    assert bench.score_info("ninapro")["lower_is_better"]
    np.testing.assert_array_equal(errors[:20], [results[i]["evals"]["ori-test"]["metric"][0] for i in range(20)])
    assert np.isnan(errors[20:]).all()
    info = bench.get_more_info(7, "ninapro", "1")
    assert info["ori-test-accuracy"] == pytest.approx(100.0 - results[7]["evals"]["ori-test"]["metric"][0])
    assert info["train-loss"] == pytest.approx(results[7]["train"]["loss"][0])
    best = min(range(20), key=lambda i: (errors[i], i))
    assert bench.find_best("ninapro", "ori-test", "1") == (best, errors[best])
    assert bench.get_net_config(3, "ninapro")["arch_str"] == TOPOLOGY.arch(3)
    assert bench.get_cost_info(5, "ninapro", "1")["params"] == pytest.approx(results[5]["params"])

    # merging again after more runs replaces the store; a non-store path is refused
    assert main(["merge", "--out", str(out), "--store", str(tmp_path)]) == 2
    assert "not a tabular store" in capsys.readouterr().err


def test_dense_task_records_relative_l2(tmp_path: Path, darcy_root: Path) -> None:
    from nb360.datamodules.darcy import DarcyDataModule

    options = {k: v for k, v in DarcyDataModule.fixture_args(8).items()}
    proto = Protocol(space="nb201", task="darcy", epochs=1, hp="1", batch_size=4, data_options=options)
    w, layout = worker(tmp_path / "out", darcy_root, proto)
    w.run([0, 1])
    assert main(["merge", "--out", str(layout.root), "--store", str(tmp_path / "darcy.nb360")]) == 0
    bench = create(tmp_path / "darcy.nb360")
    assert bench.score_info("darcy")["name"] == "relative_l2" and bench.score_info("darcy")["lower_is_better"]
    info = bench.get_more_info(1, "darcy", "1")
    assert info["ori-test-accuracy"] == pytest.approx(1.0 - info["ori-test-metric"])  # NB360's Darcy "accuracy"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--space", "nb999"], "unknown search space"),
        (["--space", "nb201", "--shard", "4/4"], "--shard"),
        (["--space", "nb201", "--task", "nope"], "unknown task"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str, capsys) -> None:
    base = {"--space": "nb201", "--task": "ninapro", "--epochs": "1", "--out": str(tmp_path)}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    assert main(["run", *[x for kv in base.items() for x in kv]]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
