"""A precompute worker: train its share of a space's architectures on a task, one result file per run.

Output directory layout (one per precompute; any number of workers may share it)::

    OUT/manifest.json                      the protocol; a worker with a different one is refused
    OUT/runs/<index:06d>-s<seed>.json      one finished run (architecture, seed), written atomically
    OUT/partial/<index:06d>-s<seed>.ckpt   the checkpoint of a run in progress (every epoch)

A run is claimed with a lock file beside its result, so two workers never train the
same run at the same time; a run whose result exists is skipped, and a run with a
checkpoint resumes from it. Killing a worker therefore loses at most the epoch in
progress and never duplicates or half-writes a result: rerunning the same command
finishes the shard. Every run is seeded by its own seed alone, so a result does not
depend on which worker trained it or in which order.
"""

from __future__ import annotations

import contextlib
import json
import logging
import platform
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from filelock import FileLock, Timeout
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from tqdm import tqdm

import nb360
from nb360.datamodules.base import TaskDataModule
from nb360.errors import UsageError
from nb360.io import write_json
from nb360.metrics import metric_class, metric_lower_is_better, metric_name
from nb360.models.nb201.costs import model_costs
from nb360.precompute.module import EvalSetsDataModule, RecordingModule
from nb360.precompute.protocol import Protocol
from nb360.spaces import get_space
from nb360.tasks import get_task

__all__ = ["Layout", "Worker", "RESULT_FORMAT", "claim_directory", "select_architectures"]

RESULT_FORMAT = "nb360-precompute-run"
_CLAIM_WAIT = 1.0  # seconds to wait for a run's lock: longer than `status` holds it, far shorter than a training run


@dataclass(frozen=True)
class Layout:
    """Paths inside a precompute's output directory."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def partial(self) -> Path:
        return self.root / "partial"

    @staticmethod
    def stem(index: int, seed: int) -> str:
        return f"{index:06d}-s{seed}"

    def result(self, index: int, seed: int) -> Path:
        return self.runs / f"{self.stem(index, seed)}.json"

    def checkpoint(self, index: int, seed: int) -> Path:
        return self.partial / f"{self.stem(index, seed)}.ckpt"

    def lock(self, index: int, seed: int) -> Path:
        return self.runs / f".{self.stem(index, seed)}.lock"

    def results(self) -> Iterator[Path]:
        return iter(sorted(self.runs.glob("*.json")))


def claim_directory(layout: Layout, protocol: Protocol) -> None:
    """Write the manifest, or check that the directory's protocol is this one (one-line error if not)."""
    layout.root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(layout.root / ".manifest.lock")):
        if layout.manifest.exists():
            stored = Protocol.from_dict(json.loads(layout.manifest.read_text(encoding="utf-8"))["protocol"])
            differences = stored.differences(protocol)
            if differences:
                raise UsageError(
                    f"{layout.root} holds a precompute with a different protocol ({', '.join(differences)} differ); "
                    "use another --out or the same settings"
                )
            return
        write_json(
            layout.manifest,
            {"format": "nb360-precompute", "version": 1, "protocol": protocol.to_dict(), "created_by": nb360.__version__},
        )


def select_architectures(size: int, archs: str | None, shard: tuple[int, int]) -> list[int]:
    """The indices of ``archs`` (``a:b`` slice, ``i,j,k`` list or all) that shard ``(i, N)`` trains: every N-th, from the i-th.

    Striding rather than blocks gives every shard a similar mix of cheap and costly cells.
    """
    if archs is None or archs == "all":
        chosen = list(range(size))
    elif ":" in archs:
        try:
            chosen = list(range(size))[slice(*(int(p) if p else None for p in archs.split(":")))]
        except (TypeError, ValueError):
            raise UsageError(f"--archs {archs!r}: expected START:STOP[:STEP], a comma-separated list, or 'all'") from None
    else:
        try:
            chosen = [int(p) for p in archs.split(",")]
        except ValueError:
            raise UsageError(f"--archs {archs!r}: expected START:STOP[:STEP], a comma-separated list, or 'all'") from None
        bad = [i for i in chosen if not 0 <= i < size]
        if bad:
            raise UsageError(f"--archs: indices {bad} are outside the space's 0..{size - 1}")
    part, total = shard
    return chosen[part::total]


class _EpochProgress(Callback):
    """Shows the epoch of the run in progress on the worker's progress bar."""

    def __init__(self, bar: tqdm, label: str) -> None:
        self.bar, self.label = bar, label

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.bar.set_postfix_str(f"{self.label} epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")


