"""What a tabular store holds: its columns, the score rule of each dataset, and one run as a :class:`RunRecord`.

The on-disk layout is described in :mod:`nb360.tabular.store`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nb360.errors import UsageError

__all__ = [
    "DERIVED_COLUMNS",
    "EVAL_COLUMNS",
    "FORMAT",
    "OPTIONAL_COLUMNS",
    "SCORE_RULES",
    "TRAIN_COLUMNS",
    "VERSION",
    "RunRecord",
    "ScoreRule",
    "score_rule",
]

FORMAT = "nb360-tabular"
VERSION = 2
#: Per-epoch columns every group stores for training and for each evaluation set (NaN where not recorded).
TRAIN_COLUMNS = ("loss", "acc1", "acc5", "time")
EVAL_COLUMNS = ("loss", "acc1", "time")
#: Per-epoch columns a group stores only if one of its runs recorded them (train and evaluation sets alike):
#: ``metric`` is the task's own NB360 metric (NinaPro's error in %, ECG's 1 - F1, PSICOV's MAE8, ...).
OPTIONAL_COLUMNS = ("metric",)
#: Columns the builder derives: ``time_total`` is the running sum of ``time`` over epochs (epoch 0 first).
DERIVED_COLUMNS = {"time_total": "time"}
NAN = math.nan


@dataclass(frozen=True)
class ScoreRule:
    """Which stored column is a dataset's task score, and which way is better."""

    column: str  # "acc1", "loss" or "metric"
    name: str
    unit: str
    lower_is_better: bool

    def __post_init__(self) -> None:
        if self.column not in ("acc1", "loss", "metric"):
            raise UsageError(f"a score column is 'acc1', 'loss' or 'metric', not {self.column!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"column": self.column, "name": self.name, "unit": self.unit, "lower_is_better": self.lower_is_better}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScoreRule:
        return cls(str(d["column"]), str(d["name"]), str(d.get("unit", "")), bool(d["lower_is_better"]))


_ACCURACY = ScoreRule("acc1", "accuracy", "%", False)
_RELATIVE_L2 = ScoreRule("loss", "relative_l2", "fraction", True)
#: The task score of every known NATS training set. NB360's Darcy files store 1 - relative l2 as
#: "accuracy" and the relative l2 as "loss", so the score is the loss column, lower is better.
#: Stores built by :mod:`nb360.precompute` name their own rule (usually the ``metric`` column).
SCORE_RULES: dict[str, ScoreRule] = {
    "cifar10-valid": _ACCURACY,
    "cifar10": _ACCURACY,
    "cifar100": _ACCURACY,
    "ImageNet16-120": _ACCURACY,
    "ninapro": _ACCURACY,
    "darcyflow": _RELATIVE_L2,
    "darcy": _RELATIVE_L2,
}


def column_stem(files: Mapping[str, str], set_name: str, column: str) -> str:
    """``train.loss`` / ``<safe set>.acc1``: a column's file name without ``.npy`` (``files`` maps set names to safe names)."""
    return f"train.{column}" if set_name == "train" else f"{files[set_name]}.{column}"


def load_space(name: str) -> Any:
    """The search space ``name`` (imported when first needed)."""
    from nb360.spaces import get_space

    return get_space(name)


def score_rule(dataset: str, override: ScoreRule | Mapping[str, Any] | None = None) -> ScoreRule:
    """The score rule of ``dataset``: ``override`` if given, else :data:`SCORE_RULES`; unknown datasets need an override."""
    if override is not None:
        return override if isinstance(override, ScoreRule) else ScoreRule.from_dict(override)
    if dataset not in SCORE_RULES:
        raise UsageError(
            f"no score rule for dataset {dataset!r} (known: {', '.join(SCORE_RULES)}); pass score={{dataset: "
            "{'column': 'acc1'|'loss'|'metric', 'name': ..., 'unit': ..., 'lower_is_better': ...}}"
        )
    return SCORE_RULES[dataset]


@dataclass
class RunRecord:
    """One training run of one architecture: what a NATS ``ResultsCount`` holds, as arrays.

    ``train`` maps ``loss, acc1, acc5, time`` and every ``evals[set]`` maps ``loss, acc1, time``
    to ``(epochs,)`` arrays (missing keys and NaN mean "not recorded"); either may also map
    ``metric`` (the task's NB360 metric, see :data:`OPTIONAL_COLUMNS`). ``params`` and
    ``flops`` are in millions, ``latency`` a list of seconds (or None). ``arch_config`` and
    ``seed_label`` (the value of NATS's ``seed`` field, e.g. ``'0777'``) are only needed
    for an exact NATS export, and so is ``nan_values``: for a column id ``"train.loss"`` or
    ``"<set>.acc1"``, a bool ``(epochs,)`` mask of NaNs that the source recorded as values
    (all other NaNs are "not recorded").
    """

    arch_index: int
    dataset: str
    hp: str
    seed: int
    epochs: int
    train: dict[str, np.ndarray] = field(default_factory=dict)
    evals: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    params: float = NAN
    flops: float = NAN
    latency: list[float] | None = None
    arch_config: dict[str, Any] | None = None
    seed_label: int | str | None = None
    nan_values: dict[str, np.ndarray] | None = None
