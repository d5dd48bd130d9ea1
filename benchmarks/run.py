"""Run the benchmark suite and write ``benchmarks/results/summary.md`` with its tables.

Each benchmark runs in its own process (``--quick``, ``--threads`` are passed on) and writes its JSON under
``benchmarks/results/``; the summary is made from those files.

    python benchmarks/run.py --quick     # a few minutes on a 2-core machine
    python benchmarks/run.py             # the reference settings (tens of minutes on a CPU)
    python benchmarks/run.py --only train_loop memory
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULTS, machine  # noqa: E402

from nb360.io import atomic_open  # noqa: E402

BENCHMARKS = {
    "train_loop": "training step: nb360's Lightning loop (train.py) / a plain PyTorch loop",
    "search_step": "PC-DARTS search step: nb360's Lightning module / a plain PyTorch loop",
    "input_pipeline": "training loader samples/s / model samples/s, every task",
    "memory": "peak memory of one training or search step, each case in a fresh process",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="each benchmark's --quick")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="see the benchmarks' --clock")
    p.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), default=list(BENCHMARKS))
    args = p.parse_args(argv)
    failed, seconds = [], {}
    for name in args.only:
        command = [sys.executable, str(HERE / f"{name}.py"), "--threads", str(args.threads), "--clock", args.clock]
        command += ["--quick"] if args.quick else []
        print(f"== {name}: {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        if subprocess.run(command).returncode:
            failed.append(name)
        seconds[name] = time.perf_counter() - start
    write_summary(args, seconds)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def write_summary(args: argparse.Namespace, seconds: dict[str, float]) -> Path:
    info = machine()
    lines = [
        "# Benchmark summary",
        "",
        f"`python benchmarks/run.py{' --quick' if args.quick else ''} --threads {args.threads} --clock {args.clock}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {info['platform']}, {info['cpu_count']} CPUs, "
        f"torch {info['torch']}, lightning {info['lightning']}, CUDA: {info['cuda'] or 'none'}.",
        "",
    ]
    for name in BENCHMARKS:
        path = RESULTS / f"{name}.json"
        lines += [f"## {name}", "", BENCHMARKS[name] + ".", ""]
        if not path.is_file():
            lines += ["(no results)", ""]
            continue
        result = json.loads(path.read_text())
        took = f", {seconds[name]:.0f} s" if name in seconds else ""
        lines += [f"{result['date']}, args {json.dumps(result['args'])}{took}.", ""]
        lines += [importlib.import_module(name).format_table(result["rows"]), ""]
        if result.get("note"):
            lines += [result["note"] + ".", ""]
    out = RESULTS / "summary.md"
    with atomic_open(out, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    sys.exit(main())
