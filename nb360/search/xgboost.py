"""``--method xgboost``: the gradient-boosted-trees baseline of the NB360 paper (NB ``xgboost/xgboost_360.py``).

Inputs are the task's own batches, collected through its DataModule's loaders and flattened
to one feature vector per sample; targets are flattened likewise. The objective follows the
task's loss, as the reference chooses it per task:

* cross-entropy tasks (CIFAR-100, Spherical, NinaPro, Satellite, ECG): ``multi:softmax`` over
  the task's classes (ECG: ``multi:softprob``, which is what the reference's ``binary:logistic``
  becomes in ``XGBClassifier`` with 4 classes; the two differ only in the early-stopping metric);
* binary cross-entropy tasks (DeepSEA, FSD50K, Cosmic): one ``binary:logistic`` output per label
  (per pixel for Cosmic), XGBoost's multi-label classification;
* regression tasks (Darcy Flow, PSICOV): one squared-error output per pixel.

Shared parameters are the reference's: depth 3, learning rate 1, row subsampling 0.9, ``hist``
trees, at most 100 rounds, early stopping after 5 rounds without improvement on a validation
set. Gradient-based sampling exists only on CUDA; on CPU sampling is uniform (``sampling_method:
auto``). The booster, cut to its best round, then predicts through the same evaluation path as
the neural methods (the DataModule's ``eval_forward``, e.g. PSICOV's tiling) and is scored by the
task's own metric objects, so ``results.json`` has the same content. Its margins play the role of
the network's logits (ECG's record vote, FSD50K's clip averaging and Cosmic's thresholding act
on them as on logits).

Which data fit and stop the trees (``--model.validation``):

* search split: fit on the training part, stop early on the validation part (which is also
  the part scored, as it is for the neural methods' best checkpoint);
* final split, ``holdout`` (default): the final training set minus a seeded held-out piece
  (``holdout_fraction``, 10 %) that stops the trees; the test set is scored. The final split has
  no validation set, so this keeps the test set out of every choice;
* final split, ``search``: fit on the search split's training part and stop on its validation
  part, as the reference script does (it never merges val into train), then score the final
  test set. For ECG the search split's validation recordings overlap the final test recordings
  (the two protocols split the recordings differently), and Darcy Flow's input normalisation
  is then fitted on 900 instead of 1000 samples; use it to reproduce the reference.

Before collecting anything the method estimates the memory the data and the boosting state
need and refuses, in one line, when it exceeds what the machine has (PSICOV: about 20 GB of
features; the reference could not fit it on a 16 GB V100 and reports n/a).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from nb360.errors import UsageError
from nb360.io import write_json
from nb360.methods import Method, register_method
from nb360.run import RunContext
from nb360.search.task_module import TaskModule
from nb360.tasks import TaskSpec

__all__ = ["XGBoostModule", "BoostedTrees", "objective_for", "estimate_bytes", "collect"]

INSTALL_HINT = "pip install xgboost-cpu (or xgboost on GPU machines)"
# the reference's objective where the task's loss alone does not give it (see the module docstring)
OBJECTIVE = {"ecg": "multi:softprob"}


def _import_xgboost() -> Any:
    try:
        import xgboost
    except ImportError:
        raise UsageError(f"--method xgboost needs the xgboost package: {INSTALL_HINT}") from None
    return xgboost


def objective_for(spec: TaskSpec) -> str:
    """XGBoost objective of a task from its loss: multi-class, multi-label (binary per output) or regression."""
    if spec.loss == "cross_entropy":
        return "multi:softmax"
    if "bce" in spec.loss:
        return "binary:logistic"
    return "reg:squarederror"


def estimate_bytes(samples: int, features: int, outputs: int) -> int:
    """Memory that fitting needs, roughly: the collected float32 features (and their concatenation copy),
    XGBoost's 1-byte histogram index of them, and per output the label, gradient pair and prediction."""
    return samples * features * (2 * 4 + 1) + samples * outputs * (4 + 8 + 4)


def available_bytes(device: str) -> int:
    """Free memory: host RAM (``MemAvailable``) and, on CUDA, the smaller of it and the device's free memory."""
    free = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if device.startswith("cuda") and torch.cuda.is_available():
        free = min(free, torch.cuda.mem_get_info()[0])
    return int(free)


class BoostedTrees(nn.Module):
    """A fitted booster as a network: flattened channels-first inputs in, margins (logits) of the target's shape out.

    ``decoder`` maps the margins to target units (Darcy Flow's normaliser of the data the trees were fitted on).
    """

    def __init__(self) -> None:
        super().__init__()
        self.booster: Any = None
        self.output_shape: tuple[int, ...] = ()
        self.decoder: nn.Module = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        if self.booster is None:
            raise RuntimeError("the XGBoost model has not been fitted")
        features = x.detach().float().cpu().reshape(len(x), -1).numpy()
        margin = self.booster.inplace_predict(features, predict_type="margin")
        out = torch.from_numpy(np.ascontiguousarray(margin, dtype=np.float32)).reshape(len(x), *self.output_shape)
        return self.decoder(out.to(x.device))


