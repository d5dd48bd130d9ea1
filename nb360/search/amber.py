"""AMBER (``--method amber``): an LSTM controller samples architectures of the 1-D model space of
:mod:`nb360.models.amber`; the sampled child networks share the supernet's weights (ENAS-style).

In the shared bilevel loop (:class:`~nb360.search.bilevel.SearchModule`) every training step is a
child step (Adam on the shared weights of an architecture the controller samples) on the weight
half, and every ``arch_every``-th step also a controller step: one sampled architecture scored on the
architecture half with the task's metric (oriented so that higher is better) is the reward of a
REINFORCE update (moving-average baseline, :class:`~nb360.search.reinforce.Reinforce`) plus the
reference's skip penalty (KL divergence of the skip probabilities from ``skip_target``). An episode
(search epoch) has at most ``child_steps`` child steps, so the reference's 500 child steps and 100
controller samples per episode are ``child_steps=500, arch_every=5``. The best of ``candidates``
controller samples, scored on validation batches with the shared weights, is retrained from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nb360.datamodules.base import run_seed
from nb360.methods import Method, register_method
from nb360.models.amber import OPS, AmberArch, AmberNet, draw_arch
from nb360.run import RunContext
from nb360.search.bilevel import SearchModule
from nb360.search.candidates import CandidateMetric, agreed, validation_batches
from nb360.search.pipeline import SearchStages, add_stage_arguments, search_then_evaluate
from nb360.search.reinforce import Reinforce
from nb360.search.train import TrainModule
from nb360.tasks import TaskSpec

__all__ = ["AmberController", "AmberSearchModule", "AmberEval", "applies_to"]


class AmberController(nn.Module):
    """AMBER's general controller: per layer an operation, then (for layer ``j > 0``) ``j`` skip flags.

    A 1-layer LSTM (64 units) reads the embedding of the previous choice; operation logits are
    ``tanh_constant * tanh(W h / temperature)``; each skip flag is a Bernoulli draw whose logit is an
    attention score between the current state and the earlier layers' anchors (ENAS' macro controller).
    The next input after the skips is the mean of the chosen layers' anchors (the start token if none).
    """

    def __init__(
        self,
        layers: int = 12,
        num_ops: int = len(OPS),
        lstm_size: int = 64,
        lstm_layers: int = 1,
        tanh_constant: float = 1.5,
        temperature: float = 2.0,
        skip_target: float = 0.4,
    ) -> None:
        super().__init__()
        self.layers, self.tanh_constant, self.temperature, self.skip_target = layers, tanh_constant, temperature, skip_target
        self.start = nn.Parameter(torch.empty(1, 1, lstm_size).uniform_(-0.1, 0.1))
        self.lstm = nn.LSTM(lstm_size, lstm_size, num_layers=lstm_layers)
        self.embedding = nn.Embedding(num_ops, lstm_size)
        self.op_logits = nn.Linear(lstm_size, num_ops)
        self.anchor = nn.Linear(lstm_size, lstm_size, bias=False)
        self.query = nn.Linear(lstm_size, lstm_size, bias=False)
        self.attention = nn.Linear(lstm_size, 1, bias=False)
        for p in self.parameters():
            nn.init.uniform_(p, -0.1, 0.1)

    def _squash(self, logits: Tensor) -> Tensor:
        return self.tanh_constant * torch.tanh(logits / self.temperature)

    def forward(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor, AmberArch]:
        """``(log-probability, entropy, skip penalty, architecture)`` of one sample."""
        inputs, state = self.start, None
        log_probs, entropies, penalties = [], [], []
        anchors, keys = [], []
        ops, skips = [], []
        for j in range(self.layers):
            out, state = self.lstm(inputs, state)
            log_p = torch.log_softmax(self._squash(self.op_logits(out[-1, 0])), dim=-1)
            choice = int(torch.multinomial(log_p.detach().exp().cpu(), 1, generator=generator))
            ops.append(OPS[choice])
            log_probs.append(log_p[choice])
            entropies.append(-(log_p.exp() * log_p).sum())
            out, state = self.lstm(self.embedding(torch.tensor([[choice]], device=log_p.device)), state)
            h = out[-1, 0]
            flags: list[int] = []
            if j > 0:
                logit = self._squash(self.attention(torch.tanh(torch.stack(keys) + self.query(h))).squeeze(-1))
                p = torch.sigmoid(logit)
                draws = torch.rand(j, generator=generator).to(p.device) < p.detach()
                flags = [int(d) for d in draws]
                taken = draws.to(logit.dtype)
                log_probs.append((taken * F.logsigmoid(logit) + (1 - taken) * F.logsigmoid(-logit)).sum())
                entropies.append(F.binary_cross_entropy_with_logits(logit, p.detach(), reduction="sum"))
                t = self.skip_target
                penalties.append((p * torch.log(p / t) + (1 - p) * torch.log((1 - p) / (1 - t))).mean())
                chosen = [a for a, f in zip(anchors, flags) if f]
                inputs = (torch.stack(chosen).sum(0) / (1 + len(chosen))).view(1, 1, -1) if chosen else self.start
            else:
                inputs = self.start
            skips.append(flags)
            anchors.append(h)
            keys.append(self.anchor(h))
        penalty = torch.stack(penalties).mean() if penalties else self.start.sum() * 0
        arch = AmberArch.from_dict({"ops": ops, "skips": skips})
        return torch.stack(log_probs).sum(), torch.stack(entropies).sum(), penalty, arch


class _ControlledSupernet(AmberNet):
    """The supernet plus the controller whose parameters are the architecture parameters of the bilevel loop."""

    def __init__(self, *args: Any, controller: AmberController, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.controller = controller
        self.current: AmberArch | None = None

    def forward(self, x: Tensor, arch: dict[str, Any] | None = None) -> Tensor:
        return super().forward(x, arch or self.current)

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.controller.parameters())

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]


class AmberSearchModule(SearchModule):
    """AMBER's search: shared-weight child steps and REINFORCE controller steps in the one bilevel loop.

    Args:
        task: a 1-D point task (ECG, Satellite, DeepSEA).
        layers, filters, fc_units, dropout: the model space (12 layers, 32 filters, 925 head units).
        lr, weight_decay, grad_clip: the child's Adam (the reference compiles the child with Adam).
        warmup_epochs: episodes of child steps only (reference ``child_warm_up_epochs`` 1).
        child_steps: child steps per episode at most (reference ``child_train_steps`` 500).
        arch_every: a controller sample every this many child steps (500 / 100 samples per episode: 5).
        lstm_size, lstm_layers, tanh_constant, temperature: the controller (64, 1, 1.5, 2).
        skip_target, skip_weight: the skip penalty (0.4, 1.0).
        entropy_weight: weight of the sample entropy added to the reward (0: none, as the reference).
        arch_lr: the controller's Adam learning rate (1e-3).
        baseline_decay: the reward baseline's moving average.
        controller_batch: samples per controller update (reference ``batch_size`` 20).
        controller_grad_clip: L2 norm of the controller gradients (0: none).
        candidates: controller samples compared for the final pick, each on one validation batch.
        candidate_batch: size of those validation batches.
        length: the input length if not the task's (e.g. a shorter ECG window; the head flattens).
    """

    def __init__(
        self,
        task: str = "ecg",
        layers: int = 12,
        filters: int = 32,
        fc_units: int = 925,
        dropout: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        grad_clip: float = 0.0,
        warmup_epochs: int = 1,
        child_steps: int = 500,
        arch_every: int = 5,
        lstm_size: int = 64,
        lstm_layers: int = 1,
        tanh_constant: float = 1.5,
        temperature: float = 2.0,
        skip_target: float = 0.4,
        skip_weight: float = 1.0,
        entropy_weight: float = 0.0,
        arch_lr: float = 1e-3,
        baseline_decay: float = 0.99,
        controller_batch: int = 20,
        controller_grad_clip: float = 0.0,
        candidates: int = 100,
        candidate_batch: int = 500,
        length: int | None = None,
        metric_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(task, warmup_epochs, grad_clip, False, metric_options)
        self.save_hyperparameters()
        spec = self.spec
        reason = applies_to(spec)
        if reason is not None:
            raise ValueError(reason)
        controller = AmberController(layers, len(OPS), lstm_size, lstm_layers, tanh_constant, temperature, skip_target)
        self.net = _ControlledSupernet(
            spec.in_channels,
            length or spec.input_shape[-1],
            spec.num_outputs,
            layers,
            filters,
            fc_units,
            dropout,
            controller=controller,
        )
        self.reinforce = Reinforce(baseline_decay, controller_batch, controller_grad_clip)
        self.candidate_metric = CandidateMetric(spec, metric_options)

    def configure_optimizers(self) -> Any:
        h = self.hparams
        weights = torch.optim.Adam(self.net.weight_parameters(), lr=h.lr, weight_decay=h.weight_decay)
        controller = torch.optim.Adam(self.net.arch_parameters(), lr=h.arch_lr)
        return [weights, controller]

    def generator(self, salt: int = 0) -> torch.Generator:
        """Seeded by the run's seed and the global step: the same samples on every process and after a resume."""
        return torch.Generator().manual_seed(run_seed() * 7919 + 1_000_003 * salt + int(self.global_step))

    # ----------------------------------------------------------------- the loop
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None:
        return -1 if batch_idx >= self.hparams.child_steps else None  # the episode's child steps are done

    def training_step(self, batch: dict[str, dict[str, Tensor]], batch_idx: int) -> None:
        self.weight_step(batch["weights"])
        if self.current_epoch >= self.warmup_epochs and batch_idx % self.hparams.arch_every == 0:
            self.arch_step(batch)

    def weight_step(self, batch: dict[str, Tensor]) -> None:
        with torch.no_grad():
            self.net.current = self.net.controller(self.generator(1))[3]
        super().weight_step(batch)

    def score(self, batch: dict[str, Tensor], arch: AmberArch) -> float:
        """The task metric of ``arch`` with the shared weights on one batch (evaluation mode), higher is better."""
        training = self.net.training
        self.net.eval()
        _, y, extras = self._split(batch)
        with torch.no_grad():
            self.net.current = arch
            out = self._evaluate(batch)
        self.net.train(training)
        value = self.candidate_metric(out, y, **extras)
        if value != value:  # undefined on this batch (e.g. AUROC without positives): the loss decides
            return -float(self.loss(out, y, **extras))
        return value

    def arch_step(self, batch: dict[str, dict[str, Tensor]]) -> None:
        h = self.hparams
        log_prob, entropy, penalty, arch = self.net.controller(self.generator(2))
        reward = self.score(batch["arch"], arch) + h.entropy_weight * float(entropy.detach())
        advantage, baseline = self.reinforce.advantage(reward)
        loss = -log_prob * advantage + h.skip_weight * penalty
        if self.reinforce.accumulate(loss, self.net.arch_parameters()):
            self.step_architecture()
        size = len(batch["arch"]["x"])
        self.log("train/arch_reward", reward, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        self.log("train/arch_baseline", baseline, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        self.log(
            "train/arch_skip_penalty", float(penalty.detach()), on_step=False, on_epoch=True, batch_size=size, sync_dist=True
        )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        if self.net.current is None:  # validation before any training step (Lightning's sanity check)
            with torch.no_grad():
                self.net.current = self.net.controller(self.generator(1))[3]
        super().validation_step(batch, batch_idx)

    # ----------------------------------------------------------------- the pick
    def derive_local(self) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(run_seed() * 7919 + 17)
        with torch.no_grad():
            archs = [self.net.controller(generator)[3] for _ in range(self.hparams.candidates)]
        batches = validation_batches(self.trainer.datamodule, self.hparams.candidate_batch, self.device)
        current = self.net.current
        scores = [self.score(next(batches), arch) for arch in archs]
        self.net.current = current
        return archs[agreed(max(range(len(archs)), key=lambda i: scores[i]))].to_dict()

    def arch_summary(self) -> dict[str, float]:
        return {"arch/baseline": float(self.reinforce.baseline), "arch/controller_samples": float(self.reinforce.samples)}


def applies_to(spec: TaskSpec) -> str | None:
    if spec.dims != 1 or spec.kind != "point":
        return (
            f"AMBER searches 1-D models; {spec.name} is a {spec.dims}-D {spec.kind} task (AMBER runs on ecg, satellite, deepsea)"
        )
    return None


# ---------------------------------------------------------------------------------------------- stages
@dataclass
class AmberEval:
    """Retraining of the best sampled architecture (reference ``eval.py``: Adam, 100 epochs).

    Attributes:
        lr, weight_decay: Adam.
        batch_size: training and evaluation batch size (default: the search's child batch).
        dropout: dropout of the retrained network.
    """

    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 500
    dropout: float = 0.0


def _evaluation(ctx: RunContext, arch: AmberArch) -> tuple[pl.LightningModule, pl.LightningDataModule, dict[str, Any]]:
    settings: AmberEval = ctx.args.eval
    h = ctx.model.hparams
    module = TrainModule(
        task=ctx.task.name,
        network="amber",
        network_options={
            "arch": arch.to_dict(),
            "layers": h.layers,
            "filters": h.filters,
            "fc_units": h.fc_units,
            "length": h.length,
        },
        lr=settings.lr,
        weight_decay=settings.weight_decay,
        dropout=settings.dropout,
        optimizer="adam",
        schedule="constant",
        metric_options=h.metric_options,
    )
    datamodule = ctx.make_datamodule(split="final", batch_size=settings.batch_size, eval_batch_size=settings.batch_size)
    return module, datamodule, {}


def _save(arch: AmberArch, folder: Path) -> None:
    arch.save(folder / "genotype.json")
    draw_arch(arch, folder / "genotype")


STAGES = SearchStages(
    parse=AmberArch.from_dict, load=AmberArch.load, save=_save, to_dict=AmberArch.to_dict, evaluation=_evaluation
)

#: the reference child batch per task (``child_batchsize``)
CHILD_BATCH = {"ecg": 500, "satellite": 2000, "deepsea": 500}


def _defaults(spec: TaskSpec) -> dict[str, Any]:
    batch = CHILD_BATCH.get(spec.name, spec.reference.batch_size)
    return {
        "data.batch_size": batch,
        "data.eval_batch_size": batch,
        "data.split": "search",
        "model.candidate_batch": batch,
        "eval.batch_size": batch,
    }


def _arguments(parser: Any) -> None:
    add_stage_arguments(parser, search_epochs=300, eval_epochs=100)
    parser.add_class_arguments(AmberEval, "eval", help="retraining of the best sampled architecture")


def _run(ctx: RunContext) -> dict[str, Any]:
    return search_then_evaluate(ctx, STAGES)


register_method(
    Method(
        name="amber",
        description="AMBER: LSTM controller (REINFORCE) over a 12-layer 1-D conv space with skips, ENAS weight sharing",
        module=AmberSearchModule,
        run=_run,
        applies_to=applies_to,
        defaults=_defaults,
        add_arguments=_arguments,
    )
)
