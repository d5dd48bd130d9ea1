"""``python -m nb360.data {download,verify,fixture,generate}``: a task's files, outside of training.

    python -m nb360.data download --task darcy --root data/darcy      # S3 (anonymous), then https; skip verified files
    python -m nb360.data verify   --task darcy --root data/darcy      # checksum and format, one line per file
    python -m nb360.data fixture  --task darcy --root /tmp/fx --n 8   # a tiny dataset in the exact on-disk format
    python -m nb360.data generate --task darcy --root data/darcy --n 1024 --resolution 421   # the PDE solver
    python -m nb360.data download --benchmark nb201-ninapro --root data/nb201  # NATS file -> nb360-tabular store
    python -m nb360.data verify   --benchmark nb201-darcy --root data/nb201

``download`` and ``verify`` take any DataModule option as ``--data.KEY VALUE`` (for
example ``--data.s3_endpoint URL``, or ``--data.resolution 106 --data.samples 320`` for
generated Darcy files). With ``--benchmark`` (``nb201-ninapro``, ``nb201-darcy``) they
fetch and check a tabular benchmark instead: the options are then the mirrors'
(``--data.source s3|https|gdrive|local``, ``--data.s3_endpoint URL``, ``--data.https_base URL``),
and ``download --no-import`` keeps the NATS file without converting it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nb360.datamodules.base import default_root
from nb360.errors import UsageError, run_command

__all__ = ["main"]


def datamodule_options(extra: Sequence[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    items = list(extra)
    while items:
        key = items.pop(0)
        if not key.startswith("--data."):
            raise UsageError(f"unexpected argument {key!r}; DataModule options are given as --data.KEY VALUE")
        if "=" in key:
            key, value = key.split("=", 1)
        elif items:
            value = items.pop(0)
        else:
            raise UsageError(f"{key} needs a value")
        options[key[len("--data."):]] = yaml.safe_load(value)
    return options


def _datamodule(task: str, root: str | None, options: dict[str, Any]) -> Any:
    from nb360.tasks import get_task

    cls = get_task(task).require_datamodule()
    try:
        return cls(root=root, split="final", **options)
    except TypeError as err:
        raise UsageError(f"bad DataModule option for task {task}: {err}") from None


def _benchmark_root(args: argparse.Namespace) -> Path:
    return Path(args.root) if args.root else default_root("nb201")


def _download(args: argparse.Namespace, extra: Sequence[str]) -> None:
    if args.benchmark:
        from nb360.tabular.download import download_benchmark, sources_from_options

        sources = sources_from_options(datamodule_options(extra))
        for line in download_benchmark(args.benchmark, _benchmark_root(args), sources=sources, convert=not args.no_import):
            print(line)
        return
    dm = _datamodule(args.task, args.root, datamodule_options(extra))
    dm.prepare_data()
    for line in dm.verify():
        print(line)


def _verify(args: argparse.Namespace, extra: Sequence[str]) -> None:
    if args.benchmark:
        from nb360.tabular.download import verify_benchmark

        if extra:
            raise UsageError(f"unexpected argument(s) for a benchmark: {' '.join(extra)}")
        for line in verify_benchmark(args.benchmark, _benchmark_root(args)):
            print(line)
        return
    for line in _datamodule(args.task, args.root, datamodule_options(extra)).verify():
        print(line)


def _fixture(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from nb360.tasks import get_task

    cls = get_task(args.task).require_datamodule()
    root = Path(args.root) if args.root else default_root(get_task(args.task).name)
    for path in cls.write_fixture(root, args.n, args.seed):
        print(f"wrote {path}")
    flags = " ".join(f"--data.{k} {v}" for k, v in cls.fixture_args(args.n).items())
    print(f"train on it: python train.py --task {get_task(args.task).name} --data.root {root} {flags}".rstrip())


def _generate(args: argparse.Namespace, extra: Sequence[str]) -> None:
    from nb360.datamodules import darcy_generator
    from nb360.datamodules.matfile import read_fields
    from nb360.tasks import get_task

    cls = get_task(args.task).require_datamodule()
    if not hasattr(cls, "generate_files"):
        raise UsageError(f"task {args.task!r} has no data generator; only darcy's data can be generated")
    root = Path(args.root) if args.root else default_root(get_task(args.task).name)
    reports = cls.generate_files(root, args.n, args.resolution, args.seed, args.workers, args.format)
    if not reports:
        print(f"nothing to do: the files for --n {args.n} --resolution {args.resolution} already exist in {root}")
    for report in reports:
        fields = read_fields(report.path, ("coeff", "sol"))
        a, u = fields["coeff"], fields["sol"]
        print(
            f"wrote {report.path}: {report.samples} samples at {report.resolution}x{report.resolution} in "
            f"{report.seconds:.1f} s; max solver residual {report.max_residual:.1e}; coeff values "
            f"{sorted(np.unique(a).tolist())} (fraction 12: {(a == 12).mean():.3f}); u in [{u.min():.4g}, {u.max():.4g}], mean {u.mean():.4g}"
        )
        preview = darcy_generator.preview(report.path.with_suffix(".png"), a, u)
        print(f"wrote {preview}")
    if args.resolution != 421 or args.n != 1024:
        flags = f"--data.resolution {args.resolution} --data.samples {args.n}"
        print(f"train on it: python train.py --task darcy --data.root {root} {flags} (and --data.n_train/n_val/n_test to fit {args.n} samples)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nb360.data", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("download", "fetch a task's files and verify them"),
        ("verify", "check checksums and formats"),
        ("fixture", "write a tiny dataset in the exact on-disk format"),
        ("generate", "generate Darcy Flow data with the PDE solver"),
    ):
        sub = commands.add_parser(name, help=help_text)
        if name in ("download", "verify"):
            what = sub.add_mutually_exclusive_group(required=True)
            what.add_argument("--task")
            what.add_argument("--benchmark", help="a tabular benchmark: nb201-ninapro or nb201-darcy")
        else:
            sub.add_argument("--task", required=True)
        sub.add_argument("--root", default=None, help="data directory (default: $NB360_DATA/<task> or data/<task>; nb201 for benchmarks)")
        if name == "download":
            sub.add_argument("--no-import", action="store_true", help="with --benchmark: keep the NATS file, do not convert it")
        if name == "fixture":
            sub.add_argument("--n", type=int, default=8, help="samples per part")
            sub.add_argument("--seed", type=int, default=0)
        if name == "generate":
            sub.add_argument("--n", type=int, default=1024, help="samples per file (reference 1024)")
            sub.add_argument("--resolution", type=int, default=421, help="grid points per side (reference 421)")
            sub.add_argument("--seed", type=int, default=0)
            sub.add_argument("--workers", type=int, default=None, help="solver processes (default: all cores)")
            sub.add_argument("--format", choices=("v5", "v7.3"), default="v5", help="MATLAB file version")
    args, extra = parser.parse_known_args(argv)
    if extra and args.command in ("fixture", "generate"):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handlers = {"download": _download, "verify": _verify, "fixture": _fixture, "generate": _generate}
    return run_command(lambda: handlers[args.command](args, extra))


if __name__ == "__main__":
    sys.exit(main())
