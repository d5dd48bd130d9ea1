"""One PC-DARTS search step (weight step + architecture step) in nb360's Lightning module versus a plain PyTorch loop.

Both run the same supernet, losses, optimisers (SGD + exponentiated gradient, clipping 5)
and the same batches from the same loader; repeats alternate between the two so that
machine noise hits both alike. Prints a table and writes benchmarks/results/search_step.json.

    python benchmarks/search_step.py            # reference supernet (16 channels, 8 cells), batch 32
    python benchmarks/search_step.py --quick    # small supernet, a few seconds per task
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt_ratio, interleave, now, parser, ratio_stats, setup, table, write_result  # noqa: E402

from nb360.datamodules.base import TensorDictDataset  # noqa: E402
from nb360.search.bilevel import BilevelDataset, PairSampler  # noqa: E402
from nb360.search.darts import DartsSearchModule, ExponentiatedGradient  # noqa: E402
from nb360.tasks import get_task  # noqa: E402

SHAPES = {"cifar100": (3, 32, 32), "ecg": (1, 1000)}


def loader(task: str, batch: int, steps: int) -> DataLoader:
    spec = get_task(task)
    n = 2 * batch * steps
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, *SHAPES[task], generator=g), torch.randint(0, spec.num_outputs, (n,), generator=g)
    data = TensorDictDataset(x=x, y=y)
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
    start, steps = now(), 0
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
    return (now() - start) / steps


class _EpochClock(pl.Callback):
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = now()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds = now() - self.start


def lightning_loop(module: DartsSearchModule, data: DataLoader) -> float:
    """Seconds per step of ``Trainer.fit`` over the same loader (one epoch, no validation, logging, checkpoints)."""
    clock = _EpochClock()
    trainer = pl.Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock],
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=data)
    return clock.seconds / len(data)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = parser(__doc__, "8 channels, 5 cells, batch 16, 3 repeats of 4 steps")
    p.add_argument("--steps", type=int, default=None)
    args = p.parse_args(argv)
    setup(args)
    channels, layers, batch = (8, 5, 16) if args.quick else (16, 8, 32)
    repeats, steps = args.repeats or (3 if args.quick else 5), args.steps or (4 if args.quick else 8)
    rows = []
    for task in SHAPES:
        data = loader(task, batch, steps)
        runs = interleave(
            {
                "plain": lambda: plain_loop(make_module(task, channels, layers), data),
                "lightning": lambda: lightning_loop(make_module(task, channels, layers), data),
            },
            repeats,
        )
        rows.append({
            "task": task, "input": "x".join(map(str, SHAPES[task])), "batch": batch, "channels": channels, "layers": layers,
            "steps": steps, "plain_s_per_step": statistics.median(runs["plain"]),
            "lightning_s_per_step": statistics.median(runs["lightning"]), **ratio_stats(runs["lightning"], runs["plain"]),
        })  # fmt: skip
    print(format_table(rows))
    print(f"wrote {write_result('search_step', args, rows)}")
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    for row in rows:
        row["ratio"] = fmt_ratio(row)
    return table(
        rows,
        [
            ("task", "task", ""), ("input", "input", ""), ("batch", "batch", ""), ("plain s/step", "plain_s_per_step", ".3f"),
            ("lightning s/step", "lightning_s_per_step", ".3f"), ("ratio min/median/max", "ratio", ""),
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
