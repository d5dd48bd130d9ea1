"""``python -m nb360.search.tabular``: NATS-Bench's multi-trial searches on a tabular benchmark, repeated and summarised.

    python -m nb360.search.tabular --algo rea random --benchmark data/nb201/NATS-tss-v1_0-daa55.nb360 \\
        --task ninapro --budget_seconds 40 --runs 500 --out runs/ninapro

Writes ``<out>/<algo>/{results.json,trajectory.csv,trajectory.npz,trajectory.png}`` per algorithm, and
``<out>/compare.png`` when several run together (``--compare DIR ...`` plots finished outputs). No PyTorch is
imported. See ``nb360.search.multitrial`` for the algorithms and the time accounting.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nb360.errors import UsageError, run_command

__all__ = ["main", "TASK_KEYS"]

#: task name -> the dataset keys a store may use for it, in order of preference
TASK_KEYS = {"ninapro": ("ninapro",), "darcy": ("darcyflow", "darcy"), "darcyflow": ("darcyflow", "darcy")}
ALGOS = ("random", "rea", "reinforce", "hyperband", "bohb")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m nb360.search.tabular", description=__doc__.split("\n")[0])
    p.add_argument("--algo", nargs="+", default=None, help=f"one or more of: {', '.join(ALGOS)}")
    p.add_argument("--benchmark", help="an nb360-tabular store or a NATS file")
    p.add_argument("--task", help="ninapro, darcy, or any dataset key of the store (not needed for NAS-Bench-101)")
    p.add_argument("--budget_seconds", "--budget-seconds", type=float, help="simulated seconds per search (NB360: 40 / 230)")
    p.add_argument("--runs", type=int, default=500)
    p.add_argument("--hp", help="the search protocol (default: '12' if stored, else the only/shortest hp)")
    p.add_argument("--report_hp", "--report-hp", help="the protocol of the reported value (default: '200' if stored)")
    p.add_argument("--search_set", "--search-set", help="default: x-valid if stored, else ori-test")
    p.add_argument("--report_set", "--report-set", help="default: x-test if stored, else ori-test")
    p.add_argument("--epochs", "--max_budget", "--max-budget", type=int, dest="epochs", help="epochs of a full evaluation")
    p.add_argument("--min_budget", "--min-budget", type=float, default=1.0, help="Hyperband/BOHB smallest budget (epochs)")
    p.add_argument("--eta", type=float, default=3.0)
    p.add_argument("--seed_mode", "--seed-mode", choices=("random", "mean"), default="random")
    p.add_argument("--report_every", "--report-every", type=float, default=1.0, help="simulated seconds between reports")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/tabular-search")
    p.add_argument("--compare", nargs="+", metavar="DIR", help="plot finished outputs together into <out>/compare.png")
    p.add_argument("--no_progress", "--no-progress", action="store_true")
    g = p.add_argument_group("algorithm hyperparameters (NATS-Bench's values by default)")
    g.add_argument("--population_size", type=int, default=10)
    g.add_argument("--sample_size", type=int, default=3)
    g.add_argument("--cycles", type=int, default=None, help="REA: cap on children (the reference ignores its 200)")
    g.add_argument("--learning_rate", type=float, default=0.01)
    g.add_argument("--ema_momentum", type=float, default=0.9)
    g.add_argument("--num_samples", type=int, default=4)
    g.add_argument("--random_fraction", type=float, default=0.0)
    g.add_argument("--bandwidth_factor", type=float, default=3.0)
    g.add_argument("--min_bandwidth", type=float, default=0.3)
    g.add_argument(
        "--kde_levels", choices=("data", "radix"), default="data", help="BOHB kernel levels: statsmodels' (data) or the radix"
    )
    return p


def _hyperparameters(algo: str, args: argparse.Namespace) -> dict[str, Any]:
    budgets = {"min_budget": args.min_budget, "eta": args.eta}
    return {
        "random": {},
        "rea": {"population_size": args.population_size, "sample_size": args.sample_size, "cycles": args.cycles},
        "reinforce": {"learning_rate": args.learning_rate, "ema_momentum": args.ema_momentum},
        "hyperband": budgets,
        "bohb": {
            **budgets,
            "num_samples": args.num_samples,
            "random_fraction": args.random_fraction,
            "bandwidth_factor": args.bandwidth_factor,
            "min_bandwidth": args.min_bandwidth,
            "kde_levels": args.kde_levels,
        },
    }[algo]


def _dataset(bench: Any, task: str) -> str:
    for key in TASK_KEYS.get(task, (task,)):
        if key in bench.datasets:
            return key
    raise UsageError(f"task {task!r} is not in this benchmark; it holds: {', '.join(bench.datasets)}")


def _pick(choices: list[str], preferred: Sequence[str], what: str, given: str | None) -> str:
    if given is not None:
        if given not in choices:
            raise UsageError(f"unknown {what} {given!r}; choose one of: {', '.join(choices)}")
        return given
    return next((c for c in preferred if c in choices), choices[0])


def _nats_evaluator(bench: Any, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """A NATS-format benchmark (NB201 topology or size space): the task's dataset, its hps and sets."""
    from nb360.search.multitrial.tabular import TabularEvaluator

    if args.task is None:
        raise UsageError("missing --task")
    dataset = _dataset(bench, args.task)
    hps = sorted(bench.hps(dataset), key=lambda h: (not h.isdigit(), int(h) if h.isdigit() else 0, h))
    hp = _pick(hps, ("12",), "hp", args.hp)
    report_hp = _pick(hps, ("200", "90"), "report hp", args.report_hp)
    search_set = _pick(bench.eval_sets(dataset, hp), ("x-valid", "ori-test"), "search set", args.search_set)
    report_set = _pick(bench.eval_sets(dataset, report_hp), ("x-test", "ori-test"), "report set", args.report_set)
    evaluator = TabularEvaluator(bench, dataset, hp, search_set, report_set, report_hp, args.seed_mode, args.epochs)
    settings = {"dataset": dataset, "hp": hp, "search_set": search_set, "report_hp": report_hp, "report_set": report_set}
    return evaluator, settings


