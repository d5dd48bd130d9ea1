"""Metrics under DDP: two CPU processes (gloo) each see part of the data; compute() must equal the full-data value."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from nb360.metrics import (
    ContactMAE,
    FalseNegativeRate,
    OneMinusAUROC,
    OneMinusMAP,
    OneMinusThresholdedAUROC,
    OneMinusVotedF1,
    RelativeL2,
    ZeroOneError,
)


def _cases() -> dict[str, tuple[type, dict, tuple]]:
    rng = np.random.default_rng(7)
    n = 23
    clip = np.repeat(np.arange(9), [1, 3, 2, 4, 1, 2, 5, 3, 2])
    clip_truth = rng.integers(0, 2, (9, 3))
    clip_truth[0] = 1
    records = np.repeat(np.arange(8), [3, 1, 4, 2, 5, 3, 2, 3])
    record_truth = rng.integers(0, 4, 8)
    true_maps = rng.uniform(3, 20, (n, 30, 30))
    true_maps[:, 0, 26] = 5.0
    return {
        "error": (ZeroOneError, {}, (rng.standard_normal((n, 5)), rng.integers(0, 5, n), {})),
        "map_clips": (OneMinusMAP, {}, (rng.standard_normal((len(clip), 3)), clip_truth[clip], {"clip": clip})),
        "relative_l2": (RelativeL2, {}, (rng.standard_normal((n, 1, 4, 4)), rng.standard_normal((n, 1, 4, 4)), {})),
        "mae8": (ContactMAE, {}, (rng.uniform(0, 20, (n, 1, 30, 30)), true_maps[:, None], {"length": rng.integers(20, 31, n)})),
        "auroc": (OneMinusAUROC, {}, (rng.standard_normal((n, 4)), np.r_[np.zeros((3, 4)), np.ones((3, 4)), rng.integers(0, 2, (n - 6, 4))], {})),
        "auroc_thresholded": (OneMinusThresholdedAUROC, {}, (rng.standard_normal((n, 1, 4, 4)), rng.integers(0, 2, (n, 1, 4, 4)), {})),
        "fnr": (FalseNegativeRate, {}, (rng.standard_normal((n, 1, 4, 4)), rng.integers(0, 2, (n, 1, 4, 4)), {})),
        "voted_f1": (
            OneMinusVotedF1,
            {},
            (rng.standard_normal((len(records), 4)), record_truth[records], {"record": records, "window": np.arange(len(records))}),
        ),
    }


def _update(metric, preds, target, extras, rows) -> None:
    metric.update(torch.as_tensor(preds[rows]), torch.as_tensor(target[rows]), **{k: torch.as_tensor(v[rows]) for k, v in extras.items()})


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    results = {}
    for name, (cls, kwargs, (preds, target, extras)) in _cases().items():
        n = len(preds)
        # uneven, interleaved shards: rank 0 gets 2 of every 3 samples
        mine = np.array([i for i in range(n) if (i % 3 == 2) == (rank == 1)])
        shared = cls(**kwargs)
        _update(shared, preds, target, extras, mine)
        value = float(shared.compute())
        alone = cls(sync_on_compute=False, **kwargs)
        _update(alone, preds, target, extras, np.arange(n))
        local = cls(sync_on_compute=False, **kwargs)
        _update(local, preds, target, extras, mine)
        results[name] = (value, float(alone.compute()), float(local.compute()))
    if rank == 0:
        Path(out).write_text(json.dumps(results))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_metric_syncs_across_two_processes(tmp_path):
    out = tmp_path / "ddp.json"
    mp.spawn(_worker, args=(_free_port(), str(out)), nprocs=2, join=True)
    results = json.loads(out.read_text())
    assert set(results) == set(_cases())
    for name, (distributed, single, local) in results.items():
        assert np.isfinite(single), name
        assert distributed == single or abs(distributed - single) < 1e-9, (name, distributed, single)
        assert abs(local - single) > 1e-9, f"{name}: rank 0's own shard gives the same value, so the test proves nothing"
