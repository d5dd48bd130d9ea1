"""A run's directory and everything written into it: config, checkpoints, metrics CSV, results.json.

Layout (``--output_dir`` defaults to ``runs``)::

    runs/<task>/<method>/seed<N>/
        config.yaml         the fully resolved configuration
        checkpoints/        last.ckpt (every epoch) and best.ckpt (by the validation metric, search split)
        metrics.csv         every logged value (appended to, not replaced, when a run resumes)
        results.json        written once the run has been scored
"""

from __future__ import annotations

import csv
import platform
import random
import secrets
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, ProgressBar, Timer, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

import nb360
from nb360.errors import UsageError
from nb360.io import atomic_open, write_json
from nb360.metrics import metric_class, metric_lower_is_better
from nb360.models import count_parameters
from nb360.tasks import TaskSpec

__all__ = ["RunContext", "ResumableCSVLogger", "versions", "run_directory"]

LOGGERS = ("csv", "tensorboard", "wandb")
# the fields of results.json copied into a W&B run summary as result/<key> (read back by nb360.report --wandb)
WANDB_RESULT_KEYS = ("task", "method", "seed", "metric", "value", "lower_is_better", "split", "params", "wall_time_s")


def run_directory(output_dir: str | Path, task: str, method: str, seed: int, stage: str | None = None) -> Path:
    path = Path(output_dir) / task / method / f"seed{seed}"
    return path / stage if stage else path


