"""Scoring candidate architectures with shared weights, for the searches that pick among samples (ENAS, SETN, RSPS, AMBER).

A candidate is scored with the task's metric, oriented so that higher is better, on one batch of the
search split's validation part. Every process scores the same batches. :func:`agreed` makes the final
pick rank 0's, so floating-point noise between processes cannot change it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch.distributed as dist
from torch import Tensor, nn

from nb360.metrics import build_metric, metric_class, metric_lower_is_better
from nb360.tasks import TaskSpec

__all__ = ["CandidateMetric", "validation_batches", "agreed"]


class CandidateMetric(nn.Module):
    """The task metric of one batch's predictions as a float, higher is better (``nan`` where it is undefined)."""

    def __init__(self, spec: TaskSpec, metric_options: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.metric = build_metric(spec.metric, **{**spec.metric_kwargs, **(metric_options or {})})
        self.metric.sync_on_compute = False  # every process scores the same batches
        self.higher_is_better = not metric_lower_is_better(metric_class(spec.metric))

    def forward(self, out: Tensor, y: Tensor, **extras: Tensor) -> float:
        self.metric.reset()
        self.metric.update(out, y, **extras)
        value = float(self.metric.compute())
        self.metric.reset()
        return value if self.higher_is_better else -value


def validation_batches(datamodule: Any, size: int, device: Any) -> Iterator[dict[str, Tensor]]:
    """Batches of ``size`` validation samples, in order, cycling (every process sees the same)."""
    from nb360.search.bilevel import _gather

    dataset = datamodule.datasets["val"]
    while True:
        for start in range(0, len(dataset), size):
            batch = _gather(dataset, range(start, min(start + size, len(dataset))))
            yield {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def agreed(index: int) -> int:
    """Rank 0's ``index`` on every process (the index itself outside of DDP)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        chosen = [index]
        dist.broadcast_object_list(chosen, src=0)
        return chosen[0]
    return index
