"""Read the ``results.json`` files of nb360 runs into flat rows."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Row", "collect", "row_from_dict"]

_REQUIRED = ("task", "method", "value")


@dataclass(frozen=True)
class Row:
    """One final result: a method's test score on a task for one seed."""

    task: str
    method: str
    seed: int | None
    metric: str
    value: float
    lower_is_better: bool = True
    wall_time_s: float | None = None
    params: int | None = None
    std: float | None = None  # only for reference rows that carry a published std


def row_from_dict(data: dict) -> Row:
    """A row from a ``results.json`` mapping; raises ``ValueError`` on missing or non-numeric fields."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    value = data["value"]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"value is not a number: {value!r}")
    return Row(
        task=str(data["task"]),
        method=str(data["method"]),
        seed=data.get("seed"),
        metric=str(data.get("metric", "")),
        value=float(value),
        lower_is_better=bool(data.get("lower_is_better", True)),
        wall_time_s=data.get("wall_time_s"),
        params=data.get("params"),
    )


def collect(root: str | Path, warn=None) -> tuple[list[Row], int]:
    """Every final result under ``root`` as rows, and how many search-only results were skipped.

    Files with ``"stage": "search"`` (a search's own, non-final scores) are skipped and counted. A file that cannot be
    read or lacks the result fields gives a one-line warning (on stderr, or through ``warn``) and is left out.
    """
    warn = warn or (lambda msg: print(f"nb360: warning: {msg}", file=sys.stderr))
    rows: list[Row] = []
    skipped = 0
    for path in sorted(Path(root).rglob("results.json")):
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict) and data.get("stage") == "search":
                skipped += 1
                continue
            rows.append(row_from_dict(data))
        except (OSError, ValueError, UnicodeDecodeError) as err:
            msg = str(err).splitlines()[0] if str(err) else type(err).__name__
            warn(f"skipping {path}: {msg}")
    return rows, skipped