def versions() -> dict[str, str]:
    found = {"nb360": nb360.__version__, "python": platform.python_version()}
    for package in ("torch", "lightning", "torchmetrics", "numpy", "scipy"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing ``metrics.csv``; this one keeps it and appends."""

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as f:
                self.metrics_keys = list(csv.DictReader(f).fieldnames or [])


class ResumableCSVLogger(CSVLogger):
    """CSV logger writing ``metrics.csv`` directly in the run directory, continuing it on resume."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(save_dir=str(run_dir), name="", version="", flush_logs_every_n_steps=1)

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def drop_after(self, step: int) -> None:
        """Forget rows logged at or after ``step``: a resumed run logs them again."""
        path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        if not path.is_file():
            return
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames or [], [r for r in reader if not r.get("step") or int(r["step"]) < step]
        with atomic_open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


class _TrimResumedLog(Callback):
    """On resume, drop the CSV rows of the lost segment (logged after the restored checkpoint)."""

    def __init__(self, logger: ResumableCSVLogger) -> None:
        self.logger = logger

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step > 0 and trainer.is_global_zero:
            self.logger.drop_after(trainer.global_step)


def sync_epoch_schedules(trainer: pl.Trainer) -> None:
    """Step manually driven per-epoch schedules up to the current epoch (idempotent)."""
    for config in trainer.lr_scheduler_configs:
        while config.scheduler.last_epoch < trainer.current_epoch:
            config.scheduler.step()


class _SyncEpochSchedules(Callback):
    """For manual optimisation: brings the schedules to the epoch before the learning-rate monitor reads them."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not pl_module.automatic_optimization:
            sync_epoch_schedules(trainer)


class EpochSeeds(Callback):
    """Seeds the random generators at the start of every training epoch from ``(seed, epoch, process)``.

    Data augmentation draws from these generators; seeding them per epoch makes an
    epoch's randomness independent of what ran before it, so a run resumed from a
    checkpoint draws exactly what the uninterrupted run drew. (With DataLoader workers,
    whose seeds come from the loader's own generator, the data order still resumes
    exactly but the augmentation of a resumed run may differ.)
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        entropy = np.random.SeedSequence([self.seed, trainer.current_epoch, trainer.global_rank]).generate_state(2)
        seed = int(entropy[0]) << 32 | int(entropy[1])
        torch.manual_seed(seed)
        np.random.seed(int(entropy[0]))
        random.seed(seed)


class ThrottledProgressBar(TQDMProgressBar):
    """Lightning's progress bar, redrawn at most every ``interval`` seconds (and at the end of each loop).

    Lightning's default bar redraws after every batch, computing the displayed metrics each time: about a
    millisecond per step, which is several per cent of a step on a GPU. Redrawing on a clock instead keeps
    the bar as informative (tqdm itself redraws at most every 0.1 s) and costs one clock read per step.
    """

    def __init__(self, interval: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.interval, self._last_draw = interval, 0.0

    def _should_update(self, current: int, total: int) -> bool:
        if not self.is_enabled:
            return False
        now = time.monotonic()
        if current == total or current % self.refresh_rate == 0 and now - self._last_draw >= self.interval:
            self._last_draw = now
            return True
        return False


@dataclass
class RunContext:
    """What a method's stages need: the task, the configured module and data, trainers, the results writer."""

    task: TaskSpec
    method: str
    seed: int
    run_dir: Path
    model: pl.LightningModule
    datamodule: pl.LightningDataModule
    trainer_kwargs: dict[str, Any]
    config_yaml: str
    config: dict[str, Any]
    logger: str = "csv"
    wandb_project: str = "nb360"
    ckpt_path: str | None = None
    args: Any = None
    data_options: dict[str, Any] = field(default_factory=dict)

    def stage_dir(self, stage: str | None) -> Path:
        """Where a stage writes its checkpoints and logs (the run directory itself for single-stage methods)."""
        return self.run_dir / stage if stage else self.run_dir

    def check_fresh(self, stage: str | None = None) -> None:
        """Refuse to start a stage over a run that already has its checkpoints (or, single-stage, its results)."""
        if self.ckpt_path is not None:
            return
        folder = self.stage_dir(stage)
        if any(folder.glob("checkpoints/*.ckpt")) or (stage is None and (self.run_dir / "results.json").exists()):
            raise UsageError(f"{folder} already holds a run; resume it with --ckpt_path last, or choose another --output_dir or --seed")

    def resume_path(self, stage: str | None = None) -> str | None:
        """The checkpoint ``--ckpt_path`` asks this stage to resume from, if it exists."""
        if self.ckpt_path is None:
            return None
        if self.ckpt_path != "last":
            return self.ckpt_path
        last = self.stage_dir(stage) / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None

    def make_datamodule(self, **overrides: Any) -> pl.LightningDataModule:
        """Another instance of the task's DataModule with the run's data options and ``overrides``."""
        return type(self.datamodule)(**{**self.data_options, **overrides})

    def _loggers(self, folder: Path) -> list[Logger]:
        loggers: list[Logger] = [ResumableCSVLogger(folder)]
        if self.logger == "tensorboard":
            try:
                from lightning.pytorch.loggers import TensorBoardLogger

                loggers.append(TensorBoardLogger(str(folder), name="tensorboard", version=""))
            except ModuleNotFoundError as err:
                raise UsageError(f"--logger tensorboard needs the tensorboard package ({err}); pip install tensorboard") from None
        elif self.logger == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            id_file = self.run_dir / "wandb_id.txt"  # a resumed run continues the same W&B run
            run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
            if rank_zero_only.rank == 0 and not id_file.exists():
                with atomic_open(id_file, "w") as f:
                    f.write(run_id + "\n")
            loggers.append(
                WandbLogger(
                    project=self.wandb_project,
                    name=f"{self.task.name}-{self.method}-seed{self.seed}",
                    group=self.task.name,
                    job_type=self.method,
                    tags=[self.task.name, self.method, f"seed{self.seed}"],
                    save_dir=str(self.run_dir),
                    id=run_id,
                    resume="allow",
                    config=self.config,
                )
            )
        elif self.logger != "csv":
            raise UsageError(f"unknown logger {self.logger!r}; choose one of: {', '.join(LOGGERS)}")
        return loggers

    def trainer(
        self, datamodule: pl.LightningDataModule | None = None, stage: str | None = None, model: pl.LightningModule | None = None, **overrides: Any
    ) -> pl.Trainer:
        """A Trainer writing into the run (or stage) directory, with checkpoints, timing and the chosen loggers."""
        datamodule, model, folder = datamodule or self.datamodule, model or self.model, self.stage_dir(stage)
        stage_callbacks = list(overrides.pop("callbacks", []))  # added to, not replacing, the user's callbacks
        kwargs = {**self.trainer_kwargs, **overrides}
        chosen = kwargs.get("logger")  # --trainer.logger: false turns logging off, logger objects are added
        extra = [] if chosen in (None, True, False) else list(chosen) if isinstance(chosen, (list, tuple)) else [chosen]
        loggers = [] if chosen is False else self._loggers(folder) + extra
        kwargs["logger"] = loggers
        has_val = getattr(datamodule, "has_validation", False)
        checkpoint_dir = folder / "checkpoints"
        # the latest state, every epoch: what --ckpt_path last resumes from
        checkpoints = [ModelCheckpoint(dirpath=checkpoint_dir, filename="last", save_on_train_epoch_end=True, enable_version_counter=False)]
        if has_val:
            mode = "min" if metric_lower_is_better(metric_class(self.task.metric)) else "max"
            best = ModelCheckpoint(
                dirpath=checkpoint_dir, filename="best", monitor=f"val/{model.metric_name}", mode=mode, enable_version_counter=False
            )
            checkpoints.insert(0, best)
        callbacks = [_SyncEpochSchedules(), *(kwargs.get("callbacks") or []), *stage_callbacks, *checkpoints, Timer(verbose=False), EpochSeeds(self.seed)]
        if kwargs.get("enable_progress_bar") is not False and not any(isinstance(cb, ProgressBar) for cb in callbacks):
            callbacks.append(ThrottledProgressBar())  # instead of Lightning's default bar, redrawn every step
        if loggers:
            callbacks += [LearningRateMonitor(logging_interval="epoch"), _TrimResumedLog(loggers[0])]
        kwargs["callbacks"] = callbacks
        kwargs["default_root_dir"] = str(folder)
        if not has_val:
            kwargs["limit_val_batches"] = 0
        trainer = pl.Trainer(**kwargs)
        if trainer.is_global_zero:
            with atomic_open(self.run_dir / "config.yaml", "w", encoding="utf-8") as f:
                f.write(self.config_yaml)
        return trainer

    def finish(
        self,
        trainer: pl.Trainer,
        scores: dict[str, float],
        model: pl.LightningModule | None = None,
        datamodule: pl.LightningDataModule | None = None,
        genotype: Any = None,
        wall_time_s: float = 0.0,
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Write ``results.json`` (rank 0) from the scores of the stage that ends the run and return its content.

        ``wall_time_s`` adds the time of earlier stages (a search) to this trainer's.
        """
        model, datamodule = model or self.model, datamodule or self.datamodule
        name = model.metric_name
        timer = next(cb for cb in trainer.callbacks if isinstance(cb, Timer))
        own_time = sum(timer.time_elapsed(stage) for stage in ("train", "validate", "test"))
        results = {
            "task": self.task.name,
            "method": self.method,
            "seed": self.seed,
            "metric": name,
            "value": float(scores[f"test/{name}"]),
            "lower_is_better": metric_lower_is_better(metric_class(self.task.metric)),
            "split": getattr(datamodule, "eval_split", "test"),
            "params": count_parameters(getattr(model, "net", model)),
            "wall_time_s": round(wall_time_s + own_time, 3),
            "genotype": genotype,
            "metrics": {k.split("/", 1)[-1]: float(v) for k, v in scores.items()},
            "metric_version": getattr(metric_class(self.task.metric), "version", 1),
            "epochs": trainer.current_epoch,
            "run_dir": str(self.run_dir),
            "versions": versions(),
            **(extra or {}),
        }
        if trainer.is_global_zero:
            write_json(self.run_dir / "results.json", results)
        self._close_wandb(trainer, results)
        return results

    @staticmethod
    def _close_wandb(trainer: pl.Trainer, results: dict[str, Any]) -> None:
        """Put the headline result in the W&B run summary and finish the run (W&B runs otherwise close at exit)."""
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and trainer.is_global_zero:
                run = logger.experiment
                run.summary.update({f"result/{key}": results[key] for key in WANDB_RESULT_KEYS if results.get(key) is not None})
                run.finish()
