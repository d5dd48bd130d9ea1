"""Read the results of a W&B project's runs (through the public API) into the rows the report builds on.

``train.py --logger wandb`` puts every field of ``results.json`` into the run summary as ``result/<field>``
(:data:`nb360.run.WANDB_RESULT_KEYS`), groups runs by task and gives the method as job type. A run without
``result/value`` has not finished its final stage and is skipped; runs from before the summary held the task,
method and seed fall back on the group, job type and the config's ``seed_everything``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from nb360.errors import DataError
from nb360.report.collect import Row, row_from_dict

__all__ = ["collect_wandb", "row_from_wandb_run"]

PREFIX = "result/"


def _summary(run: Any) -> dict[str, Any]:
    summary = getattr(run, "summary", None) or {}
    data = getattr(summary, "_json_dict", None)  # wandb's summary object; a plain mapping elsewhere
    return dict(data if isinstance(data, dict) else summary)


def row_from_wandb_run(run: Any) -> Row | None:
    """The run's final result as a row, or ``None`` when the run holds no final result."""
    fields = {k.removeprefix(PREFIX): v for k, v in _summary(run).items() if k.startswith(PREFIX)}
    if "value" not in fields:
        return None
    config = getattr(run, "config", None) or {}
    fields.setdefault("task", getattr(run, "group", None))
    fields.setdefault("method", getattr(run, "job_type", None))
    fields.setdefault("seed", config.get("seed_everything"))
    if fields.get("split") == "val":
        return None  # a search stage's own score, not a final result
    return row_from_dict({k: v for k, v in fields.items() if v is not None})


def _first_line(err: Exception) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def _default_api() -> Any:
    import wandb

    return wandb.Api(timeout=30)


def collect_wandb(project: str, api: Any = None, warn: Callable[[str], None] | None = None) -> tuple[list[Row], int]:
    """Rows of the finished nb360 runs of ``project`` (``entity/project`` or ``project``), and how many were skipped.

    ``api`` is a ``wandb.Api`` (made here by default: it needs network access and a W&B login or ``WANDB_API_KEY``).
    """
    warn = warn or (lambda msg: print(f"nb360: warning: {msg}", file=sys.stderr))
    try:
        api = _default_api() if api is None else api
        runs: Iterable[Any] = list(api.runs(project))
    except Exception as err:  # wandb raises its own CommError/ValueError/requests errors: all mean "cannot read"
        raise DataError(f"cannot read W&B project {project!r}: {_first_line(err)}") from None
    rows, skipped = [], 0
    for run in runs:
        try:
            row = row_from_wandb_run(run)
        except ValueError as err:
            warn(f"skipping W&B run {getattr(run, 'id', '?')}: {_first_line(err)}")
            continue
        if row is None:
            skipped += 1
        else:
            rows.append(row)
    return rows, skipped
