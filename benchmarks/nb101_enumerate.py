"""Time the vectorised NB101 enumeration against a straightforward port of the reference ``generate_graphs.py``.

    python benchmarks/nb101_enumerate.py [--straight_vertices 6] [--out benchmarks/results/nb101_enumerate.json]

The straightforward version (:func:`nb360.nb101.enumerate.straightforward_enumeration`) loops over every
upper-triangular matrix and labelling and hashes each labelled graph with :func:`nb360.nb101.spec.hash_module`
(the reference's cost structure). It runs up to ``--straight_vertices`` (6 by default: 128,509 labelled graphs);
its 7-vertex time is extrapolated by the labelled-graph count (1,293,208 in all), since its cost is one hash per
labelled graph. Both produce the same cells (checked).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

from nb360.nb101.enumerate import enumerate_cells, straightforward_enumeration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--straight_vertices", type=int, default=6)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results/nb101_enumerate.json")
    args = parser.parse_args()
    result: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load": os.getloadavg()}}

    t = time.perf_counter()
    full = enumerate_cells(7, hashes=False)
    result["ours_cells_only_7_s"] = time.perf_counter() - t
    t = time.perf_counter()
    full = enumerate_cells(7, hashes=True, workers=args.workers)
    result["ours_with_hashes_7_s"] = time.perf_counter() - t
    result["cells_7"] = len(full)
    result["distinct_hashes_7"] = len(set(full.hashes.tolist()))
    result["labelled_7"] = sum(full.labelled.values())

    v = args.straight_vertices
    t = time.perf_counter()
    small = enumerate_cells(v, hashes=True, workers=args.workers)
    result[f"ours_with_hashes_{v}_s"] = time.perf_counter() - t
    t = time.perf_counter()
    buckets, labelled = straightforward_enumeration(v)
    codes = sorted(buckets.values())
    straight = time.perf_counter() - t
    assert codes == small.codes.tolist(), "the two enumerations disagree"
    result[f"straightforward_{v}_s"] = straight
    result[f"cells_{v}"] = len(codes)
    result[f"labelled_{v}"] = labelled
    result["straightforward_7_s_extrapolated"] = straight * result["labelled_7"] / labelled
    result["speedup_7_with_hashes"] = result["straightforward_7_s_extrapolated"] / result["ours_with_hashes_7_s"]
    result["speedup_7_cells_only"] = result["straightforward_7_s_extrapolated"] / result["ours_cells_only_7_s"]
    result[f"speedup_{v}_measured"] = straight / result[f"ours_with_hashes_{v}_s"]
    result["machine"]["load_after"] = os.getloadavg()
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
