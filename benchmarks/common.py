"""What the benchmark scripts share: command-line options, machine description, interleaved timing, tables, JSON.

Every script prints a small table and writes ``benchmarks/results/<name>.json`` (atomically) holding
the machine, the library versions, the thread count, the arguments and the rows.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import resource
import statistics
import time
import warnings
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def parser(doc: str, quick_help: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark has: ``--quick``, ``--repeats``, ``--threads``."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default depends on --quick)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: steadier on a shared machine)")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: elapsed time; cpu: this process's CPU time (steadier when other jobs share the cores)",
    )
    return p


def now() -> float:
    """The benchmark clock: ``time.perf_counter`` (``--clock wall``) or ``time.process_time`` (``--clock cpu``)."""
    return _clock()


_clock = time.perf_counter


def setup(args: argparse.Namespace) -> None:
    """Pin the thread count, choose the clock, silence the warnings Lightning prints on tiny synthetic runs."""
    import torch

    global _clock
    _clock = time.process_time if getattr(args, "clock", "wall") == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)


def machine() -> dict[str, Any]:
    """Where and with what the figures were measured."""
    import torch

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    for package in ("torch", "lightning", "torchmetrics", "numpy", "nb360"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = None
    return info


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleave(loops: dict[str, Callable[[], float]], repeats: int, warmup: bool = True) -> dict[str, list[float]]:
    """Run each loop ``repeats`` times, alternating (and alternating which goes first), so machine noise hits all alike.

    Each loop returns its own measurement (seconds per step, say); a warm-up round runs first and is dropped.
    """
    if warmup:
        for fn in loops.values():
            fn()
    results: dict[str, list[float]] = {name: [] for name in loops}
    names = list(loops)
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            results[name].append(loops[name]())
    return results


def ratio_stats(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float]:
    """Min, median and max of the paired ratios (repeat by repeat)."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    return {"ratio_min": min(ratios), "ratio_median": statistics.median(ratios), "ratio_max": max(ratios)}


def fmt_ratio(row: dict[str, float]) -> str:
    return f"{row['ratio_min']:.3f}/{row['ratio_median']:.3f}/{row['ratio_max']:.3f}"


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """A Markdown table of ``rows``; ``columns`` are ``(header, key, format)``, key ``None`` formats the whole row."""

    def cell(row: dict[str, Any], key: str, spec: str) -> str:
        value = row.get(key)
        if value is None:
            return "-"
        return format(value, spec) if spec else str(value)

    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(cell(row, key, spec) for _, key, spec in columns) + " |")
    return "\n".join(lines)


def write_result(name: str, args: argparse.Namespace, rows: list[dict[str, Any]], **extra: Any) -> Path:
    """Write ``benchmarks/results/<name>.json`` atomically and return its path."""
    from nb360.io import write_json

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        "args": vars(args),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        **extra,
        "rows": rows,
    }
    write_json(path, payload)
    return path
