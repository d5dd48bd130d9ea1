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
import secrets
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, Timer
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

    def _loggers(self) -> list[Logger]:
        loggers: list[Logger] = [ResumableCSVLogger(self.run_dir)]
        if self.logger == "tensorboard":
            try:
                from lightning.pytorch.loggers import TensorBoardLogger

                loggers.append(TensorBoardLogger(str(self.run_dir), name="tensorboard", version=""))
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

    def trainer(self, **overrides: Any) -> pl.Trainer:
        """A Trainer writing into the run directory, with checkpoints, timing and the chosen loggers."""
        kwargs = {**self.trainer_kwargs, **overrides}
        chosen = kwargs.get("logger")  # --trainer.logger: false turns logging off, logger objects are added
        extra = [] if chosen in (None, True, False) else list(chosen) if isinstance(chosen, (list, tuple)) else [chosen]
        loggers = [] if chosen is False else self._loggers() + extra
        kwargs["logger"] = loggers
        has_val = getattr(self.datamodule, "has_validation", False)
        folder = self.run_dir / "checkpoints"
        # the latest state, every epoch: what --ckpt_path last resumes from
        checkpoints = [ModelCheckpoint(dirpath=folder, filename="last", save_on_train_epoch_end=True, enable_version_counter=False)]
        if has_val:
            mode = "min" if metric_lower_is_better(metric_class(self.task.metric)) else "max"
            best = ModelCheckpoint(
                dirpath=folder, filename="best", monitor=f"val/{self.model.metric_name}", mode=mode, enable_version_counter=False
            )
            checkpoints.insert(0, best)
        callbacks = list(kwargs.get("callbacks") or []) + checkpoints + [Timer(verbose=False)]
        if loggers:
            callbacks += [LearningRateMonitor(logging_interval="epoch"), _TrimResumedLog(loggers[0])]
        kwargs["callbacks"] = callbacks
        kwargs.setdefault("default_root_dir", str(self.run_dir))
        if not has_val:
            kwargs["limit_val_batches"] = 0
        trainer = pl.Trainer(**kwargs)
        if trainer.is_global_zero:
            with atomic_open(self.run_dir / "config.yaml", "w", encoding="utf-8") as f:
                f.write(self.config_yaml)
        return trainer

    def finish(self, trainer: pl.Trainer, scores: dict[str, float], genotype: Any = None) -> dict[str, Any]:
        """Write ``results.json`` (rank 0) from the test scores and return its content."""
        name = self.model.metric_name
        timer = next(cb for cb in trainer.callbacks if isinstance(cb, Timer))
        results = {
            "task": self.task.name,
            "method": self.method,
            "seed": self.seed,
            "metric": name,
            "value": float(scores[f"test/{name}"]),
            "lower_is_better": metric_lower_is_better(metric_class(self.task.metric)),
            "split": getattr(self.datamodule, "eval_split", "test"),
            "params": count_parameters(getattr(self.model, "net", self.model)),
            "wall_time_s": round(sum(timer.time_elapsed(stage) for stage in ("train", "validate", "test")), 3),
            "genotype": genotype,
            "metrics": {k.split("/", 1)[-1]: float(v) for k, v in scores.items()},
            "metric_version": getattr(metric_class(self.task.metric), "version", 1),
            "epochs": trainer.current_epoch,
            "run_dir": str(self.run_dir),
            "versions": versions(),
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
                run.summary.update({"result/value": results["value"], "result/metric": results["metric"], "result/split": results["split"]})
                run.finish()


def cuda_precision_default() -> str:
    """The reference trains on V100s with fp16 mixed precision; CPUs train in fp32."""
    return "16-mixed" if torch.cuda.is_available() else "32-true"
