"""Peak memory of one training step per task and method, each case in a fresh process.

A case builds the method's LightningModule with the method's configured model options (``configs/methods``)
and fits it for one step (``limit_train_batches=1``, one epoch, no logger or checkpoint) on a synthetic batch
of the task's input shape: for ``wrn`` one SGD step of the task's default network, for the weight-sharing
searches (``gaea``, ``darts``, ``densenas``) one search step (weight step + architecture step on the two
halves of a bilevel batch). The child process reports its peak resident set (``ru_maxrss``), the resident
set after imports and model construction, and ``torch.cuda.max_memory_allocated`` when CUDA is present.

    python benchmarks/memory.py            # reference batch sizes (search: the method's), capped by --max_batch
    python benchmarks/memory.py --quick    # batch 4, GAEA and DARTS only
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parser, setup, table, write_result  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SEARCHES = [("cifar100", "gaea"), ("cifar100", "darts"), ("cifar100", "densenas")]
QUICK_SEARCHES = SEARCHES[:2]  # the DenseNAS supernet (178 M parameters on CIFAR-100) takes a while to build


def method_options(method: str) -> dict[str, Any]:
    import yaml

    path = REPO / "configs" / "methods" / f"{method}.yaml"
    return dict((yaml.safe_load(path.read_text()) or {}).get("model") or {}) if path.is_file() else {}


def synthetic(task: str, n: int) -> dict[str, Any]:
    import torch

    from nb360.tasks import get_task

    spec, g = get_task(task), torch.Generator().manual_seed(0)
    x = torch.randn(n, *spec.input_shape, generator=g)
    if spec.kind == "dense":
        y = torch.rand(n, spec.num_outputs, *spec.input_shape[1:], generator=g) + 0.5
    elif spec.loss.startswith("bce"):
        y = (torch.rand(n, spec.num_outputs, generator=g) > 0.5).float()
    else:
        y = torch.randint(0, spec.num_outputs, (n,), generator=g)
    return {"x": x, "y": y}


def run_case(task: str, method: str, batch: int) -> dict[str, Any]:
    """In the child process: build, step once, report memory."""
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader

    from nb360.datamodules.base import TensorDictDataset
    from nb360.methods import get_method
    from nb360.search.bilevel import BilevelDataset, PairSampler

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    options = method_options(method)
    if method != "wrn":
        options["warmup_epochs"] = 0  # the step includes the architecture step
    module = get_method(method).module(task=task, **options)
    search = method != "wrn"
    data = TensorDictDataset(**synthetic(task, 2 * batch if search else batch))
    if search:
        loader = DataLoader(BilevelDataset(data), batch_size=batch, sampler=PairSampler(2 * batch, 0), collate_fn=lambda b: b)
    else:
        loader = DataLoader(data, batch_size=batch, collate_fn=lambda b: b)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer = pl.Trainer(
        max_epochs=1, limit_train_batches=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=loader)
    return {
        "task": task, "method": method, "batch": batch, "step": "search step" if search else "training step",
        "params": sum(p.numel() for p in module.parameters()), "rss_before_step_mb": before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cuda_max_allocated_mb": torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None,
    }  # fmt: skip


def spawn(task: str, method: str, batch: int, threads: int) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", f"{task}:{method}:{batch}", "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        error = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"task": task, "method": method, "batch": batch, "error": error[:200]}
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = parser(__doc__, "batch 4 for every case")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--max_batch", type=int, default=64, help="cap on the batch size (reference batches are up to 4096)")
    p.add_argument("--tasks", nargs="+", default=None, help="tasks for wrn (default: all registered)")
    args = p.parse_args(argv)
    setup(args)
    if args.child:
        task, method, batch = args.child.split(":")
        print(json.dumps(run_case(task, method, int(batch))))
        return []
    from nb360.methods import get_method
    from nb360.tasks import get_task, task_names

    cases = [(task, "wrn") for task in args.tasks or task_names()] + (QUICK_SEARCHES if args.quick else SEARCHES)
    rows = []
    for task, method in cases:
        spec = get_task(task)
        batch = get_method(method).defaults(spec).get("data.batch_size", spec.reference.batch_size)
        batch = 4 if args.quick else min(batch, args.max_batch)
        rows.append(spawn(task, method, batch, args.threads))
        row = rows[-1]
        print(f"  {task} {method}: {row.get('peak_rss_mb', row.get('error'))}", file=sys.stderr, flush=True)
    print(format_table(rows))
    print(f"wrote {write_result('memory', args, rows)}")
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    return table(
        rows,
        [
            ("task", "task", ""), ("method", "method", ""), ("step", "step", ""), ("batch", "batch", ""),
            ("params", "params", ","), ("RSS before step MB", "rss_before_step_mb", ".0f"), ("peak RSS MB", "peak_rss_mb", ".0f"),
            ("CUDA max allocated MB", "cuda_max_allocated_mb", ".0f"), ("error", "error", ""),
        ],
    )  # fmt: skip


if __name__ == "__main__":
    main()
