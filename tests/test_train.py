"""``train.py`` end to end on a tiny Darcy Flow fixture: outputs, overrides, resume, seeds, W&B, bad input."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import QUIET, REPO, darcy_args
from helpers import darcy_reference, pointwise_encode, read_results
from nb360.methods import METHODS, Method, fit_and_test, register_method
from nb360.models import build_network
from nb360.search.train import TrainModule
from nb360.tasks import get_task


def rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def train_losses(run_dir: Path) -> list[float]:
    return [float(r["train/loss"]) for r in rows(run_dir) if r.get("train/loss")]


def test_run_directory_and_results(train, tmp_path, darcy_root):
    assert train(*darcy_args(darcy_root), "--trainer.max_epochs=2") == 0
    run_dir = tmp_path / "runs" / "darcy" / "wrn" / "seed0"
    results = read_results(run_dir)
    assert {k: results[k] for k in ("task", "method", "seed", "metric", "lower_is_better", "split", "params", "epochs")} == {
        "task": "darcy", "method": "wrn", "seed": 0, "metric": "relative_l2", "lower_is_better": True,
        "split": "test", "params": 2_746_577, "epochs": 2,
    }  # fmt: skip
    assert results["wall_time_s"] > 0 and {"nb360", "torch", "lightning"} <= set(results["versions"])
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["task"] == "darcy" and config["model"]["lr"] == 0.001 and config["data"]["batch_size"] == 4
    assert len(train_losses(run_dir)) == 2

    # recompute the test metric from the saved weights with an independent data pipeline
    assert results["value"] == pytest.approx(darcy_test_metric(run_dir / "checkpoints" / "last.ckpt", darcy_root, 8), rel=1e-4)


def darcy_test_metric(checkpoint: Path, root: Path, n_test: int) -> float:
    """Relative l2 of a checkpoint's network on the fixture's test set, computed with numpy from the raw files."""
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")["state_dict"]
    net = build_network("wrn", get_task("darcy"))
    net.load_state_dict({k[len("net."):]: v for k, v in state.items() if k.startswith("net.")})
    a_train, u_train = darcy_reference(root, 1, 8)
    a_test, u_test = darcy_reference(root, 2, n_test)
    grid = np.linspace(0, 1, 5, dtype=np.float32)
    n = len(a_test)
    x = np.stack([pointwise_encode(a_test, a_train), np.broadcast_to(grid, (n, 5, 5)), np.broadcast_to(grid[:, None], (n, 5, 5))], 1)
    with torch.no_grad():
        out = net.eval()(torch.from_numpy(x.astype(np.float32)))[:, 0].double().numpy()
    pred = out * (u_train.std(0, ddof=1) + 1e-5) + u_train.mean(0)
    return float(np.mean([np.linalg.norm(pred[i] - u_test[i]) / np.linalg.norm(u_test[i]) for i in range(n)]))


def test_search_split_scores_the_best_checkpoint_on_validation(train, tmp_path, darcy_root):
    args = [*darcy_args(darcy_root), "--data.split=search", "--trainer.max_epochs=3", "--trainer.check_val_every_n_epoch=1"]
    assert train(*args) == 0
    run_dir = tmp_path / "runs" / "darcy" / "wrn" / "seed0"
    results = read_results(run_dir)
    val = [float(r["val/relative_l2"]) for r in rows(run_dir) if r.get("val/relative_l2")]
    assert len(val) == 3 and results["split"] == "val"
    assert results["value"] == pytest.approx(min(val), rel=1e-6)
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()


def test_overrides_config_files_and_precedence(train, tmp_path, darcy_root):
    config = tmp_path / "mine.yaml"
    config.write_text("model:\n  lr: 0.02\n  momentum: 0.0\ntrainer:\n  max_epochs: 1\n")
    assert train(*darcy_args(darcy_root), f"--config={config}", "--model.momentum=0.3", "--model.schedule=constant") == 0
    run_dir = tmp_path / "runs" / "darcy" / "wrn" / "seed0"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["model"]["lr"] == 0.02 and saved["model"]["momentum"] == 0.3 and saved["trainer"]["max_epochs"] == 1
    lr = [float(r["lr-SGD"]) for r in rows(run_dir) if r.get("lr-SGD")]
    assert lr == [0.02]


def test_print_config_shows_the_task_reference_defaults(train, darcy_root, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train("--task", "pde", "--print_config")
    assert exit_info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["lr"] == 0.001 and printed["data"]["batch_size"] == 8 and printed["trainer"]["max_epochs"] == 200
    assert printed["data"]["sub"] == 5 and printed["trainer"]["check_val_every_n_epoch"] == 5


def test_resume_continues_exactly_where_the_run_stopped(train, tmp_path, darcy_root):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert train(*darcy_args(darcy_root), "--trainer.max_epochs=4", output_dir=straight) == 0
    kill = ["--trainer.callbacks+=helpers.KillAfterEpoch", "--trainer.callbacks.epoch=2"]
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(*darcy_args(darcy_root), "--trainer.max_epochs=4", *kill, output_dir=interrupted)
    run_dir = interrupted / "darcy" / "wrn" / "seed0"
    assert not (run_dir / "results.json").exists()
    assert train(*darcy_args(darcy_root), "--trainer.max_epochs=4", output_dir=interrupted) == 2  # refuses to start over
    assert train(*darcy_args(darcy_root), "--trainer.max_epochs=4", "--ckpt_path=last", output_dir=interrupted) == 0
    reference = straight / "darcy" / "wrn" / "seed0"
    assert train_losses(run_dir) == train_losses(reference)  # the CSV is continued, not replaced, with the same numbers
    assert read_results(run_dir)["value"] == read_results(reference)["value"]


def test_same_seed_same_numbers_other_seed_other_numbers(train, tmp_path, darcy_root):
    values = []
    for out, seed, flag in ((tmp_path / "a", 3, "--seed"), (tmp_path / "b", 3, "--seed_everything"), (tmp_path / "c", 4, "--seed")):
        assert train(*darcy_args(darcy_root), "--trainer.max_epochs=2", f"{flag}={seed}", output_dir=out) == 0
        run_dir = out / "darcy" / "wrn" / f"seed{seed}"
        values.append((read_results(run_dir)["value"], train_losses(run_dir)))
    assert values[0] == values[1]
    assert values[0][0] != values[2][0]


def test_wandb_logging_offline(train, tmp_path, darcy_root):
    assert train(*darcy_args(darcy_root), "--trainer.max_epochs=1", "--logger=wandb") == 0
    run_dir = tmp_path / "runs" / "darcy" / "wrn" / "seed0"
    (log,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    content = log.read_bytes()
    for needle in (b"test/relative_l2", b"train/loss", b"darcy-wrn-seed0", b'"lr":0.001', b"result/method", b"result/lower_is_better"):
        assert needle in content
    assert read_results(run_dir)["value"] > 0


def test_mixed_precision_falls_back_to_fp32_on_cpu(train, tmp_path, darcy_root, capsys):
    assert train(*darcy_args(darcy_root), "--trainer.max_epochs=1", "--trainer.precision=16-mixed") == 0
    assert "training in fp32 instead of 16-mixed" in capsys.readouterr().err
    saved = yaml.safe_load((tmp_path / "runs" / "darcy" / "wrn" / "seed0" / "config.yaml").read_text())
    assert saved["trainer"]["precision"] == "32-true"


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["--task", "imagenet"], 2, ["unknown task 'imagenet'", "cifar100", "deepsea"]),
        (["--task", "darcy", "--method", "gdas9"], 2, ["unknown method 'gdas9'", "wrn"]),
        (["--task", "darcy", "--model.lr", "fast"], 2, ["model.lr", "fast"]),
        (["--task", "ninapro", "--method", "tenas", "--model.space", "foo"], 2, ["model.space", "'darts', 'nb201'", "foo"]),
        (["--task", "darcy", "--trainer.max_epochs=1", "--data.source=local", "--data.root={empty}"], 1, ["missing", "piececonst_r421_N1024_smooth1.mat", "download"]),
    ],
)
def test_bad_input_ends_in_one_line(train, tmp_path, capsys, args, code, words):
    args = [a.replace("{empty}", str(tmp_path / "empty")) for a in args]
    assert train(*args) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nb360: error:")
    for word in words:
        assert word in err[0]
    assert not list((tmp_path / "runs").rglob("results.json")) if (tmp_path / "runs").exists() else True


def test_a_task_without_a_loader_is_refused(train, capsys):
    from dataclasses import replace

    from nb360.tasks import register_task

    register_task(replace(get_task("ecg"), name="ecg_raw", title="ECG without loader", aliases=(), datamodule=None))
    assert train("--task", "ecg_raw") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'ecg_raw'" in err[0] and "no data loader" in err[0] and "cifar100" in err[0]


def test_a_method_that_does_not_apply_is_refused_with_the_reason(train, capsys):
    register_method(
        Method(
            name="only1d",
            description="test method",
            module=TrainModule,
            run=fit_and_test,
            applies_to=lambda spec: None if spec.dims == 1 else "it needs 1-D inputs",
        )
    )
    try:
        assert train("--task", "darcy", "--method", "only1d") == 2
    finally:
        METHODS.unregister("only1d")
    err = capsys.readouterr().err.strip()
    usable = [m.name for m in METHODS.values() if m.applies_to(get_task("darcy")) is None]
    assert {"wrn", "gaea", "nb201_gdas", "nats_tas"} <= set(usable) and "only1d" not in usable
    assert err == f"nb360: error: method 'only1d' does not apply to task 'darcy': it needs 1-D inputs; methods for darcy: {', '.join(usable)}"


def test_corrupt_data_file_is_reported_and_nothing_is_written(train, tmp_path, darcy_root, capsys):
    root = tmp_path / "corrupt"
    root.mkdir()
    for path in darcy_root.glob("*.mat"):
        (root / path.name).write_bytes(b"\x00garbage" * 100)
    assert train(*darcy_args(root), "--trainer.max_epochs=1") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot read" in err[0] and "smooth1.mat" in err[0]
    assert not list((tmp_path / "runs").rglob("results.json"))


def test_train_py_as_a_program_exits_non_zero_with_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--task", "nonsense"], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "nb360: error: unknown task 'nonsense'; choose one of: cifar100, spherical, ninapro, fsd50k, darcy, psicov, cosmic, ecg, satellite, deepsea"
    ]


def test_the_embedded_default_generates_darcy_data_and_trains(train, tmp_path, isolated_environment):
    """``python train.py`` with no task: the quickstart config (here with a smaller set and budget)."""
    small = ["--data.samples=40", "--data.n_train=32", "--data.n_val=8", "--data.n_test=8", "--trainer.max_epochs=1"]
    assert train(*small) == 0
    results = read_results(tmp_path / "runs" / "darcy" / "wrn" / "seed0")
    assert (results["task"], results["method"], results["split"]) == ("darcy", "wrn", "test")
    generated = sorted(p.name for p in (isolated_environment / "data" / "darcy").glob("*.mat"))
    assert generated == ["piececonst_r106_N40_smooth1.mat", "piececonst_r106_N40_smooth2.mat"]


def test_ddp_on_two_cpu_processes_scores_every_test_sample_once(tmp_path, darcy_root):
    """Lightning DDP (gloo, 2 processes) through train.py; 7 test samples do not split evenly over 2 processes."""
    args = [a.replace("--data.n_test=8", "--data.n_test=7") for a in darcy_args(darcy_root)]
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu", "--data.eval_batch_size=2"]
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *args, *ddp, "--trainer.max_epochs=1", *QUIET, f"--output_dir={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = tmp_path / "darcy" / "wrn" / "seed0"
    value = read_results(run_dir)["value"]
    assert value == pytest.approx(darcy_test_metric(run_dir / "checkpoints" / "last.ckpt", darcy_root, 7), rel=1e-4)


def test_a_data_error_inside_a_loader_worker_is_still_one_line(train, tmp_path, capsys):
    """Cosmic reads samples lazily; a corrupt sample read in a DataLoader worker process is reported like any other."""
    from nb360.datamodules.cosmic import CosmicDataModule

    root = tmp_path / "cosmic"
    CosmicDataModule.write_fixture(root, 4)
    options = [f"--data.{k}={v}" for k, v in CosmicDataModule.fixture_args(4).items()]
    args = ["--task", "cosmic", f"--data.root={root}", *options, "--data.num_workers=1", "--trainer.max_epochs=1"]
    dm = CosmicDataModule(root=str(root), **CosmicDataModule.fixture_args(4))
    dm.prepare_data()  # unpack, then damage one training sample
    victim = sorted(root.glob("npy_train/f435w/10760/2/*.npy"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    assert train(*args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("nb360: error: ") and victim.name in err[0]
    assert "Traceback" not in err[0] and "worker" not in err[0]
