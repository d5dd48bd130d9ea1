"""``python -m nb360.precompute {run,merge,status}``: train a space's architectures on a task into a tabular benchmark.

    # one worker per shard: a SLURM array (--shard $SLURM_ARRAY_TASK_ID/64), several machines, or one per GPU
    python -m nb360.precompute run --space nb201 --task ninapro --data.root data/ninapro --epochs 200 \\
        --shard 0/8 --out precompute/ninapro-200
    python -m nb360.precompute status --out precompute/ninapro-200
    python -m nb360.precompute merge --out precompute/ninapro-200 --store benchmarks/nb201-ninapro-200.nb360

Rerunning ``run`` with the same arguments finishes what a killed worker left; finished
runs are never trained twice. ``--archs 0:20`` trains a slice of the space (before sharding).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from nb360.errors import UsageError, run_command

__all__ = ["main"]


def _run(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from nb360.data import datamodule_options
    from nb360.precompute.protocol import NB201_BATCH_SIZES, Protocol, parse_shard
    from nb360.precompute.worker import Layout, Worker, claim_directory, select_architectures
    from nb360.spaces import get_space
    from nb360.tasks import get_task

    space, spec = get_space(args.space), get_task(args.task)
    spec.require_datamodule()
    options = datamodule_options(extra)
    root = options.pop("root", None)
    protocol = Protocol(
        space=space.name,
        task=spec.name,
        epochs=args.epochs,
        hp=args.hp or str(args.epochs),
        eval_protocol=args.protocol,
        seeds=tuple(args.seeds),
        batch_size=args.batch_size or NB201_BATCH_SIZES.get(spec.name, 256),
        data_options=options,
    )
    indices = select_architectures(len(space), args.archs, parse_shard(args.shard))
    layout = Layout(Path(args.out))
    claim_directory(layout, protocol)
    worker = Worker(
        protocol,
        layout,
        accelerator=args.accelerator,
        precision=args.precision,
        num_workers=args.num_workers,
        progress=not args.quiet,
        root=root,
    )
    counts = worker.run(indices)
    print(
        f"shard {args.shard}: {counts['trained']} runs trained, {counts['finished_before']} already finished, "
        f"{counts['claimed_elsewhere']} in progress in another worker; results in {layout.runs}"
    )


def _merge(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from nb360.precompute.merge import merge
    from nb360.precompute.worker import Layout

    if extra:
        raise UsageError(f"unexpected arguments: {' '.join(extra)}")
    summary = merge(Layout(Path(args.out)), Path(args.store), require_complete=args.require_complete)
    print(summary)


def _status(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from nb360.precompute.merge import status
    from nb360.precompute.worker import Layout

    if extra:
        raise UsageError(f"unexpected arguments: {' '.join(extra)}")
    print(status(Layout(Path(args.out))))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nb360.precompute", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="train this worker's share of the architectures")
    run.add_argument("--space", required=True, help="search space: nb201 (topology) or nats_sss (size)")
    run.add_argument("--task", required=True, help="NB360 task name or alias")
    run.add_argument("--epochs", type=int, required=True, help="training epochs of every architecture (NB201: 12 or 200)")
    run.add_argument("--hp", default=None, help="name of this budget in the benchmark (default: the number of epochs)")
    run.add_argument("--out", required=True, help="output directory shared by all workers of this precompute")
    run.add_argument("--shard", default="0/1", help="i/N: train every N-th architecture starting at the i-th (0-based)")
    run.add_argument("--archs", default=None, help="restrict to START:STOP[:STEP] or a comma list of indices (default all)")
    run.add_argument("--seeds", type=int, nargs="+", default=[777], help="one run per seed (NB201: 777 888 999)")
    run.add_argument("--protocol", choices=["nb360", "holdout"], default="nb360", help="evaluation sets (see docs/nb201.md)")
    run.add_argument("--batch_size", type=int, default=None, help="training batch (default NB201's 256; Darcy 16)")
    run.add_argument("--accelerator", default="auto", help="Lightning accelerator (cpu, gpu, auto)")
    run.add_argument("--precision", default=None, help="Lightning precision, e.g. 16-mixed on GPUs")
    run.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=_run)

    merge = commands.add_parser("merge", help="build a tabular benchmark store from the finished runs")
    merge.add_argument("--out", required=True, help="the precompute's output directory")
    merge.add_argument("--store", required=True, help="path of the store to write (a directory)")
    merge.add_argument("--require_complete", action="store_true", help="fail unless every architecture and seed is finished")
    merge.set_defaults(handler=_merge)

    status = commands.add_parser("status", help="how many runs are finished and in progress")
    status.add_argument("--out", required=True)
    status.set_defaults(handler=_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = _parser().parse_known_args(argv)
    return run_command(lambda: args.handler(args, extra))


if __name__ == "__main__":
    sys.exit(main())
