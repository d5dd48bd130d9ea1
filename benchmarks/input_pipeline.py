"""Does the input pipeline keep up with the model? Samples/s of each task's training loader against the model's.

For every task: the task's DataModule reads a format-exact fixture (``write_fixture``/``fixture_args``, as the
tests do) and its ``train_dataloader()`` is iterated alone, with the task's augmentations, as ``train.py``
builds it (``--data.num_workers`` 0 by default: loading runs in the training process, between steps); the
model's rate is forward + loss + backward + SGD step of the task's default ``wrn`` network on batches of the
same shape. ratio = loader samples/s / model samples/s: below 1 the pipeline stalls the model; with
``num_workers=0`` the loader adds 1/ratio of a step to every step.

Fixtures are small (tens of samples, and for Darcy and PSICOV smaller grids and crops than the real data) and
sit in the page cache, so the cost of reading files is underestimated; the model's rate is that of the
fixture's shapes, too.

    python benchmarks/input_pipeline.py            # 64 samples per part
    python benchmarks/input_pipeline.py --quick    # 16 samples per part
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleave, now, parser, setup, table, write_result  # noqa: E402

from nb360.search.train import TrainModule  # noqa: E402
from nb360.tasks import get_task, task_names  # noqa: E402

NOTE = "fixtures are small and in the page cache: the cost of reading files is underestimated"


def build_datamodule(task: str, root: Path, n: int) -> Any:
    cls = get_task(task).datamodule
    cls.write_fixture(root, n)
    dm = cls(root=str(root), split="final", source="local", **cls.fixture_args(n))
    dm.prepare_data()  # unpacks the fixture's archives, as a run does
    dm.setup("fit")
    dm.batch_size = min(dm.batch_size, len(dm.datasets["train"]))  # a fixture is smaller than a reference batch
    return dm


def loader_rate(dm: Any, epochs: int) -> float:
    """Samples per second of the training loader alone, over ``epochs`` epochs."""
    loader, samples = dm.train_dataloader(), 0
    start = now()
    for epoch in range(epochs):
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for batch in loader:
            samples += len(batch["x"])
    return samples / (now() - start)


def model_rate(module: TrainModule, optimizer: torch.optim.Optimizer, batches: list[dict[str, Any]]) -> float:
    """Samples per second of training steps of ``module`` on ``batches``."""
    module.train()
    start = now()
    for batch in batches:
        optimizer.zero_grad()
        module.batch_loss(batch).backward()
        optimizer.step()
    return sum(len(b["x"]) for b in batches) / (now() - start)


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = parser(__doc__, "16 samples per part, 3 repeats")
    p.add_argument("--n", type=int, default=None, help="fixture samples per part (default 64, 16 with --quick)")
    p.add_argument("--tasks", nargs="+", default=None, help="tasks (default: all registered)")
    args = p.parse_args(argv)
    setup(args)
    n, repeats = args.n or (16 if args.quick else 64), args.repeats or (3 if args.quick else 5)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nb360-pipeline-") as tmp:
        for task in args.tasks or task_names():
            dm = build_datamodule(task, Path(tmp) / task, n)
            torch.manual_seed(0)
            module = TrainModule(task=task)
            module.decoder = dm.output_decoder()
            optimizer = torch.optim.SGD(module.net.parameters(), lr=1e-3, momentum=0.9)
            batches = list(dm.train_dataloader())[:2]
            epochs = max(1, 8 // len(dm.train_dataloader()))
            loops = {"loader": lambda: loader_rate(dm, epochs), "model": lambda: model_rate(module, optimizer, batches)}
            runs = interleave(loops, repeats)
            loader, model = statistics.median(runs["loader"]), statistics.median(runs["model"])
            rows.append({
                "task": task, "batch": dm.batch_size, "x": "x".join(map(str, batches[0]["x"].shape[1:])),
                "train_samples": len(dm.datasets["train"]), "loader_samples_s": loader, "model_samples_s": model,
                "ratio": loader / model, "loader_share_of_step": model / (loader + model),
            })  # fmt: skip
            print(f"  {task}: loader {loader:.0f}/s, model {model:.1f}/s", file=sys.stderr, flush=True)
    print(format_table(rows))
    print(NOTE)
    print(f"wrote {write_result('input_pipeline', args, rows, note=NOTE)}")
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    return table(
        rows,
        [
            ("task", "task", ""), ("batch x", "x", ""), ("batch", "batch", ""), ("loader samples/s", "loader_samples_s", ".0f"),
            ("model samples/s", "model_samples_s", ".1f"), ("ratio loader/model", "ratio", ".1f"),
            ("loader share of a step (num_workers=0)", "loader_share_of_step", ".1%"),
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
