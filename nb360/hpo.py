"""Optuna studies that several workers share: storage URLs, heartbeats, database claims, per-epoch reports.

Used by ``--method wrn_asha`` and meant for any method whose trials run in parallel processes
or machines: the study lives in any SQLAlchemy database (SQLite by default, PostgreSQL to scale
out); :class:`Claims` adds a small table beside Optuna's so that workers can take exclusive,
heartbeat-guarded claims (the lock under which a trial is created, the single retraining of the
best configuration) with atomic INSERTs that work on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import inspect
import json
import random
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

from nb360.errors import UsageError

__all__ = ["Claims", "OptunaReport", "Heartbeat", "public_url", "rdb_storage", "requeue", "storage_url"]


class OptunaReport(Callback):
    """Reports the validation metric to an Optuna trial after every epoch and stops the fit when the pruner says so."""

    def __init__(self, trial: Any, key: str) -> None:
        self.trial, self.key = trial, key
        self.value: float | None = None
        self.pruned_at: int | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.key)
        if trainer.sanity_checking or value is None:
            return
        step = trainer.current_epoch + 1  # epochs trained
        self.value = float(value)
        self.trial.report(self.value, step)
        if self.trial.should_prune():
            self.pruned_at = step
            trainer.should_stop = True


class Heartbeat:
    """Calls ``beat`` now and then every ``interval`` seconds in a daemon thread, until the ``with`` block ends."""

    def __init__(self, beat: Callable[[], Any], interval: float) -> None:
        self.beat, self.interval, self.stop = beat, interval, threading.Event()

    def _loop(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.beat()
            except Exception:  # a missed beat is harmless; a dead database shows up in the main thread
                pass

    def __enter__(self) -> Heartbeat:
        self.beat()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


class Claims:
    """Named claims on a study in the study's own database (table ``nb360_claims``), taken by an atomic INSERT.

    A claim row holds its owner, a heartbeat time and, once the owner is done, a result. The
    primary key ``(study, name)`` makes the INSERT of the first claimant succeed and every other
    fail; a claim whose heartbeat is older than ``grace`` is taken over by a compare-and-set
    UPDATE on (owner, heartbeat), so of several workers noticing a dead owner only one wins.
    """

    def __init__(self, url: str, study: str, owner: str) -> None:
        import sqlalchemy as sa

        self.sa, self.study, self.owner = sa, study, owner
        self.engine = sa.create_engine(storage_url(url), poolclass=sa.pool.NullPool)
        meta = sa.MetaData()
        self.table = sa.Table(
            "nb360_claims",
            meta,
            sa.Column("study", sa.String(512), primary_key=True),
            sa.Column("name", sa.String(64), primary_key=True),
            sa.Column("owner", sa.String(512), nullable=False),
            sa.Column("heartbeat", sa.Float, nullable=False),
            sa.Column("result", sa.Text, nullable=True),
        )
        for attempt in range(5):  # workers starting together race to create the table
            try:
                meta.create_all(self.engine)
                break
            except sa.exc.DBAPIError:
                if attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _where(self, name: str) -> Any:
        t = self.table
        return (t.c.study == self.study) & (t.c.name == name)

    def get(self, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(self.sa.select(self.table).where(self._where(name))).mappings().first()
        return dict(row) if row else None

    def claim(self, name: str, grace: float) -> bool:
        """Take the claim if nobody holds it, or if its holder's heartbeat is older than ``grace`` and it has no result."""
        sa = self.sa
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(self.table).values(study=self.study, name=name, owner=self.owner, heartbeat=time.time()))
            return True
        except sa.exc.IntegrityError:
            pass
        row = self.get(name)
        if row is None or row["result"] is not None or time.time() - row["heartbeat"] <= grace:
            return False
        t = self.table
        stale = self._where(name) & (t.c.owner == row["owner"]) & (t.c.heartbeat == row["heartbeat"])
        with self.engine.begin() as conn:
            taken = conn.execute(sa.update(self.table).where(stale).values(owner=self.owner, heartbeat=time.time()))
        return taken.rowcount == 1

    def _mine(self, name: str) -> Any:
        return self._where(name) & (self.table.c.owner == self.owner)

    def beat(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.sa.update(self.table).where(self._mine(name)).values(heartbeat=time.time()))

    def finish(self, name: str, result: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.sa.update(self.table).where(self._mine(name)).values(result=json.dumps(result)))

    def release(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(self.sa.delete(self.table).where(self._mine(name)))

    @contextmanager
    def lock(self, name: str, grace: float = 60.0) -> Iterator[None]:
        """A mutex across workers (held for milliseconds: a holder that died is overridden after ``grace``)."""
        while not self.claim(name, grace):
            time.sleep(0.05 + 0.05 * random.random())
        try:
            yield
        finally:
            self.release(name)


def requeue(study: Any, trial: Any) -> None:
    """Queue the configuration of a trial whose worker died (called once, by the worker that failed it)."""
    root = trial.user_attrs.get("retry_of", trial.number)
    study.enqueue_trial(trial.params, user_attrs={"retry_of": root}, skip_if_exists=False)
    print(f"nb360: trial {trial.number} lost its worker (no heartbeat); its configuration is queued again", flush=True)


def rdb_storage(url: str, heartbeat_s: float, grace_s: float) -> Any:
    """An Optuna RDB storage whose running trials have heartbeats; a trial whose worker died is requeued once."""
    import optuna

    heartbeat = {"heartbeat_interval": heartbeat_s, "grace_period": grace_s}
    key = "heartbeat_stale_trial_callback"  # Optuna >= 4.9; older releases call it failed_trial_callback
    key = key if key in inspect.signature(optuna.storages.RDBStorage).parameters else "failed_trial_callback"
    for attempt in range(5):  # workers starting together race to create Optuna's tables
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **heartbeat, **{key: requeue})
        except Exception as err:
            if attempt == 4:
                detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
                raise UsageError(f"cannot open the study storage {public_url(url)}: {type(err).__name__}: {detail}") from None
            time.sleep(0.2 * (attempt + 1))


def storage_url(url: str) -> str:
    """``url`` with a PostgreSQL driver that is installed: SQLAlchemy 2.1 reads ``postgresql://`` as psycopg 3,
    nb360 installs psycopg2 (``pip install nb360[postgres]``), so a plain ``postgresql://`` URL uses whichever is present."""
    import importlib.util

    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - SQLAlchemy raises ArgumentError for any malformed URL
        raise UsageError(f"--hpo.storage {url!r} is not a database URL (e.g. sqlite:///hpo.db, postgresql://u@host/db)") from None
    if parsed.drivername == "postgresql" and importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2"):
        return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return url


def public_url(url: str) -> str:
    """``url`` with its password hidden (for logs and results)."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
