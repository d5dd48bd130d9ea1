"""Satellite's expert: ROCKET (Dempster et al. 2020) random convolution features and a linear classifier.

NB ``expert/Satellite/rocket/code/{rocket_functions,reproduce_experiments_scalability}.py``
(the ROCKET authors' "scalability" script, run with 10,000 kernels). Each kernel has a
length drawn from {7, 9, 11}, N(0, 1) weights centred to mean 0, a U(-1, 1) bias, a
dilation ``floor(2 ** U(0, log2((T - 1) / (length - 1))))`` and, with probability 1/2,
zero padding ``(length - 1) * dilation // 2`` on both sides. A kernel gives two features,
the proportion of positive values (PPV) and the maximum of its output. The kernels are
fixed buffers; the transform runs as one grouped ``conv1d`` per (length, dilation,
padding), so a batch needs about 40 convolutions rather than a Python loop.

For 900,000 series the reference does not use ROCKET's ridge classifier (its 20,000
features do not fit in memory) but the script's logistic regression: features
standardised with the mean and standard deviation (+1e-8) of the first 2,048 training
series, a zero-initialised ``Linear(20000, 24)``, cross-entropy, Adam on minibatches of
256. That is what this expert trains, with the ordinary fit + test (see the docs for
the reference's learning-rate search and early stopping, which differ).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch import Tensor, nn

from nb360.models import register_network
from nb360.models.experts.runs import fit_and_test_with
from nb360.run import RunContext
from nb360.search.expert import Expert, register_expert
from nb360.tasks import TaskSpec

__all__ = ["RocketTransform", "RocketClassifier", "generate_kernels", "NORMALISATION_SERIES"]

LENGTHS = (7, 9, 11)
NORMALISATION_SERIES = 2048  # the reference's first "tranche"


def generate_kernels(input_length: int, num_kernels: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """ROCKET's kernels: ``lengths``, ``weights`` (K, 11; zero past the length), ``biases``, ``dilations``, ``paddings``."""
    lengths = rng.choice(np.array(LENGTHS), num_kernels)
    weights = rng.standard_normal((num_kernels, max(LENGTHS)))
    valid = np.arange(max(LENGTHS)) < lengths[:, None]
    weights = np.where(valid, weights, 0.0)
    weights -= np.where(valid, weights.sum(1, keepdims=True) / lengths[:, None], 0.0)
    biases = rng.uniform(-1, 1, num_kernels)
    dilations = (2 ** rng.uniform(0, np.log2((input_length - 1) / (lengths - 1)))).astype(np.int64)
    paddings = np.where(rng.integers(0, 2, num_kernels) == 1, (lengths - 1) * dilations // 2, 0)
    return {"lengths": lengths, "weights": weights, "biases": biases, "dilations": dilations, "paddings": paddings}


class RocketTransform(nn.Module):
    """Fixed random kernels -> (B, 2K) features ``[ppv_0, max_0, ppv_1, max_1, ...]`` of univariate series (B, 1, T)."""

    def __init__(self, input_length: int, num_kernels: int = 10_000, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if input_length < max(LENGTHS):
            raise ValueError(f"rocket: series of length {input_length} are shorter than the longest kernel ({max(LENGTHS)})")
        kernels = generate_kernels(input_length, num_kernels, rng or np.random.default_rng())
        for name, value in kernels.items():
            dtype = torch.float32 if value.dtype.kind == "f" else torch.long
            self.register_buffer(name, torch.as_tensor(value, dtype=dtype))

    @property
    def num_features(self) -> int:
        return 2 * len(self.lengths)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] != 1:
            raise ValueError(f"rocket: expects univariate series (B, 1, T), got {tuple(x.shape)}")
        out = x.new_empty(len(x), len(self.lengths), 2)
        shapes = torch.stack([self.lengths, self.dilations, self.paddings], dim=1)
        groups, owner = torch.unique(shapes, dim=0, return_inverse=True)
        for group, (length, dilation, padding) in enumerate(groups.tolist()):
            index = (owner == group).nonzero().squeeze(1)
            weight = self.weights[index, :length].to(x.dtype)[:, None]
            maps = F.conv1d(x, weight, self.biases[index].to(x.dtype), padding=padding, dilation=dilation)
            out[:, index, 0] = (maps > 0).to(x.dtype).mean(-1)
            out[:, index, 1] = maps.amax(-1)
        return out.flatten(1)


class RocketClassifier(nn.Module):
    """ROCKET features, standardised with fixed statistics (:meth:`fit_normalisation`), then a zero-initialised ``Linear``."""

    def __init__(self, input_length: int, num_outputs: int, num_kernels: int = 10_000, seed: int | None = None) -> None:
        super().__init__()
        if seed is None:  # the run's seed (seed_everything) decides the kernels, as the reference's --seed does
            seed = int(torch.randint(2**62, ()).item())
        self.transform = RocketTransform(input_length, num_kernels, np.random.default_rng(seed))
        features = self.transform.num_features
        self.register_buffer("feature_mean", torch.zeros(features))
        self.register_buffer("feature_std", torch.ones(features))
        self.register_buffer("normalised", torch.tensor(False))
        self.fc = nn.Linear(features, num_outputs)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    @torch.no_grad()
    def fit_normalisation(self, x: Tensor) -> None:
        """Set the feature statistics from the series ``x`` (population std + 1e-8, as the reference)."""
        features = self.transform(x)
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(features.std(0, correction=0) + 1e-8)
        self.normalised.fill_(True)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc((self.transform(x) - self.feature_mean) / self.feature_std)


class FitNormalisation(Callback):
    """Before the first training step, fit the feature statistics on the first 2,048 training series (not on resume)."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        net = pl_module.net
        if not isinstance(net, RocketClassifier) or bool(net.normalised):
            return
        dataset = trainer.datamodule.datasets["train"]
        x = torch.stack([dataset[i]["x"] for i in range(min(len(dataset), NORMALISATION_SERIES))])
        net.fit_normalisation(x.to(pl_module.device, torch.float32))


@register_network("rocket")
def build_rocket(spec: TaskSpec, dropout: float = 0.0, num_kernels: int = 10_000, seed: int | None = None) -> nn.Module:
    """ROCKET + linear classifier for a univariate 1-D point task; it has no dropout, so ``dropout`` must be 0."""
    if dropout:
        raise ValueError("rocket has no dropout; leave model.dropout at 0")
    if spec.dims != 1 or spec.kind != "point" or spec.in_channels != 1:
        raise ValueError(
            f"rocket needs a univariate 1-D point task; {spec.name} is {spec.dims}-D {spec.kind} with {spec.in_channels} channels"
        )
    return RocketClassifier(spec.input_shape[-1], spec.num_outputs, num_kernels, seed)


def fit_rocket(ctx: RunContext) -> dict[str, Any]:
    """Normalise the features on the first training series, then fit + test; in the search split stop after
    2 epochs without a lower validation loss (the reference stops after 2 checks without improvement)."""
    callbacks: list[Callback] = [FitNormalisation()]
    if getattr(ctx.datamodule, "has_validation", False):
        callbacks.append(EarlyStopping("val/loss", patience=2, mode="min"))
    return fit_and_test_with(ctx, callbacks)


register_expert(
    Expert(
        task="satellite",
        title="ROCKET (10,000 random kernels) + logistic regression",
        source="expert/Satellite/rocket/code/reproduce_experiments_scalability.py",
        defaults={
            "model.network": "rocket",
            "model.network_options": {"num_kernels": 10_000},
            "model.optimizer": "adam",
            "model.lr": 1e-3,
            "model.weight_decay": 0.0,
            "model.schedule": "constant",
            "trainer.max_epochs": 100,
            "data.batch_size": 256,
        },
        run=fit_rocket,
    )
)
