"""``--method wrn_asha``: the WRN baseline tuned by asynchronous successive halving (ASHA), then retrained.

The reference (NB ``backbone*/scripts/*_tuning.yaml``) tunes the default WRN-16-4 / ResNet1D with
Determined's ``adaptive_asha`` on the search split: learning rate log-uniform in [1e-4, 1e-1],
weight decay log-uniform in [1e-5, 1e-2], momentum in {0, 0.3, 0.6, 0.9}, dropout in {0, 0.3, 0.6}
(Nesterov on), 200 epochs at most, reduction factor 4, 5 rungs, a per-task number of trials.
Here the trials are Optuna trials: random sampling (seeded per trial number, so any number of
workers draws the same configurations), :class:`optuna.pruners.SuccessiveHalvingPruner`
(``min_resource`` 1 epoch, reduction factor 4: rungs at 1, 4, 16 and 64 epochs, then the full
budget), and a Lightning callback that reports the validation metric after every epoch. The best
finished trial is then retrained once on the final split with the full budget and scored on the
test set (``results.json`` adds ``hyperparameters``, ``trials`` and ``hpo``).

Scale-out and resume (see ``docs``): the study lives in ``--hpo.storage`` (default
``sqlite:///<run_dir>/hpo.db``; ``postgresql://...`` lets workers on several machines join one
study by running the same command). Workers create trials under a database lock until the study
holds ``--hpo.n_trials`` trials that are finished, running or queued, so the workers together run
exactly that many. Every running trial has a heartbeat; a trial whose worker died is failed once
its heartbeat is older than ``--hpo.grace_s`` and the same configuration is queued again, so no
trial is lost or counted twice. When no trial is left, the first worker to insert the retraining
claim into the database retrains; the others wait for its results (and take the retraining over
if its heartbeat goes stale).
"""

from __future__ import annotations

import inspect
import json
import math
import os
import shutil
import socket
import time
import uuid
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import lightning.pytorch as pl
import numpy as np

from nb360.errors import UsageError
from nb360.hpo import Claims, Heartbeat, OptunaReport, public_url, rdb_storage, requeue, storage_url
from nb360.methods import Method, register_method
from nb360.metrics import metric_class, metric_lower_is_better
from nb360.run import RunContext
from nb360.search.train import TrainModule
from nb360.tasks import TaskSpec

__all__ = [
    "HPOSettings",
    "ASHA_TRIALS",
    "SEARCH_SPACE",
    "make_pruner",
    "rung_epochs",
    "open_study",
    "suggest",
    "trial_sampler",
]

# max_trials of the reference tuning experiments (NB backbone*/scripts/*_tuning.yaml)
ASHA_TRIALS = {
    "cifar100": 28,
    "spherical": 16,
    "ninapro": 28,
    "fsd50k": 36,
    "darcy": 104,
    "psicov": 16,
    "cosmic": 16,
    "ecg": 56,
    "satellite": 28,
    "deepsea": 256,
}
DEFAULT_TRIALS = 16  # tasks the reference did not tune (task YAML files, plugins)
MOMENTA = (0.0, 0.3, 0.6, 0.9)
DROPOUTS = (0.0, 0.3, 0.6)
SEARCH_SPACE = {
    "lr": ("log-uniform", 1e-4, 1e-1),
    "weight_decay": ("log-uniform", 1e-5, 1e-2),
    "momentum": ("choice", *MOMENTA),
    "dropout": ("choice", *DROPOUTS),
}
TRAIN_ARGUMENTS = set(inspect.signature(TrainModule).parameters)
RETRAIN = "retrain"
ASK_LOCK = "ask"


@dataclass
class HPOSettings:
    """The ASHA study.

    Attributes:
        n_trials: trials of the whole study, summed over its workers (default: the reference's for the task).
        storage: Optuna storage URL (default ``sqlite:///<run_dir>/hpo.db``); any SQLAlchemy URL, e.g.
            ``postgresql://user:password@host/db``, lets several workers share the study.
        study: study name (default ``nb360-<task>-wrn_asha-seed<N>``); workers with the same storage and name cooperate.
        min_epochs: the first rung (Optuna's ``min_resource``); the later rungs are ``min_epochs * reduction_factor**k``.
        reduction_factor: ASHA's eta (the reference's ``divisor``).
        heartbeat_s: how often a worker records that its trial (or the retraining) is alive.
        grace_s: a trial or retraining whose heartbeat is older than this is taken to be dead and run again.
        poll_s: how often a worker with nothing to run looks at the study again.
    """

    n_trials: int | None = None
    storage: str | None = None
    study: str | None = None
    min_epochs: int = 1
    reduction_factor: int = 4
    heartbeat_s: int = 60
    grace_s: int = 180
    poll_s: float = 2.0