class XGBoostModule(TaskModule):
    """XGBoost on a task: its hyperparameters as ``--model.*`` options; the task's metrics score its predictions.

    Args:
        task: registered task name.
        n_estimators: maximum boosting rounds (the ``XGBClassifier``/``XGBRegressor`` default of the reference, 100).
        max_depth, learning_rate, subsample, tree_method, early_stopping_rounds: XGBoost parameters (reference values).
        sampling_method: ``auto`` (``gradient_based`` on CUDA, where the reference ran; ``uniform`` on CPU,
            the only choice there), ``uniform`` or ``gradient_based``.
        objective: ``None`` derives it from the task's loss (:func:`objective_for`).
        eval_metric: the early-stopping metric (``None``: ``merror`` for ``multi:softmax``, as the reference sets it,
            else XGBoost's default for the objective).
        random_state: the trees' seed (``None``: the run's ``--seed_everything``, as the reference's seeds 0..2).
        device: ``auto`` (``cuda`` when a GPU and a CUDA build of XGBoost are present), ``cpu`` or ``cuda``.
        n_jobs: CPU threads (``None``: all).
        validation: what stops the trees in the final split, ``holdout`` or ``search`` (see the module docstring).
        holdout_fraction: the held-out share of the final training set with ``validation=holdout``.
        memory_limit_gb: refuse above this estimated memory (``None``: the memory the machine has free).
        metric_options: keyword arguments for the task's metric.
    """

    def __init__(
        self,
        task: str = "darcy",
        n_estimators: int = 100,
        max_depth: int = 3,
        learning_rate: float = 1.0,
        subsample: float = 0.9,
        sampling_method: Literal["auto", "uniform", "gradient_based"] = "auto",
        tree_method: str = "hist",
        early_stopping_rounds: int = 5,
        objective: str | None = None,
        eval_metric: str | None = None,
        random_state: int | None = None,
        device: str = "auto",
        n_jobs: int | None = None,
        validation: Literal["holdout", "search"] = "holdout",
        holdout_fraction: float = 0.1,
        memory_limit_gb: float | None = None,
        metric_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(task, metric_options)
        self.save_hyperparameters()
        if validation not in ("holdout", "search"):
            raise UsageError(f"--model.validation must be 'holdout' or 'search', got {validation!r}")
        if not 0.0 < holdout_fraction < 1.0:
            raise UsageError(f"--model.holdout_fraction must lie in (0, 1), got {holdout_fraction}")
        self.net = BoostedTrees()

    def setup(self, stage: str) -> None:
        """The trees predict in target units already (their decoder is the fitting data's), so no decoder is added."""

    def resolved_device(self) -> str:
        device = self.hparams.device
        if device != "auto":
            return device
        build = _import_xgboost().build_info()
        return "cuda" if torch.cuda.is_available() and build.get("USE_CUDA") else "cpu"

    def params(self, seed: int) -> dict[str, Any]:
        """The booster's parameters (``xgboost.train``)."""
        hp, device = self.hparams, self.resolved_device()
        objective = hp.objective or objective_for(self.spec)
        sampling = hp.sampling_method
        if sampling == "auto":
            sampling = "gradient_based" if device.startswith("cuda") else "uniform"
        params = {
            "objective": objective,
            "max_depth": hp.max_depth,
            "eta": hp.learning_rate,
            "subsample": hp.subsample,
            "sampling_method": sampling,
            "tree_method": hp.tree_method,
            "device": device,
            "seed": seed if hp.random_state is None else hp.random_state,
        }
        if objective.startswith("multi:"):
            params["num_class"] = self.spec.num_outputs
        eval_metric = hp.eval_metric or ("merror" if objective == "multi:softmax" else None)  # the reference's choice
        if eval_metric is not None:
            params["eval_metric"] = eval_metric
        if hp.n_jobs is not None:
            params["nthread"] = hp.n_jobs
        return params

    def fit_trees(
        self, train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], seed: int, log: Any = None
    ) -> dict[str, Any]:
        """Boost on ``train`` with early stopping on ``val``; keep the trees up to the best round."""
        xgb = _import_xgboost()
        params = self.params(seed)
        labels = [self._labels(y, params["objective"]) for y in (train[1], val[1])]
        dtrain = xgb.QuantileDMatrix(train[0], labels[0])
        dval = xgb.QuantileDMatrix(val[0], labels[1], ref=dtrain)
        history: dict[str, Any] = {}
        booster = xgb.train(
            params,
            dtrain,
            num_boost_round=self.hparams.n_estimators,
            evals=[(dtrain, "train"), (dval, "val")],
            early_stopping_rounds=self.hparams.early_stopping_rounds,
            evals_result=history,
            verbose_eval=log if log is not None else False,
        )
        best = int(getattr(booster, "best_iteration", booster.num_boosted_rounds() - 1))
        self.net.booster = booster[: best + 1]
        self.net.output_shape = (
            tuple(train[1].shape[1:]) if params["objective"].startswith(("binary", "reg")) else (self.spec.num_outputs,)
        )
        return {"params": params, "best_iteration": best, "rounds": booster.num_boosted_rounds(), "history": history}

    @staticmethod
    def _labels(y: np.ndarray, objective: str) -> np.ndarray:
        if objective.startswith("multi:"):
            return y.reshape(len(y)).astype(np.int64)
        return y.reshape(len(y), -1).astype(np.float32)

    def tree_nodes(self) -> int:
        """Nodes of the kept trees (split thresholds and leaf values: the model's parameters)."""
        model = json.loads(self.net.booster.save_raw("json"))
        return sum(int(tree["tree_param"]["num_nodes"]) for tree in model["learner"]["gradient_booster"]["model"]["trees"])


