"""The training protocol of a precompute, and what identifies one (its manifest).

The NB201/NATS protocol (``configs/nas-benchmark/hyper-opts/{01,12,90,200}E.config``):
SGD with Nesterov momentum 0.9, learning rate 0.1 annealed by a per-epoch cosine to 0,
weight decay 5e-4, no warm-up, batch 256, seeds 777 (888, 999 for more trials). NB360
kept it for NinaPro and Darcy Flow and changed only Darcy's batch (16) and loss; the
batch size table below says so in one place.

Two evaluation protocols name their sets as the stored benchmarks do:

* ``nb360`` (default, as the NB360 precompute): train on train + validation, score the
  test set every epoch, stored as ``ori-test``;
* ``holdout``: train on the training part only, score the validation set (``x-valid``)
  and the test set (``x-test``) every epoch, so searches can use a validation signal
  that never saw the test set (NATS's ``x-valid``/``x-test`` keys mean the same).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from nb360.errors import UsageError

__all__ = ["Protocol", "EvalProtocol", "EVAL_SETS", "NB201_BATCH_SIZES", "parse_shard"]

EvalProtocol = Literal["nb360", "holdout"]

# stored set name -> (DataModule split, part of that split)
EVAL_SETS: dict[str, dict[str, tuple[str, str]]] = {
    "nb360": {"ori-test": ("final", "test")},
    "holdout": {"x-valid": ("search", "val"), "x-test": ("final", "test")},
}
TRAIN_SPLIT = {"nb360": "final", "holdout": "search"}

NB201_BATCH_SIZES = {"darcy": 16}  # NB360 precompute/darcyflow hyper-opts; every other task keeps NB201's 256


@dataclass(frozen=True)
class Protocol:
    """Everything that decides the numbers of a precompute (two runs with equal protocols may share a store)."""

    space: str
    task: str
    epochs: int
    hp: str
    eval_protocol: EvalProtocol = "nb360"
    seeds: tuple[int, ...] = (777,)
    batch_size: int = 256
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    min_lr: float = 0.0
    data_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, got {self.epochs}")
        if self.eval_protocol not in EVAL_SETS:
            raise UsageError(f"unknown evaluation protocol {self.eval_protocol!r}; choose one of: {', '.join(EVAL_SETS)}")
        if not self.seeds:
            raise UsageError("give at least one seed")

    @property
    def eval_sets(self) -> dict[str, tuple[str, str]]:
        return EVAL_SETS[self.eval_protocol]

    @property
    def train_split(self) -> str:
        return TRAIN_SPLIT[self.eval_protocol]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["seeds"] = list(self.seeds)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Protocol:
        return cls(**{**data, "seeds": tuple(data["seeds"])})

    def differences(self, other: Protocol) -> list[str]:
        """Names of the settings in which two protocols differ."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [key for key in mine if mine[key] != theirs[key]]


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` (0 <= i < N) as ``(i, N)``: this worker's share of the architectures."""
    part, sep, total = text.partition("/")
    if not (sep and part.isdigit() and total.isdigit()) or not 0 <= int(part) < int(total):
        raise UsageError(f"--shard must be i/N with 0 <= i < N (e.g. 0/8 for the first of 8 workers), got {text!r}")
    return int(part), int(total)