def rung_epochs(max_epochs: int, min_epochs: int = 1, reduction_factor: int = 4) -> list[int]:
    """The epochs at which a trial is compared with the others, then the full budget: ``[1, 4, 16, 64, 200]``."""
    rungs, epochs = [], min_epochs
    while epochs < max_epochs:
        rungs.append(epochs)
        epochs *= reduction_factor
    return [*rungs, max_epochs]


def make_pruner(settings: HPOSettings) -> Any:
    """ASHA as Optuna implements it: stopping-based successive halving, no bootstrap, no early-stopping offset."""
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=settings.min_epochs, reduction_factor=settings.reduction_factor, min_early_stopping_rate=0
    )


def trial_sampler(seed: int) -> Any:
    """Random sampling, seeded by ``(seed, trial number)``: the configurations do not depend on which worker draws them."""
    import optuna

    class TrialSeededRandomSampler(optuna.samplers.RandomSampler):
        def before_trial(self, study: Any, trial: Any) -> None:
            self._rng = type(self._rng)(int(np.random.SeedSequence([seed, trial.number]).generate_state(1)[0]))

    return TrialSeededRandomSampler(seed=seed)


def suggest(trial: Any) -> dict[str, float]:
    """One configuration of the reference search space (Nesterov stays on; it is off where momentum is 0)."""
    return {
        "lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-5, 1e-2, log=True),
        "momentum": trial.suggest_categorical("momentum", MOMENTA),
        "dropout": trial.suggest_categorical("dropout", DROPOUTS),
    }


def open_study(url: str, name: str, settings: HPOSettings, seed: int, lower_is_better: bool) -> Any:
    """Create or join the study ``name`` in ``url`` with the ASHA pruner and the seeded random sampler."""
    import optuna

    return optuna.create_study(
        study_name=name,
        storage=rdb_storage(storage_url(url), settings.heartbeat_s, settings.grace_s),
        sampler=trial_sampler(seed),
        pruner=make_pruner(settings),
        direction="minimize" if lower_is_better else "maximize",
        load_if_exists=True,
    )


