"""``python -m nb360.nb101 {enumerate,import}``: enumerate the cells, or import the reference TFRecord as a store.

python -m nb360.nb101 enumerate --out cells.npz [--max_vertices 7] [--no-hashes]
python -m nb360.nb101 import --tfrecord nasbench_full.tfrecord --store data/nb101/nasbench_full.nb360
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from nb360.errors import UsageError, run_command

__all__ = ["main"]


def _enumerate(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from nb360.nb101.enumerate import enumerate_cells, save

    if not 2 <= args.max_vertices <= 7:
        raise UsageError(f"--max_vertices must be in 2..7, not {args.max_vertices}")
    start = time.perf_counter()
    with tqdm(desc="nb101 enumerate", unit="step", disable=args.quiet, leave=False) as bar:
        enum = enumerate_cells(
            args.max_vertices,
            hashes=not args.no_hashes,
            workers=args.workers,
            progress=lambda what, n: (bar.set_postfix_str(what), bar.update(n)),
        )
    save(args.out, enum)
    counts = enum.counts()
    cumulative = 0
    for v in sorted(counts):
        cumulative += counts[v]
        print(f"{v} vertices: {counts[v]} cells ({enum.labelled[v]} labelled graphs), {cumulative} with <= {v}")
    print(f"{len(enum)} unique cells in {time.perf_counter() - start:.1f} s -> {args.out}")


def _import(args: argparse.Namespace) -> None:
    from nb360.nb101.tfrecord import import_tfrecord

    start = time.perf_counter()
    path = import_tfrecord(args.tfrecord, args.store, verify=not args.no_verify, overwrite=args.overwrite)
    print(f"wrote {path} in {time.perf_counter() - start:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nb360.nb101", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("enumerate", help="every unique cell with its reference hash, as an .npz")
    p.add_argument("--out", required=True)
    p.add_argument("--max_vertices", type=int, default=7)
    p.add_argument(
        "--no-hashes", dest="no_hashes", action="store_true", help="skip the MD5 fingerprints (about 1 s instead of 1 min)"
    )
    p.add_argument("--workers", type=int, default=None, help="processes for the hashes (default: 2 or fewer)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_enumerate)
    p = sub.add_parser("import", help="convert nasbench_full.tfrecord / nasbench_only108.tfrecord into an nb360-tabular store")
    p.add_argument("--tfrecord", required=True)
    p.add_argument("--store", required=True)
    p.add_argument("--no-verify", dest="no_verify", action="store_true", help="skip the CRC-32C checks")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_import)
    args = parser.parse_args(argv)
    return run_command(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
