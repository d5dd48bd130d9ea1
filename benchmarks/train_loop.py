"""Training step time of nb360's loop (what ``train.py --method wrn`` runs) versus a plain PyTorch loop.

nb360's side is a real ``lightning.Trainer`` built by ``nb360.run.RunContext.trainer`` as ``train.py`` builds
it (checkpointing every epoch, Timer, learning-rate monitor, CSV logger, EpochSeeds, progress bar, the
default ``log_every_n_steps``) fitting the task's ``TrainModule`` (its loss, metrics and logging) on a
task DataModule whose training set is synthetic tensors in a ``TensorDictDataset``, delivered by the
DataModule's own loader (``EpochShuffle`` sampler, batches gathered in one indexing op). The plain loop
trains the same network (same initial weights) on batches from the same loader with the same optimiser
and per-epoch schedule: ``.train()``, zero_grad, forward, loss, backward, step, and the scheduler step at
each epoch's end. Neither validates (the ``final`` split has no validation set).

A repeat is one run of each, alternating, of ``--epochs`` epochs of ``--steps`` optimizer steps; the time
per step is measured from the start of the second epoch to the end of training (so the one-off setup --
trainer construction, first iterator -- is left out, but every epoch's end -- checkpoint, logger, schedule
-- is in). The ratio nb360 / plain is taken repeat by repeat; the table gives min/median/max. The
"batches only" ratio leaves the epochs' ends out (it is the per-step overhead), and "epoch end s" is what
nb360 adds once per epoch (mostly writing ``last.ckpt``): a real epoch has hundreds of steps (CIFAR-100:
391 at batch 128), over which it is spread, where here an epoch has only a few.

    python benchmarks/train_loop.py            # reference-like shapes, batch 16-32
    python benchmarks/train_loop.py --quick    # smaller batches and Darcy grid, about a minute
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt_ratio, interleave, now, parser, ratio_stats, setup, table, write_result  # noqa: E402

from nb360.datamodules.base import TaskDataModule, TensorDictDataset  # noqa: E402
from nb360.run import RunContext  # noqa: E402
from nb360.search.train import TrainModule, build_optimizer, build_scheduler  # noqa: E402
from nb360.tasks import get_task  # noqa: E402

# case: (task, input shape, batch, input shape with --quick, batch with --quick)
CASES: dict[str, tuple[str, tuple[int, ...], int, tuple[int, ...], int]] = {
    "cifar100": ("cifar100", (3, 32, 32), 32, (3, 32, 32), 8),
    "ninapro": ("ninapro", (1, 16, 52), 64, (1, 16, 52), 16),
    "darcy": ("darcy", (3, 85, 85), 4, (3, 29, 29), 4),
    "ecg": ("ecg", (1, 1000), 32, (1, 1000), 16),
}


class SyntheticDataModule(TaskDataModule):
    """The task's DataModule machinery (loaders, sampler, batches as dicts) over synthetic tensors."""

    task = "cifar100"

    def __init__(self, task: str, shape: tuple[int, ...], n: int, batch_size: int) -> None:
        self.task = task
        super().__init__(root=tempfile.gettempdir(), split="final", batch_size=batch_size)
        self.shape, self.n = shape, n

    def load(self) -> dict[str, TensorDictDataset]:
        spec, g = self.spec, torch.Generator().manual_seed(0)
        x = torch.randn(self.n, *self.shape, generator=g)
        if spec.kind == "dense":
            y = torch.rand(self.n, spec.num_outputs, *self.shape[1:], generator=g) + 0.5
        else:
            y = torch.randint(0, spec.num_outputs, (self.n,), generator=g)
        data = TensorDictDataset(x=x, y=y)
        return {"train": data, "test": data}


def make_module(task: str) -> TrainModule:
    torch.manual_seed(0)
    return TrainModule(task=task)


class _Clock(pl.Callback):
    """Times of every epoch's start, of the end of its last batch, and of the end of training."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.batch_ends: list[float] = []
        self.end = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.starts.append(now())
        self.batch_ends.append(0.0)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.batch_ends[-1] = now()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.end = now()


def split_times(starts: list[float], batch_ends: list[float], end: float, steps: int) -> dict[str, float]:
    """Seconds per step (whole epochs, from the second on), per step within the epochs' batches, per epoch end."""
    nexts = [*starts[2:], end]
    batches = sum(b - s for s, b in zip(starts[1:], batch_ends[1:]))
    epoch_ends = sum(n - b for b, n in zip(batch_ends[1:], nexts))
    epochs = len(starts) - 1
    return {
        "s_per_step": (end - starts[1]) / (epochs * steps),
        "batch_s": batches / (epochs * steps),
        "epoch_end_s": epoch_ends / epochs,
    }


