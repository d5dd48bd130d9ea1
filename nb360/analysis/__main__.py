"""``python -m nb360.analysis nb201``: the NB360 paper's analyses of NB201 tabular benchmarks, as files and pictures.

    python -m nb360.analysis nb201 --store data/nb201/nb201-ninapro.nb360 --store data/nb201/nb201-darcy.nb360 \\
        --hp 200 -o reports/nb201
    # one benchmark, several budgets: --dataset picks, --hp/--eval_set choose where a store has several
    python -m nb360.analysis nb201 --store precompute/ninapro.nb360 --dataset ninapro --eval_set x-valid -o out

Every dataset of every store becomes one task of the comparison (``--dataset`` restricts
them). A dataset's budget (``--hp``) and evaluation set (``--eval_set``) must be given when
it has several; scores are compared in the direction of each dataset's metric. Output:
``correlations.json``/``.md`` (Kendall tau-b and Spearman rho, also for the top fraction with
``--top``), ``rankings.png`` (paper Fig. 3), ``correlation.png``, ``op_importance.json`` and
``op_importance.png`` (paper Fig. 4).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from nb360.errors import UsageError, run_command

__all__ = ["main", "collect_scores"]


def _pick(kind: str, wanted: str | None, available: list[str], where: str) -> str:
    if wanted is not None:
        if wanted not in available:
            raise UsageError(f"{where} has no {kind} {wanted!r}; it has: {', '.join(available)}")
        return wanted
    if len(available) == 1:
        return available[0]
    raise UsageError(f"{where} has several {kind}s ({', '.join(available)}); choose one with --{kind}")


def collect_scores(
    stores: Sequence[str], datasets: Sequence[str] | None, hp: str | None, eval_set: str | None, epoch: int | None
) -> tuple[dict[str, np.ndarray], dict[str, bool], dict[str, Any]]:
    """Final (or ``epoch``) scores of every chosen dataset of every store, their directions, and what was chosen."""
    from nb360.tabular import create

    scores: dict[str, np.ndarray] = {}
    directions: dict[str, bool] = {}
    chosen: dict[str, Any] = {}
    for path in stores:
        bench = create(path)
        if bench.space.name != "nb201":
            raise UsageError(f"{path} is a {bench.space.name} benchmark; these analyses need the NB201 topology space")
        for dataset in bench.datasets:
            if datasets and dataset not in datasets:
                continue
            where = f"{path} [{dataset}]"
            h = _pick("hp", hp, bench.hps(dataset), where)
            s = _pick("eval_set", eval_set, bench.eval_sets(dataset, h), where)
            label = dataset if dataset not in scores else f"{dataset} ({Path(path).stem})"
            scores[label] = bench.scores(dataset, h, s, epoch=epoch)
            directions[label] = bool(bench.score_info(dataset)["lower_is_better"])
            chosen[label] = {"store": str(path), "dataset": dataset, "hp": h, "eval_set": s, "score": bench.score_info(dataset)}
    if not scores:
        raise UsageError(f"none of the datasets {list(datasets or [])} is in the stores given")
    return scores, directions, chosen


def _nb201(args: argparse.Namespace) -> None:
    from nb360.analysis.nb201 import write_report
    from nb360.io import write_json

    scores, directions, chosen = collect_scores(args.store, args.dataset, args.hp, args.eval_set, args.epoch)
    written = write_report(scores, directions, args.output, reference=args.reference, top=args.top, image_format=args.format)
    write_json(Path(args.output) / "inputs.json", chosen)
    for path in [*written, Path(args.output) / "inputs.json"]:
        print(f"wrote {path}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m nb360.analysis", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    nb201 = commands.add_parser("nb201", help="rank correlations across tasks and operation importance")
    nb201.add_argument("--store", action="append", required=True, help="a tabular benchmark (store or NATS file); repeat")
    nb201.add_argument("--dataset", action="append", default=None, help="only these datasets (repeat)")
    nb201.add_argument("--hp", default=None, help="budget key, where a dataset has several")
    nb201.add_argument("--eval_set", default=None, help="evaluation set, where a dataset has several")
    nb201.add_argument("--epoch", type=int, default=None, help="score after this epoch (0-based; default the last)")
    nb201.add_argument("--reference", default=None, help="task along the x axis of the ranking plot (default the first)")
    nb201.add_argument("--top", type=float, default=None, help="also correlate the top fraction (e.g. 0.1) of each task")
    nb201.add_argument("--format", default="png", choices=["png", "svg", "pdf"], help="picture format")
    nb201.add_argument("-o", "--output", required=True, help="output directory")
    nb201.set_defaults(handler=_nb201)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_command(lambda: args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
