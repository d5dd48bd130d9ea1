"""NATS size-space search: TAS (``--method nats_tas``), FBNetV2 (``nats_fbnetv2``) and TuNAS (``nats_tunas``).

The three width-search rules of NATS-Bench's ``exps/NATS-algos/search-size.py`` (``tas``,
``mask_gumbel``, ``mask_rl``) on :class:`~nb360.models.nb201.size_supernet.SizeSupernet`, for
every task. One LightningModule, :class:`SizeSearchModule`, runs the bilevel loop of
:class:`~nb360.search.bilevel.SearchModule` with the reference settings: SGD with Nesterov
momentum 0.9, lr 0.025 cosine to 0.001, weight decay 5e-4 (``weight-sharing.config``); Adam on
the architecture logits (lr 3e-4, betas 0.5/0.999, decay 1e-3, 0 for TuNAS); the weight step
before the architecture step; the Gumbel temperature annealed linearly from 10 to 0.1 over the
epochs (TAS, FBNetV2).

TAS and FBNetV2 take the plain gradient of the task loss on the architecture half (NATS uses no
FLOP loss for TAS). TuNAS replaces it by REINFORCE (:meth:`SizeSearchModule.arch_step`): the
reward is the task metric of the sampled network on the architecture batch (the reference: top-1
accuracy), the baseline a bias-corrected exponential moving average (momentum 0.95) updated with
that reward before the advantage is taken, and the loss ``-advantage * sum(log p(widths))``.
With ``warmup_ratio`` r (TuNAS: 0.25) the first epochs (``epoch / epochs < r``) train the weights
only, drawing the full width with probability ``1 - epoch / epochs / r`` and otherwise a uniform
width. The derived architecture is the argmax of every decision's logits, ``c0:c1:c2:c3:c4``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from nb360.methods import Method, register_method
from nb360.metrics import build_metric, metric_class, metric_lower_is_better
from nb360.models.nb201.size_supernet import SizeSupernet, warmup_at
from nb360.models.nb201.supernet import tau_at
from nb360.run import RunContext
from nb360.search.bilevel import SearchModule
from nb360.search.nb201_stages import add_nb201_arguments, eval_defaults, run_nb201_search
from nb360.search.train import build_scheduler
from nb360.spaces.nb201 import SIZE, WIDTHS
from nb360.tasks import TaskSpec

__all__ = ["SizeSearchModule", "ExponentialMovingAverage", "reinforce_loss"]


class ExponentialMovingAverage(torch.nn.Module):
    """The reference's bias-corrected moving average: ``num = m num + (1 - m) v``, ``den = m den + (1 - m)``, value ``num / den``.

    Its state is kept in buffers, so a resumed search continues with the same baseline.
    """

    def __init__(self, momentum: float) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("numerator", torch.zeros((), dtype=torch.float64))
        self.register_buffer("denominator", torch.zeros((), dtype=torch.float64))

    def update(self, value: float) -> None:
        m = self.momentum
        self.numerator.mul_(m).add_((1 - m) * value)
        self.denominator.mul_(m).add_(1 - m)

    @property
    def value(self) -> float:
        return float(self.numerator / self.denominator)


def reinforce_loss(reward: float, baseline: ExponentialMovingAverage, log_probs: list[Tensor]) -> Tensor:
    """Update the baseline with ``reward``, then ``-(reward - baseline) * sum(log_probs)`` (the reference's order)."""
    baseline.update(reward)
    return -(reward - baseline.value) * torch.stack([lp.reshape(()) for lp in log_probs]).sum()


class SizeSearchModule(SearchModule):
    """Width search in the NATS size space with one of the three NATS rules.

    Args:
        task: the task; its spec picks 1-D/2-D and point/dense (no reduction, per-position head).
        algo: ``tas``, ``mask_gumbel`` (FBNetV2) or ``mask_rl`` (TuNAS).
        lr, momentum, nesterov, weight_decay, min_lr, grad_clip: weight SGD, cosine from lr to min_lr, clipping (0: none).
        arch_lr, arch_weight_decay, arch_betas, arch_eps: Adam on the architecture logits.
        tau_max, tau_min: the Gumbel temperature, linear from ``tau_max`` (first epoch) to ``tau_min`` (last).
        warmup_ratio: the fraction of the epochs without architecture updates (``None``: none).
        baseline_momentum: TuNAS' moving-average baseline.
        reward: TuNAS' reward, ``metric`` (the task metric, negated when lower is better) or ``loss`` (minus the loss).
        affine, track_running_stats: BatchNorm of the supernet (reference search defaults: off).
        mask_inside, resample_c0: see :class:`SizeSupernet`.
    """

    def __init__(
        self,
        task: str = "cifar100",
        algo: Literal["tas", "mask_gumbel", "mask_rl"] = "mask_gumbel",
        lr: float = 0.025,
        momentum: float = 0.9,
        nesterov: bool = True,
        weight_decay: float = 5e-4,
        min_lr: float = 0.001,
        grad_clip: float = 0.0,
        arch_lr: float = 3e-4,
        arch_weight_decay: float = 1e-3,
        arch_betas: tuple[float, float] = (0.5, 0.999),
        arch_eps: float = 1e-8,
        tau_max: float = 10.0,
        tau_min: float = 0.1,
        warmup_ratio: float | None = None,
        baseline_momentum: float = 0.95,
        reward: Literal["metric", "loss"] = "metric",
        affine: bool = False,
        track_running_stats: bool = False,
        mask_inside: bool = True,
        resample_c0: bool = False,
        metric_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(task, 0, grad_clip, False, metric_options)
        self.save_hyperparameters()
        spec = self.spec
        self.net = SizeSupernet(
            spec.dims, spec.kind, spec.in_channels, spec.num_outputs, algo,
            affine=affine, track_running_stats=track_running_stats, mask_inside=mask_inside, resample_c0=resample_c0,
        )  # fmt: skip
        self.baseline = ExponentialMovingAverage(baseline_momentum)
        self.reward_metric = build_metric(spec.metric, **{**spec.metric_kwargs, **(metric_options or {})})
        self.reward_sign = -1.0 if metric_lower_is_better(metric_class(spec.metric)) else 1.0

    def configure_optimizers(self) -> Any:
        h = self.hparams
        weights = torch.optim.SGD(
            self.net.weight_parameters(), lr=h.lr, momentum=h.momentum, nesterov=h.nesterov, weight_decay=h.weight_decay
        )
        arch = torch.optim.Adam(
            self.net.arch_parameters(), lr=h.arch_lr, betas=tuple(h.arch_betas), eps=h.arch_eps, weight_decay=h.arch_weight_decay
        )
        return [weights, arch], [build_scheduler(weights, "cosine", self.trainer.max_epochs, h.min_lr)]

    def on_train_epoch_start(self) -> None:
        """The reference's per-epoch settings: the temperature, and the controller warm-up (no architecture steps)."""
        super().on_train_epoch_start()
        h, epoch, epochs = self.hparams, self.current_epoch, self.trainer.max_epochs
        self.net.tau.fill_(tau_at(epoch, epochs, h.tau_max, h.tau_min))
        self.net.warmup = warmup_at(epoch, epochs, h.warmup_ratio)
        self.warmup_epochs = epoch + 1 if self.net.warmup is not None else 0

    def batch_loss(self, batch: dict[str, Tensor]) -> Tensor:
        """The task loss, with the architecture logits always in its graph (zero gradient when unused).

        TuNAS' weight steps and every warm-up step do not use the logits; DDP without
        ``find_unused_parameters`` requires every parameter to receive a gradient in the first backward pass.
        """
        return super().batch_loss(batch) + 0.0 * self.net.arch_logits.sum()

    def arch_step(self, batch: dict[str, dict[str, Tensor]]) -> None:
        if self.hparams.algo != "mask_rl":
            super().arch_step(batch)
            return
        weight_opt, arch_opt = self.optimizers()
        arch_opt.zero_grad()
        x, y, extras = self._split(batch["arch"])
        out = self(x)
        with torch.no_grad():
            reward = self.batch_reward(out, y, extras)
        loss = reinforce_loss(reward, self.baseline, self.net.log_probs)
        self.manual_backward(loss)
        self.step_architecture()
        self.log("train/arch_loss", loss.detach(), on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)
        self.log("train/reward", reward, on_step=False, on_epoch=True, batch_size=len(x), sync_dist=True)

    def batch_reward(self, out: Tensor, y: Tensor, extras: dict[str, Tensor]) -> float:
        """TuNAS' reward of one batch: the task metric (sign so that higher is better) or minus the loss."""
        if self.hparams.reward == "loss":
            return -float(self.loss(out, y, **extras))
        self.reward_metric.reset()
        self.reward_metric.update(out, y, **extras)
        value = float(self.reward_metric.compute())
        self.reward_metric.reset()
        return self.reward_sign * value

    def arch_summary(self) -> dict[str, float]:
        p = self.net.probabilities()
        summary = {f"arch/c{k}/{w}": float(p[k, i]) for k in range(p.shape[0]) for i, w in enumerate(WIDTHS)}
        if self.hparams.algo != "mask_rl":
            summary["arch/tau"] = float(self.net.tau)
        return summary

    def derive_local(self) -> dict[str, Any]:
        return {"space": SIZE.name, "arch": self.net.derive()}


def _defaults(spec: TaskSpec, algo: str) -> dict[str, Any]:
    # weight-sharing.config: batch 64 (train), 512 (evaluation)
    return {"model.algo": algo, "data.batch_size": 64, "data.eval_batch_size": 512, "data.split": "search", **eval_defaults(spec)}


def _arguments(parser: Any) -> None:
    add_nb201_arguments(parser, search_epochs=100, eval_epochs=90)


def _run(ctx: RunContext) -> dict[str, Any]:
    return run_nb201_search(ctx, "nats_sss")


for _name, _algo, _description in (
    ("nats_tas", "tas", "TAS in the NATS size space: two Gumbel-sampled widths per layer, interpolated channel-wise"),
    ("nats_fbnetv2", "mask_gumbel", "FBNetV2 in the NATS size space: Gumbel-softmax mixtures of channel masks"),
    ("nats_tunas", "mask_rl", "TuNAS in the NATS size space: sampled channel masks, REINFORCE with a moving-average baseline"),
):
    register_method(
        Method(
            name=_name,
            description=_description,
            module=SizeSearchModule,
            run=_run,
            defaults=lambda spec, a=_algo: _defaults(spec, a),
            add_arguments=_arguments,
        )
    )
