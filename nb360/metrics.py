"""The NAS-Bench-360 metrics as torchmetrics ``Metric``s, all reported lower-is-better.

Each metric keeps its state as sums or concatenated tensors, so torchmetrics syncs it
across DDP processes before :meth:`compute`. Metrics that aggregate over groups
(clips, recordings, proteins) take the group keys as extra keyword arguments to
``update``; the TrainModule passes every extra key of a batch, and each metric picks
what it needs. Definitions follow ``docs/tasks.md``.
"""

from __future__ import annotations

import importlib
import math
import warnings
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc, binary_average_precision
from torchmetrics.utilities import dim_zero_cat

from nb360.errors import UsageError
from nb360.losses import relative_l2

__all__ = [
    "TaskMetric",
    "ZeroOneError",
    "OneMinusMAP",
    "RelativeL2",
    "ContactMAE",
    "OneMinusAUROC",
    "OneMinusThresholdedAUROC",
    "FalseNegativeRate",
    "OneMinusVotedF1",
    "METRICS",
    "metric_class",
    "metric_name",
    "metric_lower_is_better",
    "build_metric",
]


class TaskMetric(Metric):
    """A named NB360 metric with a direction and a unit."""

    name: ClassVar[str]
    unit: ClassVar[str] = ""
    lower_is_better: ClassVar[bool] = True
    higher_is_better: ClassVar[bool] = False
    full_state_update: ClassVar[bool] = False
    # version of the definition, recorded in results.json so silent changes cannot mix up tables
    version: ClassVar[int] = 1
    # c when the metric is the error c - q of an accuracy-like q (100 for top-1 error in %, 1 for 1 - mAP);
    # tabular benchmarks store q = c - metric as NATS's "accuracy". None: no such q (MAE8).
    accuracy_complement: ClassVar[float | None] = None


def _cat(state: Tensor | list[Tensor]) -> Tensor:
    if isinstance(state, list) and not state:
        return torch.empty(0)
    return dim_zero_cat(state)


class ZeroOneError(TaskMetric):
    """Top-1 classification error in percent, averaged over samples."""

    name = "error"
    accuracy_complement = 100.0
    unit = "%"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("wrong", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, **_: Any) -> None:
        self.wrong += (preds.argmax(dim=1) != target).sum()
        self.total += target.numel()

    def compute(self) -> Tensor:
        return 100.0 * self.wrong.double() / self.total.clamp_min(1)


class OneMinusMAP(TaskMetric):
    """1 - mean average precision, macro over labels (multi-label tasks such as FSD50K).

    When ``clip`` ids are passed, logits are first averaged over the chunks of each
    clip and the sigmoid is taken of the mean (the FSD50K clip-level protocol). Labels
    without any positive example are left out of the macro average (AP is undefined
    for them) and a warning names how many were left out.
    """

    name = "one_minus_map"
    accuracy_complement = 1.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("logits", [], dist_reduce_fx="cat")
        self.add_state("targets", [], dist_reduce_fx="cat")
        self.add_state("clips", [], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor, clip: Tensor | None = None, **_: Any) -> None:
        self.logits.append(preds.detach().float())
        self.targets.append(target.detach().long())
        if clip is not None:
            self.clips.append(clip.detach().long().reshape(-1))

    def compute(self) -> Tensor:
        logits, targets, clips = _cat(self.logits), _cat(self.targets), _cat(self.clips)
        if clips.numel():
            _, group = torch.unique(clips, return_inverse=True)
            n = int(group.max()) + 1
            counts = torch.zeros(n, device=logits.device).index_add_(0, group, torch.ones_like(group, dtype=torch.float))
            logits = torch.zeros(n, logits.shape[1], device=logits.device).index_add_(0, group, logits)
            logits = logits / counts[:, None]
            index = group[:, None].expand_as(targets)
            targets = targets.new_zeros(n, targets.shape[1]).scatter_reduce_(0, index, targets, "amax", include_self=False)
        scores = torch.sigmoid(logits)
        keep = targets.sum(dim=0) > 0
        if not bool(keep.any()):
            return torch.tensor(float("nan"))
        if not bool(keep.all()):
            warnings.warn(f"{int((~keep).sum())} labels have no positive example and are left out of mAP")
        aps = [binary_average_precision(scores[:, j], targets[:, j]) for j in torch.nonzero(keep).flatten().tolist()]
        return 1.0 - torch.stack(aps).double().mean()


class RelativeL2(TaskMetric):
    """Relative l2 error ||pred - y|| / ||y|| per sample, in physical (decoded) units.

    ``aggregation="sample"`` (default) averages over samples; ``"batch"`` reproduces the
    reference's mean of per-batch means, which differs only when the last batch is short.
    """

    name = "relative_l2"
    accuracy_complement = 1.0  # NB360 Darcy benchmark: "accuracy" = 1 - relative l2

    def __init__(self, aggregation: Literal["sample", "batch"] = "sample", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if aggregation not in ("sample", "batch"):
            raise ValueError(f"aggregation must be 'sample' or 'batch', got {aggregation!r}")
        self.aggregation = aggregation
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, **_: Any) -> None:
        rel = relative_l2(preds.double(), target.double())
        if self.aggregation == "sample":
            self.total += rel.sum()
            self.count += rel.numel()
        else:
            self.total += rel.mean()
            self.count += 1

    def compute(self) -> Tensor:
        return self.total / self.count.clamp_min(1)


