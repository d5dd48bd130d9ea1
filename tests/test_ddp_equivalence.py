"""Scale-out: 2-process CPU DDP through train.py reproduces a one-process run with the same global batch size."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml
from conftest import QUIET, REPO, darcy_args
from helpers import read_results

from nb360.datamodules.base import DistributedEpochShuffle, EpochShuffle


@pytest.mark.parametrize("size, world, batch", [(12, 2, 4), (16, 4, 8), (7, 2, 2)])
def test_ddp_processes_share_out_the_one_process_batches(size, world, batch):
    """Global batch b of N processes (batch / N each) holds the samples of batch b of one process."""
    for epoch in (0, 3):
        single = EpochShuffle(size, seed=5)
        single.set_epoch(epoch)
        order = list(single)
        per_rank = []
        for rank in range(world):
            sampler = DistributedEpochShuffle(range(size), seed=5, num_replicas=world, rank=rank)
            sampler.set_epoch(epoch)
            per_rank.append(list(sampler))
            assert len(sampler) == len(per_rank[-1]) == -(-size // world)
        local = batch // world
        padded = order + order[: world * len(per_rank[0]) - size]  # DistributedSampler's padding
        for b in range(-(-len(padded) // batch)):
            merged = sorted(i for indices in per_rank for i in indices[b * local : (b + 1) * local])
            assert merged == sorted(padded[b * batch : (b + 1) * batch])


def net_weights(checkpoint) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("net.")}


def test_two_process_ddp_equals_one_process_with_the_same_global_batch(train, tmp_path, darcy_root, capsys):
    """A small FNO-2d (the Darcy expert; no batch norm) on Darcy: 8 training samples, global batch 4, 2 epochs.

    The loss is Darcy's reference loss, a sum over the batch: under DDP it is scaled by the number of processes,
    so that the averaged gradient is that of the sum over the global batch (docs/performance.md).

    One process trains on batches of 4; two gloo processes on batches of 2 each (``--global_batch_size 4``
    sets both). The same samples form each global batch (DistributedEpochShuffle) and DDP averages the
    gradients, so the weights and the test metric agree up to float rounding. ``--trainer.sync_batchnorm``
    (CUDA only in torch) falls back to per-process statistics with one note.
    """
    args = [a.replace("wrn", "expert") for a in darcy_args(darcy_root)]
    common = [*args, "--model.network_options={modes: 3, width: 8}", "--global_batch_size=4"]
    common += ["--trainer.max_epochs=2", "--trainer.sync_batchnorm=true"]
    assert train(*common, output_dir=tmp_path / "one") == 0
    assert "batch norm statistics stay per process" in capsys.readouterr().err
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"]
    done = subprocess.run(
        [sys.executable, str(REPO / "train.py"), *common, *ddp, *QUIET, f"--output_dir={tmp_path / 'two'}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    one, two = (tmp_path / name / "darcy" / "expert" / "seed0" for name in ("one", "two"))
    assert yaml.safe_load((two / "config.yaml").read_text())["data"]["batch_size"] == 2
    assert yaml.safe_load((one / "config.yaml").read_text())["data"]["batch_size"] == 4
    assert read_results(two)["value"] == pytest.approx(read_results(one)["value"], rel=1e-4)
    weights_one, weights_two = net_weights(one / "checkpoints" / "last.ckpt"), net_weights(two / "checkpoints" / "last.ckpt")
    assert weights_one.keys() == weights_two.keys() and len(weights_one) > 4
    for key, value in weights_one.items():
        torch.testing.assert_close(weights_two[key], value, rtol=1e-4, atol=1e-6, msg=key)
