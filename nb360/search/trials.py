"""Trials of a multi-trial search that trains every candidate (``nb201_<algo>``, ``densenas_random``).

A trial is an ordinary nb360 fit of a :class:`~nb360.search.train.TrainModule` on the search
split, scored by the validation metric after its last epoch. :class:`TrialLog` keeps the
finished trials in ``trials.jsonl``; a resumed search (``--ckpt_path last``) replays them in
order, because its algorithm proposes the same candidates again from the same seed, and a
record that does not match what the search asks for stops it rather than mixing two searches.
The interrupted trial resumes from its checkpoint in ``trials/<n>/``, removed once it finishes.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only

from nb360.errors import UsageError
from nb360.run import RunContext

__all__ = ["TRIALS_FILE", "TrialLog", "train_trial", "remove_trial_folders"]

TRIALS_FILE = "trials.jsonl"


class TrialLog:
    """The finished trials of this run's search, in order."""

    def __init__(self, ctx: RunContext) -> None:
        self.path = ctx.run_dir / TRIALS_FILE
        if ctx.ckpt_path is None and self.path.is_file():
            raise UsageError(
                f"{ctx.run_dir} already holds a search; resume it with --ckpt_path last, or choose another --output_dir or --seed"
            )
        self.done: list[dict[str, Any]] = (
            [json.loads(line) for line in self.path.read_text().splitlines()] if self.path.is_file() else []
        )

    def replay(self, number: int, **asked: Any) -> dict[str, Any] | None:
        """The record of trial ``number`` if it finished before, checked to be the trial asked for (``asked``)."""
        if number >= len(self.done):
            return None
        record = self.done[number]
        recorded = {key: record.get(key) for key in asked}
        if recorded != asked:
            raise UsageError(
                f"{self.path}: trial {number} was {recorded}, this search asks for {asked}: resume with the settings of the run"
            )
        return record

    def append(self, record: dict[str, Any]) -> None:
        if rank_zero_only.rank == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as out:
                out.write(json.dumps(record) + "\n")

    def __len__(self) -> int:
        return sum(1 for _ in self.path.read_text().splitlines()) if self.path.is_file() else 0


def train_trial(ctx: RunContext, module: pl.LightningModule, number: int, epochs: int) -> float:
    """Fit ``module`` for ``epochs`` epochs on the search split (seeded by the run's seed and the trial number);
    return its validation metric after the last epoch."""
    stage = f"trials/{number:05d}"
    pl.seed_everything(ctx.seed * 100_003 + number, verbose=False)
    trainer = ctx.trainer(
        datamodule=ctx.datamodule,
        stage=stage,
        model=module,
        max_epochs=epochs,
        check_val_every_n_epoch=epochs,  # the score is the validation metric after the last epoch
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=ctx.datamodule, ckpt_path=ctx.resume_path(stage))
    value = trainer.callback_metrics.get(f"val/{module.metric_name}")
    if value is None:
        raise UsageError(f"trial {number} produced no validation {module.metric_name}: the search split needs a validation set")
    if trainer.is_global_zero:
        shutil.rmtree(ctx.stage_dir(stage), ignore_errors=True)  # a finished trial lives on in trials.jsonl
    return float(value)


def remove_trial_folders(ctx: RunContext) -> None:
    """Remove ``trials/`` once the search is over (only interrupted trials ever leave checkpoints there)."""
    if rank_zero_only.rank == 0:
        shutil.rmtree(ctx.run_dir / "trials", ignore_errors=True)
