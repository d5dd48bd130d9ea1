"""Turning a precompute's result files into a tabular benchmark store, and reporting its progress.

Every result becomes one :class:`~nb360.tabular.store.RunRecord` of the group
``(task, hp)``: the task's loss, its NB360 metric (the store's score column, with the
metric's name, unit and direction) and, where the metric is the error of an
accuracy-like quantity, that quantity as NATS's ``acc1`` (accuracy in %, or Darcy's
``1 - relative l2``), so that a NATS export reads like the published NB360 files.
Merging can run at any time, also while workers are still training: it takes the runs
finished so far and replaces the store atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from nb360.errors import DataError, UsageError
from nb360.metrics import metric_class
from nb360.precompute.protocol import Protocol
from nb360.precompute.worker import RESULT_FORMAT, Layout
from nb360.spaces import get_space
from nb360.spaces.nb201 import SSS_CELL
from nb360.tabular import RunRecord, ScoreRule, StoreBuilder
from nb360.tasks import get_task

__all__ = ["merge", "status", "read_protocol", "read_result"]


def read_protocol(layout: Layout) -> Protocol:
    if not layout.manifest.is_file():
        raise UsageError(
            f"{layout.root} is not a precompute directory (no manifest.json); start one with `python -m nb360.precompute run`"
        )
    try:
        return Protocol.from_dict(json.loads(layout.manifest.read_text(encoding="utf-8"))["protocol"])
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f"{layout.manifest}: malformed manifest ({type(err).__name__}: {err})") from None


def read_result(path: Path, protocol: Protocol) -> dict[str, Any]:
    """One result file, checked against the precompute's protocol."""
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable result ({type(err).__name__}: {err})") from None
    if not isinstance(result, dict) or result.get("format") != RESULT_FORMAT:
        raise DataError(f"{path} is not an nb360 precompute result")
    expected = {"space": protocol.space, "task": protocol.task, "hp": protocol.hp, "epochs": protocol.epochs}
    wrong = [f"{k} {result.get(k)!r} (expected {v!r})" for k, v in expected.items() if result.get(k) != v]
    if wrong:
        raise DataError(f"{path} belongs to another precompute: {', '.join(wrong)}")
    return result


def _arch_config(space: str, arch: str, num_outputs: int) -> dict[str, Any]:
    """The network config NATS-Bench records with each run (``get_net_config`` rebuilds it)."""
    if space == "nats_sss":
        return {"name": "infer.shape.tiny", "channels": arch, "genotype": SSS_CELL, "class_num": num_outputs}
    return {"channel": 16, "num_cells": 5, "arch_str": arch, "class_num": num_outputs}


def _record(result: dict[str, Any], complement: float | None, num_outputs: int) -> RunRecord:
    def columns(part: dict[str, list[float]]) -> dict[str, np.ndarray]:
        metric = np.asarray(part["metric"], dtype=np.float64)
        acc1 = complement - metric if complement is not None else np.full_like(metric, np.nan)
        return {
            "loss": np.asarray(part["loss"], dtype=np.float64),
            "metric": metric,
            "acc1": acc1,
            "time": np.asarray(part["time"], dtype=np.float64),
        }

    train = columns(result["train"])
    train["acc5"] = np.full(result["epochs"], np.nan)
    return RunRecord(
        arch_index=int(result["arch_index"]),
        dataset=result["task"],
        hp=result["hp"],
        seed=int(result["seed"]),
        epochs=int(result["epochs"]),
        train=train,
        evals={name: columns(part) for name, part in result["evals"].items()},
        params=float(result["params"]),
        flops=float(result["flops"]),
        latency=[float(v) for v in result["latency"]],
        arch_config=_arch_config(result["space"], result["arch"], num_outputs),
    )


def merge(layout: Layout, store: Path, require_complete: bool = False) -> str:
    """Write the store of every finished run; return a one-line summary."""
    protocol = read_protocol(layout)
    if store.exists() and not (store / "meta.json").is_file():
        raise UsageError(f"{store} exists and is not a tabular store; choose a new path for --store")
    paths = list(layout.results())
    if not paths:
        raise UsageError(
            f"{layout.runs} holds no finished runs yet; run `python -m nb360.precompute run ... --out {layout.root}` first"
        )
    spec = get_task(protocol.task)
    metric = metric_class(spec.metric)
    rule = ScoreRule("metric", metric.name, metric.unit, metric.lower_is_better)
    builder = StoreBuilder(protocol.space, score={spec.name: rule})
    for path in paths:
        builder.add(_record(read_result(path, protocol), metric.accuracy_complement, spec.num_outputs))
    expected = len(get_space(protocol.space)) * len(protocol.seeds)
    if require_complete and len(paths) < expected:
        raise UsageError(f"{len(paths)} of {expected} runs are finished; merge without --require_complete for a partial store")
    builder.write(store, source={"precompute": str(layout.root.resolve()), "protocol": protocol.to_dict()}, overwrite=True)
    what = f"{protocol.space} on {protocol.task}, hp {protocol.hp}, seeds {list(protocol.seeds)}"
    return f"wrote {store}: {len(paths)} of {expected} runs ({what})"


def _held(lock: Path) -> bool:
    """Whether a worker holds ``lock`` now (tested by taking it for an instant; workers wait a second for it)."""
    try:
        with FileLock(str(lock), timeout=0):
            return False
    except Timeout:
        return True


def status(layout: Layout) -> str:
    """How many runs are finished, training now (a worker holds the run's lock) or interrupted (a checkpoint, no worker)."""
    protocol = read_protocol(layout)
    finished = sum(1 for _ in layout.results())
    running = sum(_held(lock) for lock in layout.runs.glob(".*.lock")) if layout.runs.exists() else 0
    checkpoints = sorted(layout.partial.glob("*.ckpt")) if layout.partial.exists() else []
    interrupted = sum(not _held(layout.runs / f".{c.stem}.lock") for c in checkpoints)
    expected = len(get_space(protocol.space)) * len(protocol.seeds)
    return (
        f"{layout.root}: {protocol.space} on {protocol.task}, hp {protocol.hp} "
        f"({protocol.epochs} epochs, {protocol.eval_protocol} protocol): "
        f"{finished}/{expected} runs finished, {running} training, {interrupted} interrupted (rerun their shard to resume)"
    )
