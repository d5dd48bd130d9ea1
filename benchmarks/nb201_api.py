"""nb360's tabular store and API versus ``nats_bench`` on a NAS-Bench-201 file the size of NB360's NinaPro benchmark.

Builds a synthetic but format-exact NATS tss benchmark (all 15,625 cells, hp '200', 200
epochs, dataset ``ninapro``, seed 777, eval set ``ori-test``; plausible random curves and
NATS-style pseudo-times) with nb360's exporter, as one ``.pickle.pbz2`` file and as a
fast-mode directory, converts the file to an ``nb360-tabular`` store, then measures each
library in its own subprocess:

* load time;
* (a) a full scan: the final ``ori-test`` accuracy of every architecture (nats_bench: a loop
  over ``get_more_info``, in its normal and fast mode; nb360: a loop over ``score()`` and one
  vectorised ``scores()`` call);
* (b) 10^5 random single queries: ``get_more_info`` at the last epoch (with nb360's
  ``score()``) and at a random epoch (both libraries, mean over seeds: ``is_random=False``);
  every timing includes the first call;
* the memory of each of these four phases: peak RSS and peak anonymous memory (``RssAnon``),
  above the process's memory once the library is imported (see :class:`PhaseMemory`).

nb360's worker takes about a second, so a burst of load on the machine moves its figures a
lot: it runs ``--repeats`` times (5), each in a fresh process and including the first
call, and the table shows the median of each figure (every run is in the JSON file).
nats_bench's workers take minutes and run once.

Every library's answers are checked against each other. Prints a table and the ratios and
writes a JSON file.

    python benchmarks/nb201_api.py --out benchmarks/results/nb201_api.json          # full size, a few minutes
    python benchmarks/nb201_api.py --archs 200 --epochs 5 --queries 1000 --out /tmp/x.json   # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

DATASET, HP, SEED, EVAL = "ninapro", "200", 777, "ori-test"


# ------------------------------------------------------------------------------------------- data
def build_store(path: Path, archs: int, epochs: int, seed: int = 0) -> Path:
    """A synthetic NinaPro-like store: ``archs`` evaluated cells (all 15,625 by default), one run each."""
    from nb360.spaces import get_space
    from nb360.tabular import RunRecord, StoreBuilder

    space = get_space("tss")
    rng = np.random.default_rng(seed)
    indexes = np.arange(len(space)) if archs >= len(space) else np.sort(rng.choice(len(space), archs, replace=False))
    builder = StoreBuilder("tss")
    steps = np.arange(epochs)
    for index in indexes.tolist():
        final_test = rng.uniform(30.0, 92.0)
        final_train = min(99.9, final_test + rng.uniform(2.0, 12.0))
        rate = rng.uniform(0.02, 0.15) * 200 / max(epochs, 1)
        shape = 1.0 - np.exp(-rate * (steps + 1))
        test_acc = np.clip(final_test * shape + rng.normal(0.0, 1.0, epochs), 0.0, 100.0)
        train_acc = np.clip(final_train * shape + rng.normal(0.0, 0.5, epochs), 0.0, 100.0)
        train_time, test_time = rng.uniform(0.5, 6.0), rng.uniform(0.05, 0.6)  # NATS pseudo-times: constant per run
        params = rng.uniform(0.073, 1.53)
        builder.add(
            RunRecord(
                arch_index=index,
                dataset=DATASET,
                hp=HP,
                seed=SEED,
                epochs=epochs,
                train={
                    "loss": 2.9 * (1.0 - train_acc / 100.0) + rng.uniform(0.0, 0.05, epochs),
                    "acc1": train_acc,
                    "acc5": np.minimum(100.0, train_acc + rng.uniform(5.0, 20.0)),
                    "time": np.full(epochs, train_time),
                },
                evals={
                    EVAL: {
                        "loss": 2.9 * (1.0 - test_acc / 100.0) + rng.uniform(0.0, 0.1, epochs),
                        "acc1": test_acc,
                        "time": np.full(epochs, test_time),
                    }
                },
                params=params,
                flops=params * 140.0,
                latency=[rng.uniform(0.005, 0.03)],
                arch_config={"channel": 16, "num_cells": 5, "arch_str": space.arch(index), "class_num": 18},
                seed_label=f"{SEED:04d}",
            )
        )
    return builder.write(path, source={"file": "synthetic", "sha256": None}, overwrite=True)


# ------------------------------------------------------------------------------------------- memory
def _status_kib() -> dict[str, int]:
    """``VmRSS``, ``VmHWM`` (peak RSS) and ``RssAnon`` of this process from /proc, in KiB (zeros where there is no /proc)."""
    out = {"VmRSS": 0, "VmHWM": 0, "RssAnon": 0}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key = line.split(":", 1)[0]
                if key in out:
                    out[key] = int(line.split()[1])
    except OSError:
        out["VmRSS"] = out["VmHWM"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return out


class PhaseMemory:
    """Peak RSS and peak anonymous memory of each phase of a run, in MiB above the process's memory after the import.

    RSS counts the touched pages of memory-mapped files (page cache, shared and reclaimable)
    as well as the process's own memory; ``RssAnon`` only the latter (heap, Python objects,
    arrays). The RSS peak is the kernel's ``VmHWM``, reset at the start of each phase
    through ``/proc/self/clear_refs`` (where that is not allowed, it is the peak so far:
    ``rss_peak_reset`` False); Linux keeps no peak of ``RssAnon``, so a thread samples it
    every 5 ms (and at both ends of the phase).
    """

    def __init__(self) -> None:
        status = _status_kib()
        self.base_rss, self.base_anon = status["VmRSS"], status["RssAnon"]
        self.peak_anon = status["RssAnon"]
        self.reset_ok = True
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_anon = max(self.peak_anon, _status_kib()["RssAnon"])

    def start(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM to the current RSS
        except OSError:
            self.reset_ok = False
        self.peak_anon = _status_kib()["RssAnon"]

    def end(self) -> dict[str, float]:
        status = _status_kib()
        anon = max(self.peak_anon, status["RssAnon"])
        return {"rss_peak_mib": (status["VmHWM"] - self.base_rss) / 1024, "anon_peak_mib": (anon - self.base_anon) / 1024}

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


PHASES = ("load", "scan", "query", "query_epoch")
PHASE_NAMES = {
    "load": "load",
    "scan": "(a) full scan",
    "query": "(b) queries, last epoch",
    "query_epoch": "(b) queries, random epoch",
}


# ------------------------------------------------------------------------------------------- workers
def _timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def worker(kind: str, path: str, queries: str) -> dict[str, Any]:
    """Run one library's measurements in this process and return them (timings in s, memory per phase in MiB).

    The timed loops discard the answers (so that the memory figures are the library's own);
    the answers compared between libraries are collected afterwards.
    """
    q = np.load(queries)
    indexes, epochs = q["indexes"].tolist(), q["epochs"].tolist()
    evaluated = q["evaluated"].tolist()
    pairs = list(zip(indexes, epochs, strict=True))
    result: dict[str, Any] = {"kind": kind}
    start = time.perf_counter()
    if kind == "ours":
        from nb360.tabular import create
    else:
        import nats_bench
    result["import_s"] = time.perf_counter() - start
    memory = PhaseMemory()
    result["baseline_rss_mib"], result["baseline_anon_mib"] = memory.base_rss / 1024, memory.base_anon / 1024
    result["memory"] = phases = {}

    def phase(name: str, fn: Any) -> Any:
        memory.start()
        out = fn()
        phases[name] = memory.end()
        return out

    if kind == "ours":
        key, time_key = f"{EVAL}-accuracy", "train-all-time"

        def scan() -> None:
            result["scan_loop_s"], _ = _timed(lambda: [bench.score(i, DATASET, HP, EVAL) for i in evaluated])
            result["scan_vector_s"], _ = _timed(lambda: bench.scores(DATASET, HP, EVAL))
            result["scan_vector_warm_s"], _ = _timed(lambda: bench.scores(DATASET, HP, EVAL))

        def query() -> None:
            start = time.perf_counter()
            for i in indexes:
                bench.get_more_info(i, DATASET, HP)
            result["query_s"] = time.perf_counter() - start
            start = time.perf_counter()
            for i in indexes:
                bench.score(i, DATASET, HP, EVAL)
            result["query_score_s"] = time.perf_counter() - start

        def query_epoch() -> None:
            start = time.perf_counter()
            for i, e in pairs:
                bench.get_more_info(i, DATASET, HP, iepoch=e)
            result["query_epoch_s"] = time.perf_counter() - start

        result["load_s"], bench = phase("load", lambda: _timed(lambda: create(path)))
        phase("scan", scan)
        phase("query", query)
        phase("query_epoch", query_epoch)
        scan_values = bench.scores(DATASET, HP, EVAL)[evaluated]
        assert np.array_equal(scan_values, [bench.score(i, DATASET, HP, EVAL) for i in evaluated])
        infos = [bench.get_more_info(i, DATASET, HP) for i in indexes]
        infos_e = [bench.get_more_info(i, DATASET, HP, iepoch=e) for i, e in pairs]
    else:
        fast = kind == "nats-fast"
        key, time_key = "valtest-accuracy", "train-all-time"

        def scan() -> None:
            result["scan_loop_s"], _ = _timed(
                lambda: [api.get_more_info(i, DATASET, hp=HP, is_random=False)[key] for i in evaluated]
            )

        def query() -> None:
            start = time.perf_counter()
            for i in indexes:
                api.get_more_info(i, DATASET, hp=HP, is_random=False)
            result["query_s"] = time.perf_counter() - start

        def query_epoch() -> None:
            start = time.perf_counter()
            for i, e in pairs:
                api.get_more_info(i, DATASET, iepoch=e, hp=HP, is_random=False)
            result["query_epoch_s"] = time.perf_counter() - start

        result["load_s"], api = phase(
            "load", lambda: _timed(lambda: nats_bench.create(path, "tss", fast_mode=fast, verbose=False))
        )
        phase("scan", scan)
        phase("query", query)
        phase("query_epoch", query_epoch)
        scan_values = [api.get_more_info(i, DATASET, hp=HP, is_random=False)[key] for i in evaluated]
        infos = [api.get_more_info(i, DATASET, hp=HP, is_random=False) for i in indexes]
        infos_e = [api.get_more_info(i, DATASET, iepoch=e, hp=HP, is_random=False) for i, e in pairs]
    memory.close()
    result["rss_peak_reset"] = memory.reset_ok
    result["scan"] = [float(v) for v in scan_values]
    result["query_values"] = [[info[key], info[time_key]] for info in infos]
    result["query_epoch_values"] = [[info[key], info[time_key]] for info in infos_e]
    return result


def run_worker(kind: str, path: Path, queries: Path) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", kind, "--path", str(path), "--queries-file", str(queries)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(runs: list[Any]) -> Any:
    """The element-wise median of runs' results (numbers; other values from the first run)."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: _median([r[k] for r in runs]) for k in first}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return statistics.median(runs)
    return first


def run_workers(kind: str, path: Path, queries: Path, repeats: int) -> dict[str, Any]:
    """``repeats`` runs of one library's worker, each in a fresh process: the median of every figure, and the runs' figures."""
    runs = [run_worker(kind, path, queries) for _ in range(repeats)]
    answers = ("scan", "query_values", "query_epoch_values")
    if any(r[k] != runs[0][k] for r in runs for k in answers):
        raise RuntimeError(f"{kind}: runs of the same queries gave different answers")
    result = {**_median([{k: v for k, v in r.items() if k not in answers} for r in runs]), **{k: runs[0][k] for k in answers}}
    if repeats > 1:
        result["runs"] = [{k: v for k, v in r.items() if k not in answers} for r in runs]
    return result


# ------------------------------------------------------------------------------------------- report
def _fmt_s(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1e-3:
        return f"{value * 1e6:.1f} us"
    if value < 1:
        return f"{value * 1e3:.1f} ms"
    return f"{value:.2f} s"


def _fmt_mib(value: float) -> str:
    return f"{value:.1f}" if abs(value) < 10 else f"{value:.0f}"


def _ratio(theirs: float, ours: float) -> str:
    if ours < 0.05:  # at the resolution of /proc
        return f">{theirs / 0.05:.0f}x"
    return f"{theirs / ours:.1f}x" if theirs < 10 * ours else f"{theirs / ours:.0f}x"


def report(results: dict[str, dict[str, Any]], n_scan: int, n_queries: int) -> list[str]:
    cols = [k for k in ("nats", "nats-fast", "ours") if k in results]
    names = {"nats": "nats_bench", "nats-fast": "nats_bench fast_mode", "ours": "nb360"}
    rows = [
        ("import", lambda r: _fmt_s(r["import_s"])),
        ("load (create)", lambda r: _fmt_s(r["load_s"])),
        (f"(a) full scan, loop ({n_scan} archs)", lambda r: _fmt_s(r["scan_loop_s"])),
        ("(a) full scan, vectorised scores()", lambda r: _fmt_s(r.get("scan_vector_s"))),
        ("(a) ... again (warm)", lambda r: _fmt_s(r.get("scan_vector_warm_s"))),
        (f"(b) get_more_info, last epoch, per call ({n_queries} random calls)", lambda r: _fmt_s(r["query_s"] / n_queries)),
        ("(b) get_more_info, random epoch, per call", lambda r: _fmt_s(r["query_epoch_s"] / n_queries)),
        ("(b) score(), per call", lambda r: _fmt_s(r["query_score_s"] / n_queries) if "query_score_s" in r else "-"),
        ("memory after import (RSS / anon), MiB", lambda r: f"{r['baseline_rss_mib']:.0f} / {r['baseline_anon_mib']:.0f}"),
    ]
    for p in PHASES:
        rows.append(
            (
                f"peak RSS / anon above that: {PHASE_NAMES[p].replace('queries', f'{n_queries} queries')}",
                lambda r, p=p: " / ".join(_fmt_mib(v) for v in r["memory"][p].values()),
            )
        )
    width = max(len(label) for label, _ in rows)
    lines = [f"{'':{width}}  " + "  ".join(f"{names[c]:>21}" for c in cols)]
    for label, cell in rows:
        lines.append(f"{label:{width}}  " + "  ".join(f"{cell(results[c]):>21}" for c in cols))
    ours = results.get("ours")
    if ours is not None:
        lines.append("")
        for c in cols:
            if c == "ours":
                continue
            r = results[c]
            ratios = [
                f"load {r['load_s'] / ours['load_s']:.0f}x",
                f"full scan: loop {r['scan_loop_s'] / ours['scan_loop_s']:.0f}x, "
                f"vectorised {r['scan_loop_s'] / ours['scan_vector_s']:.0f}x",
                f"get_more_info {r['query_s'] / ours['query_s']:.0f}x "
                f"(random epoch {r['query_epoch_s'] / ours['query_epoch_s']:.1f}x)",
                f"score() vs get_more_info {r['query_s'] / ours['query_score_s']:.0f}x",
            ]
            lines.append(f"nb360 vs {names[c]}: " + ", ".join(ratios))
            memory = [
                f"{p} {_ratio(r['memory'][p]['rss_peak_mib'], ours['memory'][p]['rss_peak_mib'])}"
                f" / {_ratio(r['memory'][p]['anon_peak_mib'], ours['memory'][p]['anon_peak_mib'])}"
                for p in PHASES
            ]
            lines.append(f"  less memory than {names[c]} (peak RSS / anon per phase): " + ", ".join(memory))
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", type=int, default=15625, help="evaluated architectures (default all 15,625)")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the results")
    parser.add_argument("--workdir", type=Path, default=None, help="where the files are built (default: a temporary directory)")
    parser.add_argument("--no-nats", action="store_true", help="skip nats_bench (automatic if it is not installed)")
    parser.add_argument("--no-fast-mode", action="store_true", help="skip nats_bench's fast mode")
    parser.add_argument("--compresslevel", type=int, default=9, help="bz2 level of the NATS files (NATS uses 9)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="runs of nb360's worker (fresh processes); the table shows medians"
    )
    parser.add_argument("--worker", choices=("nats", "nats-fast", "ours"), help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--queries-file", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.path, args.queries_file)))
        return 0

    from nb360.tabular import Store, export_nats, import_nats

    try:
        import nats_bench  # noqa: F401

        have_nats = not args.no_nats
    except ImportError:
        have_nats = False
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        timings: dict[str, float] = {}
        timings["build_store_s"], source = _timed(lambda: build_store(work / "synthetic.nb360", args.archs, args.epochs))
        store = Store.open(source)
        nats_file = work / "NATS-tss-v1_0-synth.pickle.pbz2"
        nats_dir = work / "NATS-tss-v1_0-synth-simple"
        timings["export_file_s"], _ = _timed(
            lambda: export_nats(store, nats_file, compresslevel=args.compresslevel, progress=False)
        )
        if have_nats and not args.no_fast_mode:
            timings["export_dir_s"], _ = _timed(
                lambda: export_nats(store, nats_dir, fast_mode=True, compresslevel=args.compresslevel, progress=False)
            )
        timings["import_s"], ours = _timed(lambda: import_nats(nats_file, work / "imported.nb360", progress=False))
        sizes = {
            "nats_file_mib": nats_file.stat().st_size / 2**20,
            "store_mib": sum(p.stat().st_size for p in ours.rglob("*") if p.is_file()) / 2**20,
        }
        evaluated = np.asarray(Store.open(ours).groups[(DATASET, HP)].archs)
        rng = np.random.default_rng(1)
        queries = work / "queries.npz"
        np.savez(
            queries,
            indexes=rng.choice(evaluated, args.queries),
            epochs=rng.integers(0, args.epochs, args.queries),
            evaluated=evaluated,
        )
        results = {"ours": run_workers("ours", ours, queries, max(args.repeats, 1))}
        if have_nats:
            results["nats"] = run_worker("nats", nats_file, queries)
            if not args.no_fast_mode:
                results["nats-fast"] = run_worker("nats-fast", nats_dir, queries)
    # every library must give the same numbers
    agree = {}
    for kind, r in results.items():
        if kind == "ours":
            continue
        agree[kind] = {
            "scan": r["scan"] == results["ours"]["scan"],
            "queries": r["query_values"] == results["ours"]["query_values"],
            "queries_random_epoch": r["query_epoch_values"] == results["ours"]["query_epoch_values"],
        }
    for r in results.values():
        del r["scan"], r["query_values"], r["query_epoch_values"]
    lines = report(results, len(evaluated), args.queries)
    print(
        f"NB201 API benchmark: {len(evaluated)} evaluated cells x {args.epochs} epochs, {args.queries} queries; "
        f"nb360: the median of {max(args.repeats, 1)} runs, nats_bench: one run"
    )
    print(
        f"NATS file {sizes['nats_file_mib']:.1f} MiB (bz2 level {args.compresslevel}); nb360 store {sizes['store_mib']:.1f} MiB; "
        + ", ".join(f"{k} {_fmt_s(v)}" for k, v in timings.items())
    )
    print("\n".join(lines))
    print(f"answers agree: {agree if agree else 'nats_bench not run'}")
    document = {
        "benchmark": "nb201_api",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "archs": len(evaluated),
        "epochs": args.epochs,
        "queries": args.queries,
        "repeats": {"ours": max(args.repeats, 1), "nats": 1, "nats-fast": 1},
        "sizes": sizes,
        "timings": timings,
        "results": results,
        "agree": agree,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
        "table": lines,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    failed = [k for k, v in agree.items() if not all(v.values())]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