def _nb101_evaluator(bench: Any, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """NAS-Bench-101: validation accuracy at ``--epochs`` (4/12/36/108) searched, mean 108-epoch test accuracy reported."""
    from nb360.nb101.api import NB101Benchmark
    from nb360.nb101.search_space import NB101Evaluator

    evaluator = NB101Evaluator(NB101Benchmark(bench.store), max_budget=args.epochs or 108, seed_mode=args.seed_mode)
    return evaluator, {"dataset": "nb101", "search_set": "validation", "report_epochs": 108, "report_set": "test"}


#: the evaluator of a store's space (any other space: the NATS-format evaluator)
EVALUATORS = {"nb101": _nb101_evaluator}


def _search(args: argparse.Namespace) -> None:
    from nb360.search.multitrial import ALGORITHMS
    from nb360.search.multitrial.runner import plot, run_searches, summarise, write_outputs
    from nb360.tabular import create

    missing = [name for name in ("algo", "benchmark", "budget_seconds") if getattr(args, name) is None]
    if missing:
        raise UsageError(f"missing {', '.join('--' + m for m in missing)}")
    unknown = [a for a in args.algo if a not in ALGORITHMS]
    if unknown:
        raise UsageError(f"unknown algorithm {unknown[0]!r}; choose from: {', '.join(ALGOS)}")
    if not args.budget_seconds > 0:
        raise UsageError(f"--budget_seconds must be positive, not {args.budget_seconds:g}")
    if args.runs < 1 or not args.report_every > 0:
        raise UsageError("--runs must be at least 1 and --report_every positive")
    bench = create(args.benchmark, progress=not args.no_progress)
    evaluator, settings = EVALUATORS.get(bench.space.name, _nats_evaluator)(bench, args)
    space = evaluator.space()
    best_index, best_value = evaluator.best_report()
    settings = {
        "benchmark": str(args.benchmark),
        "space": bench.space.name,
        **settings,
        "metric": evaluator.metric,
        "lower_is_better": evaluator.lower_is_better,
        "epochs": evaluator.max_budget,
        "seed_mode": args.seed_mode,
        "budget_seconds": args.budget_seconds,
        "runs": args.runs,
        "seed": args.seed,
        "report_every": args.report_every,
        "searchable_archs": len(space) if hasattr(space, "__len__") else None,  # NB101: a predicate, not a list
        "table_best": {"index": best_index, "arch": bench.arch(best_index), "value": best_value},
    }
    out, summaries = Path(args.out), {}
    for algo in args.algo:
        results = run_searches(
            algo,
            ALGORITHMS[algo],
            space,
            evaluator,
            args.budget_seconds,
            runs=args.runs,
            seed=args.seed,
            report_every=args.report_every,
            hyperparameters=_hyperparameters(algo, args),
            progress=not args.no_progress,
        )
        summary = summaries[algo] = summarise(results, best_value)
        write_outputs(out / algo if len(args.algo) > 1 else out, results, summary, settings)
        final = summary["final"]
        print(
            f"{algo}: final {evaluator.metric} {final['value_mean']:.4f} ± {final['value_std']:.4f}, "
            f"regret {final['regret_mean']:.4f} ± {final['regret_std']:.4f} "
            f"({summary['trials']['mean']:.1f} trials/run, {args.runs} runs, {results.wall_seconds:.2f} s)"
        )
    if len(args.algo) > 1:
        plot(summaries, out / "compare.png", settings)
    print(f"wrote {out}")


def _compare(args: argparse.Namespace) -> None:
    from nb360.search.multitrial.runner import compare

    for directory in args.compare:
        if not (Path(directory) / "results.json").is_file():
            raise UsageError(f"{directory} holds no results.json")
    out = Path(args.out)
    compare([Path(d) for d in args.compare], out / "compare.png")
    print(f"wrote {out / 'compare.png'}")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return run_command(lambda: _compare(args) if args.compare else _search(args))


if __name__ == "__main__":
    sys.exit(main())
