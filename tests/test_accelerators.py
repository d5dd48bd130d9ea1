"""Accelerator settings (nb360.accelerators): CPU fallbacks, the GPU choices under a faked device, batch arithmetic."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import yaml
from conftest import darcy_args
from torch import nn

from nb360 import accelerators
from nb360.accelerators import (
    ChannelsLast,
    Compile,
    auto_num_workers,
    benchmark_default,
    channels_last_batch,
    compile_module,
    count_devices,
    has_conv2d,
    per_device_batch_size,
    precision_default,
)


def fake_trainer(device: str) -> SimpleNamespace:
    return SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)))


def tiny_convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


@pytest.mark.parametrize(
    "cuda, capability, expected",
    [
        (False, None, "32-true"),
        (True, (7, 0), "16-mixed"),  # V100, the reference's GPUs
        (True, (7, 5), "16-mixed"),
        (True, (8, 0), "bf16-mixed"),  # A100
        (True, (9, 0), "bf16-mixed"),  # H100
    ],
)
def test_precision_default_by_device(cuda, capability, expected):
    assert precision_default(cuda=cuda, capability=capability) == expected


def test_precision_default_reads_the_device_capability(monkeypatch):
    assert precision_default() == ("32-true" if not torch.cuda.is_available() else precision_default())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))  # V100
    assert precision_default() == "16-mixed"
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))  # Ampere
    assert precision_default() == "bf16-mixed"


def test_cudnn_benchmark_default():
    assert benchmark_default(cuda=False) is None  # CPU: leave torch's setting alone
    assert benchmark_default(cuda=True) is True
    assert benchmark_default(cuda=True, deterministic=True) is False


def test_channels_last_leaves_the_model_and_batches_alone_on_cpu():
    net, callback = tiny_convnet(), ChannelsLast()
    callback.setup(fake_trainer("cpu"), net, "fit")
    batch = {"x": torch.randn(5, 2, 6, 6), "y": torch.zeros(5)}
    callback.on_train_batch_start(None, net, batch, 0)
    assert not callback.active and net[0].weight.is_contiguous() and batch["x"].is_contiguous()


def test_channels_last_on_a_faked_cuda_device_converts_2d_convnets_only():
    net, callback = tiny_convnet(), ChannelsLast()
    callback.setup(fake_trainer("cuda"), net, "fit")  # only the device type is read: the conversion itself runs on CPU
    assert callback.active and net[0].weight.is_contiguous(memory_format=torch.channels_last)
    batch = {"x": torch.randn(5, 2, 6, 6), "y": torch.zeros(5)}
    callback.on_test_batch_start(None, net, batch, 0)
    assert batch["x"].is_contiguous(memory_format=torch.channels_last) and not batch["x"].is_contiguous()
    with torch.no_grad():
        assert torch.allclose(net(batch["x"]), tiny_convnet()(batch["x"].contiguous()), atol=1e-6)

    conv1d = nn.Sequential(nn.Conv1d(2, 4, 3))
    off = ChannelsLast()
    off.setup(fake_trainer("cuda"), conv1d, "fit")
    assert not off.active and not has_conv2d(conv1d) and has_conv2d(tiny_convnet())
    disabled = ChannelsLast(enabled=False)
    disabled.setup(fake_trainer("cuda"), net := tiny_convnet(), "fit")
    assert not disabled.active and net[0].weight.is_contiguous()
    assert channels_last_batch([torch.zeros(2, 3), torch.zeros(1, 2, 3, 3, dtype=torch.long)])[1].is_contiguous()


def test_compile_gives_the_eager_outputs_and_keeps_parameter_names():
    net = tiny_convnet()
    x = torch.randn(5, 2, 6, 6)
    with torch.no_grad():
        eager = net(x)
    names = list(net.state_dict())
    Compile().setup(fake_trainer("cpu"), SimpleNamespace(net=net), "fit")
    assert getattr(net, "_nb360_compiled", False) and compile_module(net)  # compiled once, idempotent
    with torch.no_grad():
        assert torch.allclose(net(x), eager, atol=1e-5)
    assert list(net.state_dict()) == names


def test_compile_failure_is_one_note_and_eager(monkeypatch, capsys):
    net = tiny_convnet()

    def broken(*args, **kwargs):
        raise RuntimeError("no backend\nsecond line")

    monkeypatch.setattr(net, "compile", broken)
    assert compile_module(net) is False
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nb360: torch.compile unavailable (RuntimeError: no backend): training eagerly"]
    assert net(torch.randn(1, 2, 6, 6)).shape == (1, 3)


def test_device_count_and_global_batch_arithmetic():
    assert count_devices("auto", "cpu") == 1 and count_devices(2, "cpu") == 2 and count_devices("2", "cpu") == 2
    assert count_devices("0,1,3", "gpu", cuda_count=4) == 3 and count_devices([0, 1], "gpu") == 2
    assert count_devices(-1, "gpu", cuda_count=4) == 4 and count_devices("auto", "auto", cuda_count=0) == 1
    assert per_device_batch_size(256, devices=4) == 64
    assert per_device_batch_size(256, devices=2, num_nodes=2, accumulate_grad_batches=4) == 16
    with pytest.raises(ValueError, match="256 is not divisible by 3 devices x 1 nodes x 1 accumulated batches = 3"):
        per_device_batch_size(256, devices=3)
    with pytest.raises(ValueError, match="positive"):
        per_device_batch_size(0, devices=1)


def test_auto_num_workers():
    assert auto_num_workers(cuda=False, cpus=64) == 0
    assert auto_num_workers(cuda=True, cpus=16) == 4
    assert auto_num_workers(cuda=True, cpus=2) == 1
    assert auto_num_workers(cuda=True, processes_per_node=4, cpus=9) == 2


def test_datamodule_resolves_auto_workers_and_pinning(monkeypatch, darcy_root):
    from nb360.datamodules.base import TaskDataModule
    from nb360.datamodules.darcy import DarcyDataModule
    from nb360.errors import DataError

    dm = DarcyDataModule(root=str(darcy_root), **DarcyDataModule.fixture_args(8))
    assert dm.num_workers == 0  # auto on a CPU-only run
    dm.setup()
    loader = dm.train_dataloader()
    assert loader.num_workers == 0 and not loader.pin_memory
    assert DarcyDataModule(root=str(darcy_root), num_workers=3, **DarcyDataModule.fixture_args(8)).num_workers == 3
    with pytest.raises(DataError, match="num_workers"):
        DarcyDataModule(root=str(darcy_root), num_workers=-1)
    monkeypatch.setattr(accelerators, "_cpu_count", lambda: 16)
    monkeypatch.setattr(TaskDataModule, "_on_cuda", lambda self: True)
    assert dm.num_workers == 4


def test_global_batch_size_sets_the_per_device_batch(train, tmp_path, darcy_root, capsys, monkeypatch):
    compiled = []  # the wiring of --compile, without the minutes inductor takes for a WRN on CPU
    monkeypatch.setattr(accelerators, "compile_module", lambda module, mode: compiled.append((type(module).__name__, mode)))
    args = [*darcy_args(darcy_root), "--trainer.max_epochs=1", "--global_batch_size=4", "--trainer.accumulate_grad_batches=2"]
    assert train(*args, "--compile=true", "--compile_mode=reduce-overhead", "--channels_last=true") == 0
    assert compiled and set(compiled) == {("WideResNet", "reduce-overhead")}
    config = yaml.safe_load((tmp_path / "runs" / "darcy" / "wrn" / "seed0" / "config.yaml").read_text())
    assert config["data"]["batch_size"] == 2 and config["trainer"]["precision"] == "32-true"
    assert config["compile"] is True and config["trainer"]["benchmark"] is None  # CPU: cuDNN flag left alone

    capsys.readouterr()
    assert train(*args, "--global_batch_size=6", "--trainer.accumulate_grad_batches=4", output_dir=tmp_path / "bad") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["nb360: error: --global_batch_size 6 is not divisible by 1 devices x 1 nodes x 4 accumulated batches = 4"]