def lightning_loop(task: str, data: SyntheticDataModule, epochs: int, workdir: Path) -> dict[str, float]:
    """nb360's loop: ``RunContext.trainer`` with train.py's defaults, fitting ``TrainModule``."""
    module, clock = make_module(task), _Clock()
    with tempfile.TemporaryDirectory(dir=workdir) as run_dir:
        ctx = RunContext(
            task=get_task(task), method="wrn", seed=0, run_dir=Path(run_dir), model=module, datamodule=data,
            trainer_kwargs={"max_epochs": epochs, "accelerator": "cpu", "devices": 1, "precision": "32-true"},
            config_yaml="", config={},
        )  # fmt: skip
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            start = now()
            trainer = ctx.trainer(callbacks=[clock])
            trainer.fit(module, datamodule=data)
    times = split_times(clock.starts, clock.batch_ends, clock.end, len(data.train_dataloader()))
    return {**times, "setup_s": clock.starts[0] - start}


def plain_loop(task: str, data: SyntheticDataModule, epochs: int) -> dict[str, float]:
    """The same training by hand: same network, optimiser, schedule, loss and loader."""
    module = make_module(task)
    net, loss_fn = module.net, module.loss
    m = module
    optimizer = build_optimizer(m.optimizer_name, net.parameters(), m.lr, m.weight_decay, m.momentum, m.nesterov)
    scheduler = build_scheduler(optimizer, module.schedule, epochs, module.min_lr)
    loader = data.train_dataloader()
    starts, batch_ends = [], []
    for epoch in range(epochs):
        starts.append(now())
        loader.sampler.set_epoch(epoch)
        net.train()
        for batch in loader:
            optimizer.zero_grad()
            loss = loss_fn(net(batch["x"]), batch["y"])
            loss.backward()
            optimizer.step()
        batch_ends.append(now())
        scheduler.step()
    return split_times(starts, batch_ends, now(), len(loader))


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = parser(__doc__, "smaller batches and Darcy grid, 3 repeats of 2 epochs x 3 steps")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per epoch")
    p.add_argument("--epochs", type=int, default=None, help="epochs per repeat (the first is not timed)")
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), default=list(CASES))
    args = p.parse_args(argv)
    setup(args)
    repeats = args.repeats or (3 if args.quick else 5)
    steps, epochs = args.steps or (3 if args.quick else 6), max(args.epochs or (2 if args.quick else 3), 2)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nb360-bench-") as workdir:
        for case in args.cases:
            task, shape, batch, quick_shape, quick_batch = CASES[case]
            shape, batch = (quick_shape, quick_batch) if args.quick else (shape, batch)
            data = SyntheticDataModule(task, shape, steps * batch, batch)
            data.setup("fit")
            runs = interleave(
                {
                    "lightning": lambda: lightning_loop(task, data, epochs, Path(workdir)),
                    "plain": lambda: plain_loop(task, data, epochs),
                },
                repeats,
            )
            light = [r["s_per_step"] for r in runs["lightning"]]
            plain = [r["s_per_step"] for r in runs["plain"]]
            step_ratios = ratio_stats([r["batch_s"] for r in runs["lightning"]], [r["batch_s"] for r in runs["plain"]])
            rows.append({
                "case": case, "task": task, "network": "wrn", "input": "x".join(map(str, shape)), "batch": batch,
                "steps_per_epoch": steps, "epochs": epochs, "repeats": repeats,
                "plain_s_per_step": statistics.median(plain), "lightning_s_per_step": statistics.median(light),
                "lightning_setup_s": statistics.median(r["setup_s"] for r in runs["lightning"]),
                "lightning_epoch_end_s": statistics.median(r["epoch_end_s"] for r in runs["lightning"]),
                "plain_epoch_end_s": statistics.median(r["epoch_end_s"] for r in runs["plain"]),
                **{f"steps_only_{k}": v for k, v in step_ratios.items()},
                **ratio_stats(light, plain), "lightning_all": light, "plain_all": plain,
            })  # fmt: skip
            print(f"  {case}: ratio {fmt_ratio(rows[-1])}", file=sys.stderr, flush=True)
    print(format_table(rows))
    print(f"wrote {write_result('train_loop', args, rows)}")
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    for row in rows:
        row["ratio"] = fmt_ratio(row)
        row["steps_only_ratio"] = fmt_ratio({k: row[f"steps_only_{k}"] for k in ("ratio_min", "ratio_median", "ratio_max")})
    return table(
        rows,
        [
            ("case", "case", ""), ("input", "input", ""), ("batch", "batch", ""), ("steps/epoch", "steps_per_epoch", ""),
            ("plain s/step", "plain_s_per_step", ".4f"), ("nb360 s/step", "lightning_s_per_step", ".4f"),
            ("ratio min/median/max", "ratio", ""), ("batches only: ratio", "steps_only_ratio", ""),
            ("nb360 epoch end s", "lightning_epoch_end_s", ".3f"), ("trainer setup s", "lightning_setup_s", ".2f"),
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
