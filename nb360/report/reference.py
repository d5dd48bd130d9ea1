"""The NAS-Bench-360 paper's Table 2 (mean ± std over 3 seeds, lower is better), shipped as ``reference.csv``.

Metrics: error % (CIFAR-100, Spherical, NinaPro, Satellite), relative ℓ2 (Darcy), MAE₈ (PSICOV), 1−AUROC (Cosmic,
NeurIPS version; the earlier NAS-Perf-360 used FNR %), 1−mAP (FSD50K), 1−F1 (ECG), 1−AUROC (DeepSEA).
"""

from __future__ import annotations

import csv
from importlib import resources

from nb360.report.collect import Row

__all__ = ["PAPER_METHODS", "PAPER_METRICS", "reference_rows"]

#: nb360 method name -> the paper's label, in the paper's row order.
PAPER_METHODS = {
    "wrn": "WRN default",
    "densenas_random": "DenseNAS random",
    "densenas": "DenseNAS original",
    "perceiver": "Perceiver IO",
    "xgboost": "XGBoost",
    "wrn_asha": "WRN ASHA",
    "gaea": "DARTS (GAEA)",
    "autodeeplab": "Auto-DL",
    "amber": "AMBER",
    "expert": "Expert",
}

PAPER_METRICS = {
    "cifar100": "error %",
    "spherical": "error %",
    "ninapro": "error %",
    "fsd50k": "1-mAP",
    "darcy": "relative l2",
    "psicov": "MAE8",
    "cosmic": "1-AUROC",
    "ecg": "1-F1",
    "satellite": "error %",
    "deepsea": "1-AUROC",
}


def reference_rows(suffix: str = "") -> list[Row]:
    """The paper's Table 2 as rows (``seed=None``, ``std`` set); ``suffix`` is appended to each method name."""
    text = resources.files("nb360.report").joinpath("reference.csv").read_text()
    return [
        Row(
            task=r["task"],
            method=r["method"] + suffix,
            seed=None,
            metric=PAPER_METRICS[r["task"]],
            value=float(r["mean"]),
            std=float(r["std"]),
        )
        for r in csv.DictReader(text.splitlines())
    ]
