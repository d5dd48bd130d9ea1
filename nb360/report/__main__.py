"""``python -m nb360.report [RUNS_DIR] [--wandb PROJECT] -o OUT_DIR``: the paper's Tables 2–3 and a performance profile.

Results come from the ``results.json`` files under RUNS_DIR, from the runs of a W&B project (``--wandb
entity/project``, through W&B's public API: needs network access and a login), or from both.

Writes ``table2.{md,tex,csv}``, ``table3.{md,csv}``, ``profile.{png,csv}`` (plus ``profile.svg`` with ``--svg``) and
``report.html``, a self-contained page with the tables, the profile, each run's learning curves and genotypes.
``--with-reference`` adds the paper's published Table 2 numbers as methods named ``"<method> (paper)"``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nb360.errors import DataError, UsageError, run_command
from nb360.io import atomic_open
from nb360.report.collect import collect
from nb360.report.html import write_html
from nb360.report.profiles import POINT_2D_TASKS, performance_profile, plot_profile, profile_csv
from nb360.report.reference import PAPER_METRICS, reference_rows
from nb360.report.tables import aggregate, table2, table3
from nb360.report.wandb_runs import collect_wandb

__all__ = ["main", "build_parser"]

PAPER_SUFFIX = " (paper)"
TASK_ORDER = tuple(PAPER_METRICS)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nb360.report", description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="?", help="folder searched recursively for results.json files")
    p.add_argument("--wandb", metavar="PROJECT", help="also read the finished runs of this W&B project (entity/project)")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder")
    p.add_argument("--with-reference", action="store_true", help="add the paper's Table 2 numbers as '<method> (paper)'")
    p.add_argument("--tasks", nargs="+", help="tasks to include (default: all found); 'point2d' stands for the 2-D point tasks")
    p.add_argument("--methods", nargs="+", help="methods to include, in this order (default: all found)")
    p.add_argument("--baseline", default="wrn", help="method the %% improvement of Table 3 is measured against")
    p.add_argument("--svg", action="store_true", help="also write profile.svg")
    return p


def _write(path: Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _report(args: argparse.Namespace) -> None:
    if args.runs is None and args.wandb is None:
        raise UsageError("give a runs folder, a W&B project (--wandb entity/project), or both")
    rows, skipped = [], 0
    if args.runs is not None:
        if not args.runs.is_dir():
            raise DataError(f"runs folder not found: {args.runs}")
        rows, skipped = collect(args.runs)
    if args.wandb is not None:
        wandb_rows, wandb_skipped = collect_wandb(args.wandb)
        rows, skipped = rows + wandb_rows, skipped + wandb_skipped
    if args.with_reference:
        rows += reference_rows(PAPER_SUFFIX)
    if args.tasks:
        wanted = [t for name in args.tasks for t in (POINT_2D_TASKS if name == "point2d" else (name,))]
        rows = [r for r in rows if r.task in wanted]
    if args.methods:
        rows = [r for r in rows if r.method in args.methods or r.method.removesuffix(PAPER_SUFFIX) in args.methods]
    if not rows:
        where = " and ".join(str(s) for s in (args.runs, args.wandb and f"W&B project {args.wandb}") if s)
        raise DataError(f"no results found in {where}" + (f" ({skipped} search-only skipped)" if skipped else ""))
    found = {r.task for r in rows}
    tasks = [t for t in TASK_ORDER if t in found] + sorted(found - set(TASK_ORDER))
    if args.tasks:
        tasks = [t for t in wanted if t in found]
    methods = list(dict.fromkeys(r.method for r in rows))
    if args.methods:
        methods = [m for name in args.methods for m in (name, name + PAPER_SUFFIX) if m in methods]
    cells = aggregate(rows)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    for fmt in ("md", "tex", "csv"):
        _write(out / f"table2.{fmt}", table2(cells, fmt, methods, tasks))
    baseline = args.baseline if any(m == args.baseline for m in methods) else args.baseline + PAPER_SUFFIX
    for fmt in ("md", "csv"):
        _write(out / f"table3.{fmt}", table3(cells, fmt, methods, tasks, baseline))
    taus, curves = performance_profile(cells, methods, tasks)
    _write(out / "profile.csv", profile_csv(taus, curves))
    plot_profile(taus, curves, out / "profile.png", title=f"performance profile ({len(tasks)} tasks)")
    if args.svg:
        plot_profile(taus, curves, out / "profile.svg", title=f"performance profile ({len(tasks)} tasks)")
    write_html(out / "report.html", cells, methods, tasks, baseline, (out / "profile.png").read_bytes(), args.runs)
    print(f"{len(rows)} results, {len(methods)} methods, {len(tasks)} tasks ({skipped} search-only skipped) -> {out}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: _report(args))


if __name__ == "__main__":
    sys.exit(main())