class ContactMAE(TaskMetric):
    """PSICOV MAE: mean absolute distance error on long-range pairs within a distance cut-off.

    For each protein (its true length ``length`` crops the maps), predictions are
    symmetrised and clamped at 0.01 A; the pairs (p, q) with ``q - p >= min_separation``
    and true distance ``<= max_distance`` are scored by their mean absolute error; the
    metric is the mean over proteins that have such pairs. The default is MAE_8
    (separation 24, 8 A).

    ``symmetrize="reference"`` reproduces the reference evaluation, which averages the
    two triangles twice (the upper-triangle value it scores is 3/4 of the lower plus
    1/4 of the upper prediction, each clamped); ``"mean"`` scores (P + P^T) / 2.
    """

    name = "mae8"

    def __init__(
        self,
        min_separation: int = 24,
        max_distance: float = 8.0,
        symmetrize: Literal["reference", "mean"] = "reference",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if symmetrize not in ("reference", "mean"):
            raise ValueError(f"symmetrize must be 'reference' or 'mean', got {symmetrize!r}")
        self.min_separation = min_separation
        self.max_distance = max_distance
        self.symmetrize = symmetrize
        self.add_state("per_protein", [], dist_reduce_fx="cat")

    def _symmetric(self, p: Tensor) -> Tensor:
        if self.symmetrize == "mean":
            return ((p + p.T) / 2).clamp_min(0.01)
        upper = torch.triu(torch.ones_like(p, dtype=torch.bool))
        once = torch.where(upper, (p + p.T) / 2, p).clamp_min(0.01)
        return (once + once.T) / 2

    def update(self, preds: Tensor, target: Tensor, length: Tensor, **_: Any) -> None:
        preds = preds.reshape(preds.shape[0], preds.shape[-2], preds.shape[-1]).double()
        target = target.reshape(target.shape[0], target.shape[-2], target.shape[-1]).double()
        values = []
        for p, y, n in zip(preds, target, length.reshape(-1).tolist()):
            p, y = self._symmetric(p[:n, :n]), y[:n, :n]
            idx = torch.arange(n, device=p.device)
            pairs = (idx[None, :] - idx[:, None] >= self.min_separation) & (y <= self.max_distance)
            err = (p - y).abs()[pairs]
            values.append(err.mean() if err.numel() else torch.tensor(float("nan"), device=p.device))
        self.per_protein.append(torch.stack(values))

    def compute(self) -> Tensor:
        values = _cat(self.per_protein)
        values = values[~torch.isnan(values)]
        return values.mean() if values.numel() else torch.tensor(float("nan"))


class OneMinusAUROC(TaskMetric):
    """1 - AUROC, macro over labels (DeepSEA). Labels with a single class are left out."""

    name = "one_minus_auroc"
    accuracy_complement = 1.0

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("scores", [], dist_reduce_fx="cat")
        self.add_state("targets", [], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor, **_: Any) -> None:
        self.scores.append(preds.detach().float())
        self.targets.append(target.detach().long())

    def compute(self) -> Tensor:
        scores, targets = _cat(self.scores), _cat(self.targets)
        positives = targets.sum(dim=0)
        keep = (positives > 0) & (positives < targets.shape[0])
        if not bool(keep.any()):
            return torch.tensor(float("nan"))
        if not bool(keep.all()):
            warnings.warn(f"{int((~keep).sum())} labels have a single class and are left out of AUROC")
        aurocs = [binary_auroc(scores[:, j], targets[:, j]) for j in torch.nonzero(keep).flatten().tolist()]
        return 1.0 - torch.stack(aurocs).double().mean()


class _PixelConfusion(TaskMetric):
    """Pooled per-pixel confusion counts of logits thresholded at ``threshold`` (Cosmic)."""

    def __init__(self, threshold: float = 0.5, use_ignore_mask: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold = threshold
        self.use_ignore_mask = use_ignore_mask
        for key in ("tp", "fp", "tn", "fn"):
            self.add_state(key, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, ignore: Tensor | None = None, **_: Any) -> None:
        pred = preds > self.threshold
        truth = target > 0.5
        keep = torch.ones_like(truth) if ignore is None or not self.use_ignore_mask else ignore < 0.5
        self.tp += (pred & truth & keep).sum()
        self.fp += (pred & ~truth & keep).sum()
        self.tn += (~pred & ~truth & keep).sum()
        self.fn += (~pred & truth & keep).sum()

    def _rates(self) -> tuple[float, float]:
        pos, neg = int(self.tp + self.fn), int(self.fp + self.tn)
        fnr = int(self.fn) / pos if pos else math.nan
        fpr = int(self.fp) / neg if neg else math.nan
        return fnr, fpr


class OneMinusThresholdedAUROC(_PixelConfusion):
    """1 - AUROC of binarised predictions, pooled over all pixels: (FNR + FPR) / 2.

    With hard 0/1 predictions the ROC curve has one inner point, so AUROC is
    (TPR + 1 - FPR) / 2. The reference binarises the raw logits at 0.5 (not the
    probabilities) and does not apply the ignore mask; both are the defaults here.
    """

    name = "one_minus_auroc"
    accuracy_complement = 1.0

    def compute(self) -> Tensor:
        fnr, fpr = self._rates()
        return torch.tensor((fnr + fpr) / 2, dtype=torch.float64)


class FalseNegativeRate(_PixelConfusion):
    """False-negative rate in percent at the same threshold (the NAS-Perf-360 Cosmic metric)."""

    name = "fnr"
    unit = "%"

    def compute(self) -> Tensor:
        fnr, _ = self._rates()
        return torch.tensor(100.0 * fnr, dtype=torch.float64)


class OneMinusVotedF1(TaskMetric):
    """1 - macro F1 over classes after a per-recording majority vote of window predictions (ECG).

    Each recording's prediction is the most frequent window prediction; a tie goes to
    the label seen first in window order (``window`` indices give that order across
    DDP processes, otherwise arrival order is used). The recording's truth is the vote
    of its window labels. F1 is averaged over all ``num_classes`` classes; a class
    absent from both truth and predictions scores 0.
    """

    name = "one_minus_f1"
    accuracy_complement = 1.0

    def __init__(self, num_classes: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        for key in ("preds", "targets", "records", "windows"):
            self.add_state(key, [], dist_reduce_fx="cat")

    def update(
        self, preds: Tensor, target: Tensor, record: Tensor, window: Tensor | None = None, **_: Any
    ) -> None:
        self.preds.append(preds.argmax(dim=1).long())
        self.targets.append(target.long().reshape(-1))
        self.records.append(record.long().reshape(-1))
        if window is not None:
            self.windows.append(window.long().reshape(-1))

    def _vote(self, labels: np.ndarray, group: np.ndarray, n_groups: int) -> np.ndarray:
        c = self.num_classes
        key = group * c + labels
        counts = np.bincount(key, minlength=n_groups * c).reshape(n_groups, c)
        first = np.full(n_groups * c, len(labels), dtype=np.int64)
        np.minimum.at(first, key, np.arange(len(labels)))
        first = first.reshape(n_groups, c)
        # most votes first, then the earliest first appearance
        return np.argmax(counts * (len(labels) + 1) - first, axis=1)

    def compute(self) -> Tensor:
        preds, targets, records = (_cat(s).cpu().numpy() for s in (self.preds, self.targets, self.records))
        windows = _cat(self.windows).cpu().numpy()
        if len(windows) == len(preds) and len(preds):
            order = np.argsort(windows, kind="stable")
            preds, targets, records = preds[order], targets[order], records[order]
        _, group = np.unique(records, return_inverse=True)
        n = int(group.max()) + 1 if len(group) else 0
        if n == 0:
            return torch.tensor(float("nan"))
        voted_pred, voted_true = self._vote(preds, group, n), self._vote(targets, group, n)
        f1 = []
        for c in range(self.num_classes):
            tp = np.sum((voted_pred == c) & (voted_true == c))
            wrong = np.sum((voted_pred == c) != (voted_true == c))  # false positives + false negatives
            f1.append(2 * tp / (2 * tp + wrong) if tp + wrong else 0.0)
        return torch.tensor(1.0 - float(np.mean(f1)), dtype=torch.float64)


METRICS: dict[str, type[TaskMetric]] = {
    cls.name: cls
    for cls in (ZeroOneError, OneMinusMAP, RelativeL2, ContactMAE, OneMinusAUROC, FalseNegativeRate, OneMinusVotedF1)
}
METRICS["one_minus_auroc_thresholded"] = OneMinusThresholdedAUROC


def metric_class(name: str) -> type[TaskMetric]:
    """Resolve a metric by registry name or by import path ``package.module:Class``."""
    if name in METRICS:
        return METRICS[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise UsageError(f"cannot import metric {name!r}: {err}") from None
        if not (isinstance(cls, type) and issubclass(cls, Metric)):
            raise UsageError(f"metric {name!r} is not a torchmetrics Metric class")
        return cls
    raise UsageError(f"unknown metric {name!r}; choose one of: {', '.join(sorted(METRICS))}, or give module:Class")


def metric_name(cls: type[Metric]) -> str:
    """The name a metric is logged and reported under (``val/<name>``, ``results.json``)."""
    return getattr(cls, "name", None) or cls.__name__.lower()


def metric_lower_is_better(cls: type[Metric]) -> bool:
    """Direction of a metric: every NB360 metric is lower-is-better; user metrics must declare theirs."""
    if issubclass(cls, TaskMetric):
        return cls.lower_is_better
    higher = getattr(cls, "higher_is_better", None)
    if higher is None:
        raise UsageError(f"metric {cls.__name__} must set the torchmetrics attribute higher_is_better")
    return not higher


def build_metric(name: str, **kwargs: Any) -> Metric:
    return metric_class(name)(**kwargs)
