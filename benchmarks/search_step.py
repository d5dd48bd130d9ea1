"""One PC-DARTS search step (weight step + architecture step) in nb360's Lightning module versus a plain PyTorch loop.

Both run the same supernet, losses, optimisers (SGD + exponentiated gradient, clipping 5)
and the same batches from the same loader; repeats alternate between the two so that
machine noise hits both alike. Prints a table and writes benchmarks/results/search_step.json.

    python benchmarks/search_step.py            # reference supernet (16 channels, 8 cells), batch 32
    python benchmarks/search_step.py --quick    # small supernet, a few seconds per task
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from nb360.datamodules.base import TensorDictDataset
from nb360.search.bilevel import BilevelDataset, PairSampler
from nb360.search.darts import DartsSearchModule, ExponentiatedGradient
from nb360.tasks import get_task

SHAPES = {"cifar100": (3, 32, 32), "ecg": (1, 1000)}


def loader(task: str, batch: int, steps: int) -> DataLoader:
    spec = get_task(task)
    n = 2 * batch * steps
    g = torch.Generator().manual_seed(0)
    data = TensorDictDataset(x=torch.randn(n, *SHAPES[task], generator=g), y=torch.randint(0, spec.num_outputs, (n,), generator=g))
    return DataLoader(BilevelDataset(data), batch_size=batch, sampler=PairSampler(n, 0), collate_fn=lambda b: b)


def make_module(task: str, channels: int, layers: int) -> DartsSearchModule:
    torch.manual_seed(0)
    return DartsSearchModule(task=task, channels=channels, layers=layers, warmup_epochs=0)


def plain_loop(module: DartsSearchModule, data: DataLoader) -> float:
    """Seconds per step of a hand-written loop doing what the module does."""
    net = module.net
    weights = torch.optim.SGD(net.weight_parameters(), lr=0.1, momentum=0.9, weight_decay=3e-4)
    arch = ExponentiatedGradient(net.arch_parameters(), lr=0.1)
    net.train()
    start, steps = time.perf_counter(), 0
    for batch in data:
        weights.zero_grad()
        loss = module.loss(net(batch["weights"]["x"]), batch["weights"]["y"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.weight_parameters(), 5.0)
        weights.step()
        arch.zero_grad()
        module.loss(net(batch["arch"]["x"]), batch["arch"]["y"]).backward()
        arch.step()
        steps += 1
    return (time.perf_counter() - start) / steps


class _EpochClock(pl.Callback):
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = time.perf_counter() - self.start


def lightning_loop(module: DartsSearchModule, data: DataLoader) -> float:
    """Seconds per step of ``Trainer.fit`` over the same loader (one epoch, no validation, logging, checkpoints)."""
    clock = _EpochClock()
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock],
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=data)
    return clock.seconds / len(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 channels, 5 cells, batch 16, 3 repeats")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    args = parser.parse_args()
    channels, layers, batch = (8, 5, 16) if args.quick else (16, 8, 32)
    repeats, steps = args.repeats or (3 if args.quick else 5), args.steps or (4 if args.quick else 8)
    warnings.filterwarnings("ignore")
    rows = []
    for task in SHAPES:
        data = loader(task, batch, steps)
        plain_loop(make_module(task, channels, layers), data)  # warm-up (allocator, kernels)
        plain, lightning = [], []
        for _ in range(repeats):
            plain.append(plain_loop(make_module(task, channels, layers), data))
            lightning.append(lightning_loop(make_module(task, channels, layers), data))
        ratios = [light / base for light, base in zip(lightning, plain)]
        rows.append({
            "task": task, "input": SHAPES[task], "batch": batch, "channels": channels, "layers": layers, "steps": steps,
            "plain_s_per_step": statistics.median(plain), "lightning_s_per_step": statistics.median(lightning),
            "ratio_min": min(ratios), "ratio_median": statistics.median(ratios), "ratio_max": max(ratios),
        })  # fmt: skip
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'task':<9} {'input':<12} {'plain s/step':>12} {'lightning s/step':>16} {'ratio min/median/max':>22}")
    for r in rows:
        ratio = f"{r['ratio_min']:.3f}/{r['ratio_median']:.3f}/{r['ratio_max']:.3f}"
        print(f"{r['task']:<9} {str(r['input']):<12} {r['plain_s_per_step']:>12.3f} {r['lightning_s_per_step']:>16.3f} {ratio:>22}")
    print(f"peak resident memory of the process: {peak_mb:.0f} MB")
    out = Path(__file__).resolve().parent / "results" / "search_step.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "threads": torch.get_num_threads(), "peak_rss_mb": peak_mb, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