def collect(batches: Iterable[dict[str, Tensor]]) -> tuple[np.ndarray, np.ndarray]:
    """Flattened float32 inputs and the targets (in their own shape) of every batch."""
    xs, ys = [], []
    for batch in batches:
        xs.append(batch["x"].detach().float().reshape(len(batch["x"]), -1).numpy())
        ys.append(batch["y"].detach().numpy())
    return np.concatenate(xs), np.concatenate(ys)


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _check_memory(module: XGBoostModule, datamodule: Any, parts: list[str]) -> None:
    first = next(iter(datamodule.train_dataloader()))
    features = math.prod(first["x"].shape[1:])
    objective = module.params(0)["objective"]
    outputs = module.spec.num_outputs if objective.startswith("multi:") else math.prod(first["y"].shape[1:])
    samples = sum(len(datamodule.datasets[p]) for p in parts)
    need = estimate_bytes(samples, features, outputs)
    limit_gb = module.hparams.memory_limit_gb
    limit = available_bytes(module.resolved_device()) if limit_gb is None else int(limit_gb * 2**30)
    if need > limit:
        raise UsageError(
            f"XGBoost on {module.spec.name} needs about {_size(need)} ({samples} samples x {features} features, "
            f"{outputs} outputs) but {_size(limit)} is available; it does not fit on this machine "
            "(raise --model.memory_limit_gb to try anyway)"
        )


def _fit_data(ctx: RunContext, module: XGBoostModule) -> tuple[Any, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The DataModule the trees learn from and its (fit, early-stopping) arrays, per ``--model.validation``."""
    datamodule = ctx.datamodule
    if datamodule.split == "final" and module.hparams.validation == "search":
        datamodule = ctx.make_datamodule(split="search")
    datamodule.prepare_data()  # as Lightning's fit would: fetch, verify and unpack the task's files
    datamodule.setup("fit")
    holdout = datamodule.split == "final"
    _check_memory(module, datamodule, ["train"] if holdout else ["train", "val"])
    x, y = collect(datamodule.train_dataloader())
    if not holdout:
        return datamodule, (x, y), collect(datamodule.val_dataloader())
    if len(x) < 2:
        raise UsageError(f"the final training set of {module.spec.name} has {len(x)} sample(s): too few to hold one out")
    order = np.random.default_rng(ctx.seed).permutation(len(x))
    held = min(len(x) - 1, max(1, round(module.hparams.holdout_fraction * len(x))))
    return datamodule, (x[order[held:]], y[order[held:]]), (x[order[:held]], y[order[:held]])


def _run(ctx: RunContext) -> dict[str, Any]:
    _import_xgboost()
    ctx.check_fresh()
    module: XGBoostModule = ctx.model  # type: ignore[assignment]
    start = time.perf_counter()
    fit_dm, train, val = _fit_data(ctx, module)
    module.net.decoder = fit_dm.output_decoder()
    print(f"nb360: xgboost fits {len(train[0])} samples x {train[0].shape[1]} features, stops early on {len(val[0])}")
    info = module.fit_trees(train, val, ctx.seed, log=10)
    del train, val
    ctx.run_dir.mkdir(parents=True, exist_ok=True)
    module.net.booster.save_model(str(ctx.run_dir / "xgboost_model.json"))
    write_json(ctx.run_dir / "xgboost_history.json", {k: info[k] for k in ("params", "best_iteration", "rounds", "history")})
    fit_time = time.perf_counter() - start
    trainer = ctx.trainer()
    scores = trainer.test(module, datamodule=ctx.datamodule, verbose=False)[0]
    return ctx.finish(
        trainer, scores, wall_time_s=fit_time, extra={"params": module.tree_nodes(), "epochs": info["best_iteration"] + 1}
    )


def _defaults(spec: TaskSpec) -> dict[str, Any]:
    return {"model.objective": OBJECTIVE[spec.name]} if spec.name in OBJECTIVE else {}


register_method(
    Method(
        name="xgboost",
        description="gradient-boosted trees on flattened inputs (depth 3, eta 1, early stopping after 5 rounds)",
        module=XGBoostModule,
        run=_run,
        defaults=_defaults,
    )
)