class _Worker:
    """One process's part of the study: run trials while there are any to run, then retrain (once per study)."""

    def __init__(self, ctx: RunContext) -> None:
        import optuna

        self.optuna, self.ctx = optuna, ctx
        self.settings: HPOSettings = ctx.args.hpo
        settings = self.settings
        self.max_epochs = int(ctx.trainer_kwargs.get("max_epochs") or ctx.task.reference.epochs)
        self.n_trials = settings.n_trials if settings.n_trials is not None else ASHA_TRIALS.get(ctx.task.name, DEFAULT_TRIALS)
        if self.n_trials < 1 or not 1 <= settings.min_epochs <= self.max_epochs or settings.reduction_factor < 2:
            raise UsageError(
                f"--hpo.n_trials {self.n_trials}, --hpo.min_epochs {settings.min_epochs}, --hpo.reduction_factor "
                f"{settings.reduction_factor}: need n_trials >= 1, 1 <= min_epochs <= max_epochs ({self.max_epochs}), "
                "reduction_factor >= 2"
            )
        if min(settings.heartbeat_s, settings.grace_s) < 1 or settings.grace_s < settings.heartbeat_s:
            raise UsageError("--hpo.heartbeat_s and --hpo.grace_s: need 1 <= heartbeat_s <= grace_s")
        ctx.run_dir.mkdir(parents=True, exist_ok=True)
        self.url = storage_url(settings.storage or f"sqlite:///{(ctx.run_dir / 'hpo.db').resolve()}")
        self.name = settings.study or f"nb360-{ctx.task.name}-{ctx.method}-seed{ctx.seed}"
        self.lower_is_better = metric_lower_is_better(metric_class(ctx.task.metric))
        self.key = f"val/{ctx.model.metric_name}"
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}:{ctx.run_dir.resolve()}"
        self.study = open_study(self.url, self.name, settings, ctx.seed, self.lower_is_better)
        self.claims = Claims(self.url, self.name, self.owner)

    # ------------------------------------------------------------------ trials
    def _next_trial(self) -> tuple[Any, bool]:
        """Under the study lock: fail dead trials, then take a queued trial, or a new one while the study is short of trials."""
        State = self.optuna.trial.TrialState
        with self.claims.lock(ASK_LOCK), warnings.catch_warnings():
            # heartbeats are recorded here as Study.optimize would; fail_stale_trials is marked experimental
            warnings.filterwarnings("ignore", message=".*(Heartbeat of storage|fail_stale_trials)")
            self.optuna.storages.fail_stale_trials(self.study)
            trials = self.study.get_trials(deepcopy=False, states=(State.COMPLETE, State.PRUNED, State.RUNNING, State.WAITING))
            waiting = any(t.state == State.WAITING for t in trials)
            running = any(t.state == State.RUNNING for t in trials)
            if not waiting and len(trials) >= self.n_trials:
                return None, running
            trial = self.study.ask()
            self.study._storage.record_heartbeat(trial._trial_id)
            return trial, True

    def search(self) -> None:
        while True:
            trial, busy = self._next_trial()
            if trial is not None:
                self._run_trial(trial)
            elif not busy:
                break
            else:  # other workers' trials are still running (or will be failed and queued again)
                time.sleep(self.settings.poll_s)
        shutil.rmtree(self.ctx.run_dir / "trials", ignore_errors=True)

    def _module(self, params: dict[str, float]) -> TrainModule:
        hparams = {k: v for k, v in self.ctx.model.hparams.items() if k in TRAIN_ARGUMENTS}
        return TrainModule(**{**hparams, **params, "nesterov": True})

    def _run_trial(self, trial: Any) -> None:
        ctx, State = self.ctx, self.optuna.trial.TrialState
        storage = self.study._storage
        with Heartbeat(lambda: storage.record_heartbeat(trial._trial_id), self.settings.heartbeat_s):
            params = suggest(trial)
            origin = trial.user_attrs.get("retry_of", trial.number)
            trial.set_user_attr("worker", self.owner)
            module = self._module(params)
            report = OptunaReport(trial, self.key)
            stage = f"trials/{trial.number:05d}"
            pl.seed_everything(ctx.seed * 100_003 + origin, verbose=False)  # a queued-again trial repeats the lost one
            trainer = ctx.trainer(
                datamodule=ctx.datamodule,
                stage=stage,
                model=module,
                max_epochs=self.max_epochs,
                check_val_every_n_epoch=1,
                callbacks=[report],
                logger=False,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
            start = time.perf_counter()
            try:
                trainer.fit(module, datamodule=ctx.datamodule)
            except BaseException as err:
                self.study.tell(trial, state=State.FAIL)
                if isinstance(err, (KeyboardInterrupt, SystemExit)):  # interrupted, not broken: its configuration runs again
                    requeue(self.study, self.study._storage.get_trial(trial._trial_id))
                raise
            wall = time.perf_counter() - start
            trial.set_user_attr("wall_s", round(wall, 3))
            shutil.rmtree(ctx.stage_dir(stage), ignore_errors=True)
            if report.value is None:
                self.study.tell(trial, state=State.FAIL)
                raise UsageError(
                    f"trial {trial.number} produced no validation {module.metric_name}: the search split needs a validation set"
                )
            if report.pruned_at is not None:
                self.study.tell(trial, state=State.PRUNED)
                outcome = f"pruned after {report.pruned_at} epochs"
            else:
                self.study.tell(trial, report.value)
                outcome = f"finished {trainer.current_epoch} epochs"
        shown = ", ".join(f"{k}={v:.4g}" for k, v in params.items())
        print(
            f"trial {trial.number}: {shown}: {outcome}, val {module.metric_name} = {report.value:.6g} ({wall:.1f} s)", flush=True
        )

    # ------------------------------------------------------------------ retraining
    def summary(self) -> dict[str, Any]:
        State = self.optuna.trial.TrialState
        trials = self.study.get_trials(deepcopy=False)
        finished = [t for t in trials if t.state == State.COMPLETE and t.value is not None and not math.isnan(t.value)]
        if not finished:
            raise UsageError(f"study {self.name!r} has no finished trial to retrain ({len(trials)} trials)")
        pick = min if self.lower_is_better else max
        best = pick(finished, key=lambda t: (t.value, t.number) if self.lower_is_better else (t.value, -t.number))
        counts = {s.name.lower(): sum(t.state == s for t in trials) for s in (State.COMPLETE, State.PRUNED, State.FAIL)}
        trial_time = sum(
            (t.datetime_complete - t.datetime_start).total_seconds() for t in trials if t.datetime_complete and t.datetime_start
        )
        return {
            "best": best,
            "trial_time_s": trial_time,
            "hpo": {
                "study": self.name,
                "storage": public_url(self.url),
                "n_trials": self.n_trials,
                **counts,
                "best_trial": best.number,
                "best_value": best.value,
                "sampler": "random",
                "pruner": "successive_halving",
                "reduction_factor": self.settings.reduction_factor,
                "rungs": rung_epochs(self.max_epochs, self.settings.min_epochs, self.settings.reduction_factor),
            },
        }

    def retrain_or_wait(self) -> dict[str, Any]:
        """Retrain the best configuration if this worker wins the claim; otherwise wait for the winner's results."""
        while True:
            if self.claims.claim(RETRAIN, self.settings.grace_s):
                with Heartbeat(lambda: self.claims.beat(RETRAIN), self.settings.heartbeat_s):
                    results = self._retrain()
                self.claims.finish(RETRAIN, results)
                return results
            row = self.claims.get(RETRAIN)
            if row is not None and row["result"] is not None:
                results = json.loads(row["result"])
                print(
                    f"wrn_asha: the best configuration was retrained by another worker: {results['run_dir']}/results.json",
                    flush=True,
                )
                return results
            time.sleep(self.settings.poll_s)

    def _retrain(self) -> dict[str, Any]:
        ctx = self.ctx
        found = self.summary()
        best = found["best"]
        params = {k: best.params[k] for k in SEARCH_SPACE}
        module = self._module(params)
        datamodule = ctx.make_datamodule(split="final")
        last = ctx.stage_dir(RETRAIN) / "checkpoints" / "last.ckpt"  # a retraining taken over in the same run directory resumes
        pl.seed_everything(ctx.seed, verbose=False)
        trainer = ctx.trainer(datamodule=datamodule, stage=RETRAIN, model=module, max_epochs=self.max_epochs)
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(last) if last.is_file() else None)
        scores = trainer.test(module, datamodule=datamodule, verbose=False)[0]
        extra = {
            "stage": "all",
            "hyperparameters": {**params, "nesterov": params["momentum"] > 0},
            "trials": found["hpo"]["complete"] + found["hpo"]["pruned"],
            "retrained": True,
            "hpo": found["hpo"],
            "hpo_settings": {k: v for k, v in asdict(self.settings).items() if k != "storage"},
        }
        return ctx.finish(trainer, scores, model=module, datamodule=datamodule, wall_time_s=found["trial_time_s"], extra=extra)


def _run(ctx: RunContext) -> dict[str, Any]:
    worker = _Worker(ctx)
    worker.search()
    return worker.retrain_or_wait()


def _defaults(spec: TaskSpec) -> dict[str, Any]:
    return {
        "data.split": "search",
        "model.network": "wrn",
        "model.nesterov": True,
        "model.schedule": "step",
        "hpo.n_trials": ASHA_TRIALS.get(spec.name, DEFAULT_TRIALS),
    }


def _arguments(parser: Any) -> None:
    parser.add_class_arguments(HPOSettings, "hpo", help="the ASHA study: trials, storage, study name, pruner, heartbeats")


METHOD = register_method(
    Method(
        name="wrn_asha",
        description="WRN-16-4 / ResNet1D tuned by ASHA (Optuna) over lr, weight decay, momentum and dropout, then retrained",
        module=TrainModule,
        run=_run,
        defaults=_defaults,
        add_arguments=_arguments,
        aliases=("asha",),
    )
)
