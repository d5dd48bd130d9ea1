"""A grid of ``train.py`` runs: ``python -m nb360.sweep --tasks all --methods wrn,gaea --seeds 0,1,2``.

Every (task, method, seed) of the grid is one ``train.py`` process, so a run of the sweep
is exactly the run a user would start by hand and writes the same run directory. The
grid can be cut into shards (``--shard i/N``) for any scheduler (a SLURM array, several
machines): shard ``i`` takes every ``N``-th run from the ``i``-th. A run whose
``results.json`` exists is skipped, a run with a checkpoint but no result is resumed
(``--ckpt_path last``), and a run that another sweep process is running is left to it
(one lock file per run). A failing run does not stop the others: its last error line is
reported at the end and in ``sweep-<shard>.json``, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock, Timeout

from nb360.errors import UsageError, run_command
from nb360.io import write_json

__all__ = ["Run", "grid", "shard_of", "main"]

TRAIN = "import sys; from nb360.cli import main; sys.exit(main())"


@dataclass(frozen=True)
class Run:
    task: str
    method: str
    seed: int


@dataclass
class Outcome:
    task: str
    method: str
    seed: int
    status: str  # finished, skipped (done before), inapplicable, running elsewhere, failed
    detail: str = ""
    wall_s: float = 0.0


def _names(values: Sequence[str]) -> list[str]:
    return [name.strip() for value in values for name in str(value).split(",") if name.strip()]


def grid(tasks: Sequence[str], methods: Sequence[str], seeds: Sequence[int]) -> tuple[list[Run], list[Outcome]]:
    """The runs of the grid (task-major order), and the pairs the methods do not apply to (with the reason).

    ``all`` stands for every task that has a DataModule; names and aliases resolve to canonical names.
    """
    from nb360.methods import get_method
    from nb360.tasks import TASKS, get_task

    specs = (
        [s for s in TASKS.values() if s.datamodule is not None]
        if _names(tasks) == ["all"]
        else [get_task(t) for t in _names(tasks)]
    )
    chosen = [get_method(m) for m in _names(methods)]
    if not specs or not chosen or not seeds:
        raise UsageError("a sweep needs at least one task, one method and one seed")
    runs, inapplicable = [], []
    for spec in specs:
        for method in chosen:
            reason = method.applies_to(spec)
            for seed in seeds:
                if reason is None:
                    runs.append(Run(spec.name, method.name, seed))
                else:
                    inapplicable.append(Outcome(spec.name, method.name, seed, "inapplicable", reason))
    return runs, inapplicable


def shard_of(runs: Sequence[Run], shard: str | None) -> list[Run]:
    """Shard ``i/N`` of the runs: every ``N``-th run starting at the ``i``-th (0-based)."""
    if shard is None:
        return list(runs)
    try:
        index, count = (int(part) for part in shard.split("/"))
    except ValueError:
        raise UsageError(f"--shard must look like i/N (e.g. 0/4), not {shard!r}") from None
    if count < 1 or not 0 <= index < count:
        raise UsageError(f"--shard {shard}: need 0 <= i < N")
    return list(runs[index::count])


def _last_line(log: Path) -> str:
    """The run's error line if it printed one, else its last line (train.py ends with the result)."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("nb360: error:")]
    return (errors or lines or ["no output"])[-1]


