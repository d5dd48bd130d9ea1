"""Darcy Flow generator throughput: seconds per solved sample at several grid sizes, serial and on all cores.

    python benchmarks/darcy_generator.py [--samples 8] [--resolutions 85 211 421]

Prints a table and writes benchmarks/results/darcy_generator.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from nb360.datamodules.darcy_generator import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[85, 211, 421])
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for resolution in args.resolutions:
            row = {"resolution": resolution, "samples": args.samples}
            for workers in sorted({1, cores}):
                report = generate(Path(tmp) / f"r{resolution}_w{workers}.mat", args.samples, resolution, workers=workers, progress=False)
                row[f"s_per_sample_{workers}_workers"] = report.seconds / args.samples
                row["max_residual"] = report.max_residual
            rows.append(row)
    full = next((r for r in rows if r["resolution"] == 421), None)
    print(f"{'grid':>9} {'s/sample (1 core)':>18} {f's/sample ({cores} cores)':>19} {'max residual':>13}")
    for r in rows:
        print(f"{r['resolution']:>4}x{r['resolution']:<4} {r['s_per_sample_1_workers']:>18.3f} {r[f's_per_sample_{cores}_workers']:>19.3f} {r['max_residual']:>13.1e}")
    if full:
        minutes = 2 * 1024 * full[f"s_per_sample_{cores}_workers"] / 60
        print(f"reference set (2 files x 1024 samples at 421x421) on {cores} cores: about {minutes:.0f} min")
    out = Path(__file__).resolve().parent / "results" / "darcy_generator.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": platform.platform(), "cores": cores, "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
