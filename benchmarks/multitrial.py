"""Time the multi-trial searches (random, REA, REINFORCE, Hyperband, BOHB) on a synthetic full NB201 store.

    python benchmarks/multitrial.py --out multitrial.json        # about a minute on a 2-core VM

Builds a synthetic store of all 15,625 NB201 cells on a NinaPro-like dataset with hp '12' (12 epochs, the
search protocol) and hp '200' (the reported one; ``--report_epochs`` shrinks it), one seed each. Accuracies
depend smoothly on the cell (an additive score per edge operation, plus noise) so that searches have
something to find; per-epoch training times are 0.003-0.03 s and evaluation times 0.001-0.005 s, so a 40 s
search sees a about 200 full evaluations, as NB360's NinaPro budget does. Then every algorithm runs
``--runs`` searches of ``--budget_seconds`` in this process (one core), and the table gives the wall time,
the time per 100 runs and per trial, and the trials per run; the JSON holds the same.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATASET, SEED, EVAL = "ninapro", 777, "ori-test"


def build_store(path: Path, report_epochs: int = 200, seed: int = 0) -> Path:
    """All 15,625 NB201 cells with hp '12' (12 epochs) and hp '200' (``report_epochs`` epochs), one run each."""
    from nb360.spaces import get_space
    from nb360.tabular import RunRecord, StoreBuilder

    space = get_space("tss")
    rng = np.random.default_rng(seed)
    op_value = rng.uniform(0.0, 8.0, size=(space.num_decisions, max(space.radices)))
    codes = space.codes_array.astype(np.int64)
    quality = op_value[np.arange(space.num_decisions), codes].sum(axis=1)  # (15625,)
    final = 40.0 + 50.0 * (quality - quality.min()) / (quality.max() - quality.min())
    builder = StoreBuilder("tss")
    for index in range(len(space)):
        train_time, eval_time = rng.uniform(0.003, 0.03), rng.uniform(0.001, 0.005)
        for hp, epochs in (("12", 12), ("200", report_epochs)):
            target = final[index] - (4.0 if hp == "12" else 0.0) + rng.normal(0.0, 1.0)
            shape = 1.0 - np.exp(-4.0 * np.arange(1, epochs + 1) / epochs)
            acc = np.clip(target * shape + rng.normal(0.0, 0.5, epochs), 0.0, 100.0)
            builder.add(
                RunRecord(
                    arch_index=index,
                    dataset=DATASET,
                    hp=hp,
                    seed=SEED,
                    epochs=epochs,
                    train={
                        "loss": 3.0 * (1.0 - acc / 100.0),
                        "acc1": np.minimum(100.0, acc + 5.0),
                        "acc5": np.minimum(100.0, acc + 20.0),
                        "time": np.full(epochs, train_time),
                    },
                    evals={EVAL: {"loss": 3.0 * (1.0 - acc / 100.0), "acc1": acc, "time": np.full(epochs, eval_time)}},
                    params=1.0,
                    flops=100.0,
                    latency=[0.01],
                    seed_label=f"{SEED:04d}",
                )
            )
    return builder.write(path, source={"file": "synthetic", "sha256": None}, overwrite=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="multitrial.json")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--budget_seconds", type=float, default=40.0)
    parser.add_argument("--report_epochs", type=int, default=200)
    parser.add_argument("--store", help="reuse a store built before (default: build one in a temporary directory)")
    parser.add_argument("--algos", nargs="+", default=["random", "rea", "reinforce", "hyperband", "bohb"])
    args = parser.parse_args(argv)

    from nb360.search.multitrial import ALGORITHMS
    from nb360.search.multitrial.runner import run_searches
    from nb360.search.multitrial.tabular import TabularEvaluator
    from nb360.tabular import create

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        store = Path(args.store) if args.store else build_store(Path(tmp) / "synthetic.nb360", args.report_epochs)
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        bench = create(store)
        evaluator = TabularEvaluator(bench, DATASET, "12", EVAL, EVAL, "200", "random")
        space = evaluator.space()
        for budget in (1, 4, 12):  # the columns Hyperband uses, built once (also timed)
            evaluator.evaluate(space.sample(__import__("random").Random(0)), budget, __import__("random").Random(0))
        setup_s = time.perf_counter() - start
        rows = []
        for algo in args.algos:
            results = run_searches(
                algo, ALGORITHMS[algo], space, evaluator, args.budget_seconds, runs=args.runs, seed=0, progress=False
            )
            trials = int(results.trials.sum())
            rows.append(
                {
                    "algo": algo,
                    "runs": args.runs,
                    "wall_s": results.wall_seconds,
                    "s_per_100_runs": results.wall_seconds / args.runs * 100,
                    "us_per_trial": results.wall_seconds / trials * 1e6,
                    "trials_per_run": trials / args.runs,
                    "final_value_mean": float(results.final_value.mean()),
                }
            )
    print(
        f"store build {build_s:.1f} s, open + evaluator setup {setup_s * 1e3:.0f} ms; "
        f"{args.runs} runs of {args.budget_seconds:g} s"
    )
    print(f"{'algo':<10} {'wall s':>8} {'s/100 runs':>11} {'us/trial':>9} {'trials/run':>11} {'final acc':>10}")
    for r in rows:
        print(
            f"{r['algo']:<10} {r['wall_s']:>8.2f} {r['s_per_100_runs']:>11.3f} {r['us_per_trial']:>9.1f} "
            f"{r['trials_per_run']:>11.1f} {r['final_value_mean']:>10.2f}"
        )
    Path(args.out).write_text(
        json.dumps({"build_s": build_s, "setup_s": setup_s, "budget_seconds": args.budget_seconds, "rows": rows}, indent=2)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