def _execute(run: Run, output_dir: Path, extra: Sequence[str], log_dir: Path) -> Outcome:
    from nb360.run import run_directory

    run_dir = run_directory(output_dir, run.task, run.method, run.seed)
    if (run_dir / "results.json").is_file():
        return Outcome(**asdict(run), status="skipped", detail="results.json exists")
    lock = FileLock(str(log_dir / f"{run.task}-{run.method}-seed{run.seed}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return Outcome(**asdict(run), status="running elsewhere", detail=str(lock.lock_file))
    try:
        command = [sys.executable, "-c", TRAIN, "--task", run.task, "--method", run.method, "--seed", str(run.seed),
                   "--output_dir", str(output_dir), *extra]  # fmt: skip
        if (run_dir / "checkpoints" / "last.ckpt").is_file() or any(run_dir.glob("*/checkpoints/last.ckpt")):
            command += ["--ckpt_path", "last"]
        log = log_dir / f"{run.task}-{run.method}-seed{run.seed}.log"
        start = time.perf_counter()
        with log.open("w") as out:
            code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT)
        wall = round(time.perf_counter() - start, 3)
        if code == 0:
            return Outcome(**asdict(run), status="finished", detail=_last_line(log), wall_s=wall)
        return Outcome(**asdict(run), status="failed", detail=f"exit {code}: {_last_line(log)} (log: {log})", wall_s=wall)
    finally:
        lock.release()


def _read_config(path: str) -> Any:
    try:
        return yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"sweep file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise UsageError(f"{path} is not valid YAML ({str(err).splitlines()[0]})") from None


def sweep(args: argparse.Namespace) -> list[Outcome]:
    settings = _read_config(args.config) if args.config else {}
    if not isinstance(settings, dict):
        raise UsageError(f"{args.config}: a sweep file is a mapping with tasks, methods, seeds, args and task_args")
    tasks = args.tasks or settings.get("tasks")
    methods = args.methods or settings.get("methods")
    seeds = args.seeds or settings.get("seeds", [0])
    if not tasks or not methods:
        raise UsageError("name the tasks and methods (--tasks, --methods, or a --config file)")
    try:
        seed_list = [int(s) for s in _names([str(s) for s in (seeds if isinstance(seeds, list) else [seeds])])]
    except ValueError:
        raise UsageError(f"seeds must be integers, not {seeds!r}") from None
    runs, outcomes = grid(
        [tasks] if isinstance(tasks, str) else tasks, [methods] if isinstance(methods, str) else methods, seed_list
    )
    mine = shard_of(runs, args.shard)
    task_args = settings.get("task_args") or {}
    output_dir = Path(args.output_dir)
    log_dir = output_dir / "sweep-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    for number, run in enumerate(mine, 1):
        label = f"[{number}/{len(mine)}] {run.task} / {run.method} / seed {run.seed}"
        if args.dry_run:
            print(f"{label}: would run")
            continue
        print(f"{label} ...", flush=True)
        extra = [*map(str, settings.get("args", [])), *map(str, task_args.get(run.task, [])), *args.train_args]
        outcome = _execute(run, output_dir, extra, log_dir)
        print(f"{label}: {outcome.status}: {outcome.detail}", flush=True)
        outcomes.append(outcome)
    if not args.dry_run:
        summary = {"shard": args.shard or "0/1", "runs": [asdict(o) for o in outcomes]}
        write_json(output_dir / f"sweep-{(args.shard or '0/1').replace('/', 'of')}.json", summary)
    return outcomes


def _report(outcomes: Sequence[Outcome]) -> int:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    print("sweep: " + ", ".join(f"{n} {status}" for status, n in counts.items()))
    failed = [o for o in outcomes if o.status == "failed"]
    for outcome in failed:
        print(f"  failed: {outcome.task} / {outcome.method} / seed {outcome.seed}: {outcome.detail}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nb360.sweep",
        description="Run a grid of train.py runs (tasks x methods x seeds), sequentially or as one shard of it.",
        epilog="Arguments after -- go to every train.py run, e.g. -- --trainer.max_epochs 3",
    )
    parser.add_argument("--tasks", nargs="+", help="task names or aliases (comma or space separated), or all")
    parser.add_argument("--methods", nargs="+", help="method names (comma or space separated)")
    parser.add_argument("--seeds", nargs="+", help="seeds (comma or space separated; default 0)")
    parser.add_argument(
        "--config", help="YAML file: tasks, methods, seeds, args (train.py arguments of every run), task_args (per task)"
    )
    parser.add_argument("--shard", help="i/N: run every N-th run of the grid from the i-th (0-based)")
    parser.add_argument("--output_dir", default="runs", help="root of the run directories (as train.py's --output_dir)")
    parser.add_argument("--dry_run", action="store_true", help="list the runs of this shard and stop")
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, train_args = argv[:cut], argv[cut + 1 :]
    args = parser.parse_args(argv)
    args.train_args = train_args
    outcomes: list[Outcome] = []
    status = run_command(lambda: outcomes.extend(sweep(args)))
    return status or _report(outcomes)


if __name__ == "__main__":
    sys.exit(main())