class Worker:
    """Trains runs of one precompute; the task's data (under ``root``) are prepared and loaded once and reused."""

    def __init__(
        self,
        protocol: Protocol,
        layout: Layout,
        accelerator: str = "auto",
        precision: str | None = None,
        num_workers: int = 0,
        progress: bool = True,
        root: str | None = None,
    ) -> None:
        self.protocol, self.layout = protocol, layout
        self.spec = get_task(protocol.task)
        self.space = get_space(protocol.space)
        self.accelerator, self.precision, self.progress = accelerator, precision, progress
        datamodules: dict[str, TaskDataModule] = {}
        cls = self.spec.require_datamodule()
        for split in {protocol.train_split, *(s for s, _ in protocol.eval_sets.values())}:
            dm = cls(root=root, split=split, batch_size=protocol.batch_size, num_workers=num_workers, **protocol.data_options)
            dm.prepare_data()
            dm.setup("fit")
            datamodules[split] = dm
        self.data = EvalSetsDataModule(
            datamodules[protocol.train_split], {name: (datamodules[s], part) for name, (s, part) in protocol.eval_sets.items()}
        )
        self.metric = metric_class(self.spec.metric)
        self.callbacks: list[Callback] = []  # extra Lightning callbacks for every run

    def run(self, indices: Iterable[int]) -> dict[str, int]:
        """Train every (architecture, seed) of ``indices`` x the seeds that is not finished or claimed elsewhere."""
        todo = [(i, s) for i in indices for s in self.protocol.seeds]
        counts = {"trained": 0, "finished_before": 0, "claimed_elsewhere": 0}
        self.layout.runs.mkdir(parents=True, exist_ok=True)
        bar = tqdm(todo, desc=f"{self.protocol.space} on {self.spec.name}", unit="run", disable=not self.progress)
        with _quiet_lightning():
            for index, seed in bar:
                self._run_one(index, seed, counts, bar)
        return counts

    def _run_one(self, index: int, seed: int, counts: dict[str, int], bar: tqdm) -> None:
        if self.layout.result(index, seed).exists():
            counts["finished_before"] += 1
            return
        try:
            with FileLock(str(self.layout.lock(index, seed)), timeout=_CLAIM_WAIT):
                if self.layout.result(index, seed).exists():  # finished while we waited for the lock
                    counts["finished_before"] += 1
                    return
                result = self.train(index, seed, bar)
                write_json(self.layout.result(index, seed), result)
                self.layout.checkpoint(index, seed).unlink(missing_ok=True)
        except Timeout:
            counts["claimed_elsewhere"] += 1
            return
        counts["trained"] += 1
        last = result["evals"][next(iter(result["evals"]))]["metric"][-1]
        bar.set_postfix_str(f"#{index}: {metric_name(self.metric)} {last:.4g}")

    def train(self, index: int, seed: int, bar: tqdm | None = None) -> dict[str, Any]:
        """Train one architecture with one seed (resuming its checkpoint if there is one); return its result."""
        arch = self.space.arch(index)
        protocol = self.protocol
        checkpoint = self.layout.checkpoint(index, seed)
        resume = str(checkpoint) if _loadable(checkpoint) else None
        pl.seed_everything(seed, workers=True, verbose=False)
        module = RecordingModule(
            eval_sets=list(protocol.eval_sets),
            task=self.spec.name,
            network=self.space.name,
            network_options={"arch": arch},
            lr=protocol.lr,
            momentum=protocol.momentum,
            weight_decay=protocol.weight_decay,
            nesterov=protocol.nesterov,
            schedule="cosine",
            min_lr=protocol.min_lr,
        )
        callbacks: list[Callback] = [
            ModelCheckpoint(
                dirpath=self.layout.partial,
                filename=self.layout.stem(index, seed),
                monitor=None,
                save_top_k=1,
                save_on_train_epoch_end=True,
                enable_version_counter=False,
            )
        ]
        callbacks += self.callbacks
        if bar is not None and self.progress:
            callbacks.append(_EpochProgress(bar, f"#{index}"))
        trainer = pl.Trainer(
            max_epochs=protocol.epochs,
            accelerator=self.accelerator,
            devices=1,
            precision=self.precision,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=callbacks,
        )
        start = time.perf_counter()
        trainer.fit(module, datamodule=self.data, ckpt_path=resume)
        if len(module.history) != protocol.epochs:
            raise RuntimeError(f"run {index} seed {seed}: {len(module.history)} of {protocol.epochs} epochs were recorded")
        params, flops = model_costs(module.net, self.spec.input_shape)
        return {
            "format": RESULT_FORMAT,
            "version": 1,
            "space": self.space.name,
            "task": self.spec.name,
            "hp": protocol.hp,
            "epochs": protocol.epochs,
            "arch_index": index,
            "arch": arch,
            "seed": seed,
            "metric": {"name": metric_name(self.metric), "lower_is_better": metric_lower_is_better(self.metric)},
            "train": _columns(record["train"] for record in module.history),
            "evals": {name: _columns(record["evals"][name] for record in module.history) for name in protocol.eval_sets},
            "params": params,
            "flops": flops,
            "latency": module.final_latency(),
            "device": _device_name(trainer),
            "host": platform.node(),
            "wall_seconds": time.perf_counter() - start,
        }


@contextlib.contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Keep Lightning's per-fit banners (devices, tips) out of a worker's log: it fits thousands of times.

    The checkpoint folder holds the checkpoints of all interrupted runs by design, so
    Lightning's warning about a non-empty folder is silenced too, as is its deprecation
    notice about torch's ``LeafSpec``, which users cannot act on.
    """
    logger = logging.getLogger("lightning.pytorch")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
            warnings.filterwarnings("ignore", message=".*LeafSpec.* is deprecated")
            yield
    finally:
        logger.setLevel(level)


def _columns(records: Iterable[dict[str, float]]) -> dict[str, list[float]]:
    rows = list(records)
    return {key: [row[key] for row in rows] for key in ("loss", "metric", "time")}


def _loadable(checkpoint: Path) -> bool:
    """Whether a run's checkpoint exists and reads; a truncated one (killed while saving) is removed."""
    if not checkpoint.exists():
        return False
    try:
        torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable checkpoint means: start this run again
        checkpoint.unlink(missing_ok=True)
        return False
    return True


def _device_name(trainer: pl.Trainer) -> str:
    root = trainer.strategy.root_device
    return torch.cuda.get_device_name(root) if root.type == "cuda" else platform.processor() or root.type
