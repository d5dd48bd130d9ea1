"""WRN tuned by ASHA (``--method wrn_asha``): the pruner's promotions, a real tiny study, resume, PostgreSQL scale-out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers import read_results
from lightning.pytorch.callbacks import Callback
from pg_server import postgres_server

from nb360.errors import UsageError
from nb360.hpo import Claims, storage_url
from nb360.search.wrn_asha import ASHA_TRIALS, HPOSettings, make_pruner, open_study, rung_epochs, suggest, trial_sampler

REPO = Path(__file__).resolve().parents[2]
TINY_NET = '--model.network_options={"depth": 10, "widen": 1}'
State = optuna.trial.TrialState


pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny steps: one intra-op thread


@pytest.fixture(scope="module")
def ninapro(task_fixture) -> list[str]:
    root, options = task_fixture("ninapro")
    return [
        "--task=ninapro",
        "--method=wrn_asha",
        f"--data.root={root}",
        TINY_NET,
        *(f"--data.{k}={v}" for k, v in options.items()),
    ]


@pytest.fixture(scope="module")
def postgres_url():
    """A PostgreSQL server on 127.0.0.1 for the module (stopped and deleted at the end)."""
    try:
        server = postgres_server()
        url = server.__enter__()
    except RuntimeError as err:
        pytest.skip(f"no PostgreSQL server for the scale-out test: {err}")
    yield url
    server.__exit__(None, None, None)


# ----------------------------------------------------------------------------------------------- the pruner alone
# Each fake trial's validation error is flat between rungs: (value up to epoch 3, up to 15, up to 63, from 64 on).
CURVES = [
    (5, 5, 5, 5),
    (3, 3, 3, 3),
    (6, 6, 6, 6),
    (1, 1, 4, 4),
    (2, 2, 2, 2),
    (0, 0, 0, 9),
    (0.5, 0.5, 0.5, 0.5),
    (0.2, 0.2, 0.2, 0.2),
]
# Successive halving with eta 4, rungs at epochs 1, 4, 16, 64: a trial reaching a rung goes on if its value is within the
# best max(1, n // 4) of the n values recorded at that rung so far (its own included); it never waits to be promoted.
#   t0 5: first everywhere, runs to the end.   t1 3: best at every rung so far, runs to the end.
#   t2 6: rung 1 holds 5 3 6, keeps 1 (3): stops at epoch 1.   t3 1: best at rungs 1 and 4; rung 16 holds 5 3 4: stops at 16.
#   t4 2: rung 1 holds 5 3 6 1 2, keeps 1 (1): stops at 1.   t5 0: best at 1, 4 and 16; rung 64 holds 5 3 9: stops at 64.
#   t6 0.5: rung 1 keeps 1 of 7 (0): stops at 1.   t7 0.2: rung 1 keeps 2 of 8 (0, 0.2), rung 4 holds 5 3 1 0 0.2: stops at 4.
EXPECTED_STOP = [None, None, 1, 16, 1, 64, 1, 4]  # None: ran all 200 epochs


def _fake_objective(trial: optuna.Trial) -> float:
    curve = CURVES[trial.number]
    for epoch in range(1, 201):
        value = curve[sum(epoch >= r for r in (4, 16, 64))]
        trial.report(value, epoch)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return value


def test_asha_rungs_promotions_and_pruning_on_a_fake_objective():
    settings = HPOSettings()
    assert rung_epochs(200, settings.min_epochs, settings.reduction_factor) == [1, 4, 16, 64, 200]
    assert ASHA_TRIALS["darcy"] == 104 and ASHA_TRIALS["deepsea"] == 256 and ASHA_TRIALS["spherical"] == 16
    study = optuna.create_study(pruner=make_pruner(settings), direction="minimize")
    study.optimize(_fake_objective, n_trials=len(CURVES))
    trials = study.get_trials()
    assert [None if t.state == State.COMPLETE else t.last_step for t in trials] == EXPECTED_STOP
    assert all(t.state == State.PRUNED for t, stop in zip(trials, EXPECTED_STOP) if stop is not None)
    # the rungs a trial passed are recorded as system attributes by the pruner
    rungs_passed = [sum(k.startswith("completed_rung_") for k in t.system_attrs) for t in trials]
    assert rungs_passed == [4, 4, 1, 3, 1, 4, 1, 2]
    assert study.best_trial.number == 1 and study.best_value == 3


def test_trial_configurations_depend_on_the_seed_and_trial_number_only():
    def draw(seed: int) -> list[dict]:
        study = optuna.create_study(sampler=trial_sampler(seed))
        configs = []
        for _ in range(3):
            trial = study.ask()
            configs.append(suggest(trial))
            study.tell(trial, 0.0)
        return configs

    first = draw(0)
    assert first == draw(0) and first != draw(1)
    assert all(1e-4 <= c["lr"] <= 1e-1 and 1e-5 <= c["weight_decay"] <= 1e-2 for c in first)
    assert all(c["momentum"] in (0.0, 0.3, 0.6, 0.9) and c["dropout"] in (0.0, 0.3, 0.6) for c in first)


# ------------------------------------------------------------------------------------------------ real tiny studies
def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage_url(url)).get_trials()


def _check_study(trials: list, n_trials: int) -> list:
    """No trial lost or run twice: n_trials trials finished (completed or pruned), distinct numbers and configurations."""
    done = [t for t in trials if t.state in (State.COMPLETE, State.PRUNED)]
    assert len(done) == n_trials and not [t for t in trials if t.state in (State.RUNNING, State.WAITING)]
    assert len({t.number for t in done}) == n_trials
    assert len({tuple(sorted(t.params.items())) for t in done}) == n_trials
    return done


def test_a_tiny_study_prunes_and_retrains_the_best_once(ninapro, train, tmp_path):
    assert train(*ninapro, "--hpo.n_trials=4", "--trainer.max_epochs=4") == 0
    run_dir = tmp_path / "runs" / "ninapro" / "wrn_asha" / "seed0"
    results = read_results(run_dir)
    url, name = f"sqlite:///{run_dir / 'hpo.db'}", "nb360-ninapro-wrn_asha-seed0"
    done = _check_study(_trials(url, name), 4)
    for t in done:  # rungs at 1 and 4 epochs: a trial stops after its first epoch or runs all 4
        assert t.last_step == (4 if t.state == State.COMPLETE else 1) and sorted(t.intermediate_values) == list(
            range(1, t.last_step + 1)
        )
    best = min((t for t in done if t.state == State.COMPLETE), key=lambda t: (t.value, t.number))
    assert results["retrained"] is True and results["split"] == "test" and results["epochs"] == 4
    assert results["trials"] == 4 and results["hpo"]["best_trial"] == best.number and results["hpo"]["rungs"] == [1, 4]
    assert {k: results["hyperparameters"][k] for k in best.params} == best.params
    assert results["hyperparameters"]["nesterov"] == (best.params["momentum"] > 0)
    assert results["hpo"]["complete"] + results["hpo"]["pruned"] == 4 and results["hpo"]["fail"] == 0
    assert not (run_dir / "trials").exists() and (run_dir / "retrain" / "checkpoints" / "last.ckpt").is_file()
    claim = Claims(url, name, "test").get("retrain")
    assert json.loads(claim["result"])["value"] == results["value"]
    # the same command again finds the study done and the retraining recorded: nothing is trained twice
    stamp = (run_dir / "results.json").stat().st_mtime_ns
    assert train(*ninapro, "--hpo.n_trials=4", "--trainer.max_epochs=4") == 0
    assert (run_dir / "results.json").stat().st_mtime_ns == stamp and len(_trials(url, name)) == 4


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")  # this test plays the dead worker with study.ask()
def test_a_trial_whose_worker_died_is_run_again_with_the_same_configuration(ninapro, train, tmp_path):
    run_dir = tmp_path / "runs" / "ninapro" / "wrn_asha" / "seed0"
    run_dir.mkdir(parents=True)
    url, name = f"sqlite:///{run_dir / 'hpo.db'}", "nb360-ninapro-wrn_asha-seed0"
    settings = HPOSettings(heartbeat_s=1, grace_s=1)
    study = open_study(url, name, settings, seed=0, lower_is_better=True)
    lost = study.ask()  # a worker took trial 0, beat once, and was killed
    params = suggest(lost)
    study._storage.record_heartbeat(lost._trial_id)
    time.sleep(1.5)
    assert (
        train(
            *ninapro, "--hpo.n_trials=3", "--trainer.max_epochs=2", "--hpo.heartbeat_s=1", "--hpo.grace_s=1", "--hpo.poll_s=0.2"
        )
        == 0
    )
    trials = _trials(url, name)
    assert trials[0].state == State.FAIL and len(trials) == 4
    done = _check_study(trials, 3)
    again = [t for t in done if t.user_attrs.get("retry_of") == 0]
    assert len(again) == 1 and again[0].params == params
    assert read_results(run_dir)["hpo"]["fail"] == 1


class InterruptSecondTrial(Callback):
    """Ctrl-C during the second trial that trains (the callback instance is shared by every trial of a run)."""

    def __init__(self) -> None:
        self.fits = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self.fits += 1
        if self.fits == 2:
            raise KeyboardInterrupt


def test_an_interrupted_trial_is_queued_again_and_the_rerun_completes_the_study(ninapro, train, tmp_path):
    args = [*ninapro, "--hpo.n_trials=3", "--trainer.max_epochs=2"]
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning turns Ctrl-C into exit(1) after its teardown
            train(*args, "--trainer.callbacks+=test_wrn_asha.InterruptSecondTrial")
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C after the first
    run_dir = tmp_path / "runs" / "ninapro" / "wrn_asha" / "seed0"
    url, name = f"sqlite:///{run_dir / 'hpo.db'}", "nb360-ninapro-wrn_asha-seed0"
    trials = _trials(url, name)
    assert [t.state for t in trials] == [State.COMPLETE, State.FAIL, State.WAITING]
    assert trials[2].system_attrs["fixed_params"] == trials[1].params and trials[2].user_attrs["retry_of"] == 1
    assert train(*args) == 0  # the same command again: the queued trial first, then one new trial
    done = _check_study(_trials(url, name), 3)
    assert [t.number for t in done] == [0, 2, 3] and done[1].params == trials[1].params
    assert read_results(run_dir)["trials"] == 3


def test_bad_hpo_options_are_one_line_errors(ninapro, train, capsys):
    assert train(*ninapro, "--hpo.min_epochs=0", "--trainer.max_epochs=2") == 2
    assert "need n_trials >= 1, 1 <= min_epochs <= max_epochs (2)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ PostgreSQL: two workers, one study
class BothWorkersRunning(Callback):
    """A worker's first trial waits until the other worker also holds a trial (``$ASHA_BARRIER``: storage URL, study).

    Makes the two workers overlap whatever their start-up times: without it a fast worker may run every trial
    before the other has imported Lightning.
    """

    def __init__(self) -> None:
        self.waited = False

    def on_train_start(self, trainer, pl_module) -> None:
        if self.waited:
            return
        self.waited = True
        url, name = os.environ["ASHA_BARRIER"].split(" ")
        deadline = time.monotonic() + 120
        while len(_trials(url, name)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)


def test_two_workers_share_one_postgresql_study(ninapro, postgres_url, tmp_path):
    n_trials, name = 5, "two-workers"
    command = [
        sys.executable,
        "train.py",
        *ninapro,
        f"--hpo.n_trials={n_trials}",
        "--trainer.max_epochs=2",
        f"--hpo.storage={postgres_url}",
        f"--hpo.study={name}",
        "--hpo.poll_s=0.2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    command.append("--trainer.callbacks+=test_wrn_asha.BothWorkersRunning")
    here = Path(__file__).resolve().parent
    path = os.pathsep.join(filter(None, [str(here), str(here.parent), os.environ.get("PYTHONPATH")]))
    barrier = f"{postgres_url} {name}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "ASHA_BARRIER": barrier}
    workers = [
        subprocess.Popen(
            [*command, f"--output_dir={tmp_path / f'worker{i}'}"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    done = _check_study(_trials(postgres_url, name), n_trials)
    assert len({t.user_attrs["worker"] for t in done}) == 2, outputs  # both workers ran trials
    # exactly one worker retrained: one results.json, the other reports the same result
    written = [p for p in tmp_path.glob("worker*/ninapro/wrn_asha/seed0/results.json")]
    assert len(written) == 1
    results = json.loads(written[0].read_text())
    assert results["retrained"] and results["trials"] == n_trials and results["hpo"]["storage"].startswith("postgresql")
    finals = [out.strip().splitlines()[-1] for out in outputs]
    assert finals[0].split("->")[0] == finals[1].split("->")[0], finals
    assert sum("retrained by another worker" in out for out in outputs) == 1
    claim = Claims(postgres_url, name, "test").get("retrain")
    assert json.loads(claim["result"])["run_dir"] == results["run_dir"]


@pytest.mark.parametrize("url, message", [("::bad", "is not a database URL"), ("notaurl://x", "cannot open the study storage notaurl://x")])
def test_a_bad_storage_url_is_one_line(url, message):
    settings = HPOSettings(storage=url)
    with pytest.raises(UsageError, match=message):
        open_study(url, "s", settings, seed=0, lower_is_better=True)
