"""The six NATS-Bench weight-sharing searches of the NB201 topology space, for any task.

``nb201_darts`` (DARTS-V1), ``nb201_darts2`` (DARTS-V2), ``nb201_gdas``, ``nb201_setn``,
``nb201_enas`` and ``nb201_rsps`` follow xautodl's ``exps/NATS-algos/search-cell.py`` on the
supernet of :mod:`nb360.models.nb201.supernet`, each a :class:`~nb360.search.bilevel.SearchModule`
(one bilevel loop: a weight step on one half of the training data, an architecture step on
the other). Shared settings (``configs/nas-benchmark/algos/weight-sharing.config``): SGD
Nesterov 0.9, lr 0.025 cosine to 0.001, weight decay 5e-4, batch 64, 100 epochs; the
architecture optimiser is Adam (betas 0.5/0.999; 3e-4, decay 1e-3 for DARTS/GDAS/SETN;
the ENAS controller 1e-3, decay 0, eps 1e-3).

Methods that pick among candidates (SETN: the 100 most probable architectures; RSPS: 100
uniform ones; ENAS: 100 controller samples) score each on one large batch of the search
split's validation part with the shared weights, one batch per candidate in turn as the
reference does, using the task's metric (oriented so that higher is better). "Accuracy" is
therefore the task's own score, e.g. Darcy's relative l2 error, negated.

Derivation, stages, ``--benchmark`` lookup and retraining: :mod:`nb360.search.nb201_stages`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import Tensor, nn

from nb360.datamodules.base import run_seed
from nb360.methods import Method, register_method
from nb360.models.nb201.supernet import NB201SuperNet, tau_at
from nb360.run import RunContext
from nb360.search.bilevel import SearchModule
from nb360.search.candidates import CandidateMetric, agreed, validation_batches
from nb360.search.nb201_stages import add_nb201_arguments, eval_defaults, run_nb201_search
from nb360.search.reinforce import Reinforce
from nb360.search.train import build_scheduler
from nb360.spaces.nb201 import EDGES, OPS, TOPOLOGY
from nb360.tasks import TaskSpec

__all__ = [
    "Controller",
    "NB201SearchModule",
    "DartsV1",
    "DartsV2",
    "GDAS",
    "SETN",
    "ENAS",
    "RSPS",
]


class NB201SearchModule(SearchModule):
    """What the six searches share: the supernet, the optimisers, candidate scoring.

    Args:
        task: the task (1-D/2-D, point/dense).
        channels, cells: supernet C and N (NATS: 16, 5).
        affine, track_running_stats: BN of the searched cells (NATS: both false).
        lr, momentum, nesterov, weight_decay, min_lr, grad_clip: the weights' SGD, cosine to ``min_lr``,
            gradient clipping (0: none, as search-cell.py).
        arch_lr, arch_weight_decay, arch_betas, arch_eps: the architecture Adam.
        warmup_epochs: epochs without architecture steps (NATS: 0).
        candidates: how many architectures the final pick compares (SETN, RSPS, ENAS; 100).
        candidate_batch: batch size of the validation batches that score candidates (NATS: 512).
        unroll_eps: DARTS-V2's finite-difference step (``0.01 / ||grad||``).
        tau_max, tau_min: GDAS' temperature schedule.
        weight_sampling: SETN's weight-step architecture: ``uniform`` (search-cell.py) or ``softmax`` (SETN's paper).
        lstm_size, lstm_layers, tanh_constant, temperature: the ENAS controller.
        entropy_weight, baseline_decay, controller_aggregate, controller_grad_clip: ENAS' REINFORCE.

    Every method takes every option (one signature for the command line); each uses its own.
    """

    arch_trainable = True
    initial_mode = "joint"

    def __init__(
        self,
        task: str = "ninapro",
        channels: int = 16,
        cells: int = 5,
        affine: bool = False,
        track_running_stats: bool = False,
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
        warmup_epochs: int = 0,
        candidates: int = 100,
        candidate_batch: int = 512,
        unroll_eps: float = 0.01,
        tau_max: float = 10.0,
        tau_min: float = 0.1,
        weight_sampling: Literal["uniform", "softmax"] = "uniform",
        lstm_size: int = 32,
        lstm_layers: int = 2,
        tanh_constant: float = 2.5,
        temperature: float = 5.0,
        entropy_weight: float = 1e-4,
        baseline_decay: float = 0.99,
        controller_aggregate: int = 20,
        controller_grad_clip: float = 5.0,
        metric_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(task, warmup_epochs, grad_clip, False, metric_options)
        self.save_hyperparameters()
        spec = self.spec
        self.net = self.build_supernet(
            spec.dims, spec.kind, spec.in_channels, spec.num_outputs, channels, cells, affine, track_running_stats
        )
        self.net.set_mode(self.initial_mode)
        self.net.tau = tau_max
        self.candidate_metric = CandidateMetric(spec, metric_options)

    def build_supernet(self, *args: Any) -> nn.Module:
        return NB201SuperNet(*args, arch_parameters=self.arch_trainable)

    def configure_optimizers(self) -> Any:
        h = self.hparams
        weights = torch.optim.SGD(
            self.net.weight_parameters(),
            lr=h.lr,
            momentum=h.momentum,
            weight_decay=h.weight_decay,
            nesterov=h.nesterov and h.momentum > 0,
        )
        arch = torch.optim.Adam(
            self.net.arch_parameters(), lr=h.arch_lr, betas=tuple(h.arch_betas), weight_decay=h.arch_weight_decay, eps=h.arch_eps
        )
        return [weights, arch], [build_scheduler(weights, "cosine", self.trainer.max_epochs, h.min_lr)]

    # ----------------------------------------------------------------- candidates
    def score(self, batch: dict[str, Tensor]) -> float:
        """The task metric of the current supernet on one batch, oriented so that higher is better."""
        _, y, extras = self._split(batch)
        return self.candidate_metric(self._evaluate(batch), y, **extras)

    def _validation_batches(self) -> Iterator[dict[str, Tensor]]:
        """Batches of ``candidate_batch`` validation samples, in order, cycling (every process sees the same)."""
        return validation_batches(self.trainer.datamodule, self.hparams.candidate_batch, self.device)

    @torch.no_grad()
    def best_candidate(self, archs: list[str]) -> tuple[str, float]:
        """The candidate with the best shared-weight score, each scored on the next validation batch (the reference)."""
        training, mode, arch = self.net.training, self.net.mode, self.net.arch
        self.net.eval()
        batches = self._validation_batches()
        scores = []
        for candidate in archs:
            self.net.set_mode("dynamic", candidate)
            scores.append(self.score(next(batches)))
        self.net.train(training)
        self.net.mode, self.net.arch = mode, arch
        best = agreed(max(range(len(archs)), key=lambda i: scores[i]))  # floating-point noise cannot split the pick
        return archs[best], scores[best]

    def generator(self) -> torch.Generator:
        """A generator seeded by the run's seed only: the same candidates on every process."""
        return torch.Generator().manual_seed(run_seed() * 7919 + 17)

    # ----------------------------------------------------------------- architecture
    def arch_summary(self) -> dict[str, float]:
        if not self.arch_trainable:
            return {}
        weights = torch.softmax(self.net.alphas.detach(), dim=-1)
        return {f"arch/{j}<-{i}/{op}": float(weights[e, k]) for e, (i, j) in enumerate(EDGES) for k, op in enumerate(OPS)}

    def pick(self) -> str:
        return self.net.genotype()

    def derive_local(self) -> dict[str, Any]:
        return {"space": TOPOLOGY.name, "arch": self.pick()}


class DartsV1(NB201SearchModule):
    """DARTS, first order: softmax-weighted mixed edges for both steps; the arch is the argmax per edge (none included)."""


class DartsV2(NB201SearchModule):
    """DARTS, second order: the unrolled architecture gradient (:meth:`SearchModule.unrolled_arch_step`)."""

    def arch_step(self, batch: dict[str, dict[str, Tensor]]) -> None:
        self.unrolled_arch_step(batch)


class GDAS(NB201SearchModule):
    """GDAS: hard Gumbel-softmax samples (straight-through) for both steps; tau linear from ``tau_max`` to ``tau_min``."""

    initial_mode = "gdas"

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.net.tau = tau_at(self.current_epoch, self.trainer.max_epochs, self.hparams.tau_max, self.hparams.tau_min)

    def arch_summary(self) -> dict[str, float]:
        return {**super().arch_summary(), "arch/tau": float(self.net.tau)}


class SETN(NB201SearchModule):
    """SETN as search-cell.py: a uniformly sampled architecture for the weight step, the softmax-weighted supernet
    for the architecture step; the final pick is the best of the ``candidates`` most probable architectures.

    ``weight_sampling="softmax"`` samples the weight step's architecture from ``softmax(alpha)`` instead (SETN's paper).
    """

    def weight_step(self, batch: dict[str, Tensor]) -> None:
        self.net.set_mode("dynamic", self.net.sample(from_alphas=self.hparams.weight_sampling == "softmax"))
        super().weight_step(batch)

    def arch_step(self, batch: dict[str, dict[str, Tensor]]) -> None:
        self.net.set_mode("joint")
        super().arch_step(batch)

    def pick(self) -> str:
        return self.best_candidate(self.net.top_k(self.hparams.candidates))[0]


class RSPS(NB201SearchModule):
    """Random sampling with parameter sharing: every cell samples its own path at every weight step (no architecture
    step); the final pick is the best of ``candidates`` distinct uniform architectures."""

    arch_trainable = False
    initial_mode = "urs"

    def training_step(self, batch: dict[str, dict[str, Tensor]], batch_idx: int) -> None:
        self.weight_step(batch["weights"])

    def pick(self) -> str:
        order = torch.randperm(len(TOPOLOGY), generator=self.generator())[: self.hparams.candidates]
        return self.best_candidate([TOPOLOGY.arch(int(i)) for i in order])[0]


class Controller(nn.Module):
    """ENAS' LSTM controller for the 6 edges (xautodl ``search_model_enas_utils.Controller``).

    Each step feeds the embedding of the previous choice (the learned ``input_vars`` first) to a
    2-layer LSTM; logits ``tanh_constant * tanh(W h / temperature)`` give the operation.
    """

    def __init__(self, lstm_size: int = 32, lstm_layers: int = 2, tanh_constant: float = 2.5, temperature: float = 5.0) -> None:
        super().__init__()
        self.tanh_constant, self.temperature = tanh_constant, temperature
        self.input_vars = nn.Parameter(torch.empty(1, 1, lstm_size).uniform_(-0.1, 0.1))
        self.lstm = nn.LSTM(input_size=lstm_size, hidden_size=lstm_size, num_layers=lstm_layers)
        self.embedding = nn.Embedding(len(OPS), lstm_size)
        self.pred = nn.Linear(lstm_size, len(OPS))
        for weight in (self.lstm.weight_hh_l0, self.lstm.weight_ih_l0, self.embedding.weight, self.pred.weight):
            nn.init.uniform_(weight, -0.1, 0.1)

    def forward(self, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, str]:
        """``(sum of log-probabilities, sum of entropies, architecture string)`` of one sample."""
        inputs, state = self.input_vars, None
        log_probs, entropies, codes = [], [], []
        for _ in EDGES:
            out, state = self.lstm(inputs, state)
            logits = self.tanh_constant * torch.tanh(self.pred(out[-1, 0]) / self.temperature)
            log_p = torch.log_softmax(logits, dim=-1)
            choice = int(torch.multinomial(log_p.detach().exp().cpu(), 1, generator=generator))
            codes.append(choice)
            log_probs.append(log_p[choice])
            entropies.append(-(log_p.exp() * log_p).sum())
            inputs = self.embedding(torch.tensor([[choice]], device=logits.device))
        return torch.stack(log_probs).sum(), torch.stack(entropies).sum(), TOPOLOGY.format(tuple(codes))


class _ControllerSuperNet(NB201SuperNet):
    """The supernet whose architecture parameters are an ENAS controller's (its ``alphas`` stay frozen)."""

    def __init__(self, *args: Any, controller: Controller, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.controller = controller

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.controller.parameters())

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()} | {id(self.alphas)}
        return [p for p in self.parameters() if id(p) not in arch]

    def genotype(self) -> str:
        raise NotImplementedError("ENAS' architecture is sampled from its controller")


class ENAS(NB201SearchModule):
    """ENAS: the weight step trains the path the controller samples; the architecture step is a REINFORCE step of
    the controller with the shared-weight score on the architecture batch as reward.

    Reward ``score + entropy_weight * entropy``, moving-average baseline (``baseline_decay``), gradients
    accumulated over ``controller_aggregate`` samples then clipped to ``controller_grad_clip`` (the reference: 20, 5).
    The final pick is the best of ``candidates`` controller samples.
    """

    arch_trainable = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        h = self.hparams
        self.reinforce = Reinforce(h.baseline_decay, h.controller_aggregate, h.controller_grad_clip)

    def build_supernet(self, *args: Any) -> nn.Module:
        h = self.hparams
        controller = Controller(h.lstm_size, h.lstm_layers, h.tanh_constant, h.temperature)
        return _ControllerSuperNet(*args, arch_parameters=False, controller=controller)

    def weight_step(self, batch: dict[str, Tensor]) -> None:
        with torch.no_grad():
            self.net.controller.eval()
            _, _, arch = self.net.controller()
            self.net.controller.train()
        self.net.set_mode("dynamic", arch)
        super().weight_step(batch)

    def arch_step(self, batch: dict[str, dict[str, Tensor]]) -> None:
        h = self.hparams
        log_prob, entropy, arch = self.net.controller()
        training, trained_path = self.net.training, self.net.arch
        self.net.eval()  # as the reference: the shared weights score the sample in evaluation mode
        with torch.no_grad():
            self.net.set_mode("dynamic", arch)
            score = self.score(batch["arch"])
        self.net.train(training)
        self.net.arch = trained_path
        reward = score + h.entropy_weight * entropy
        value = float(reward.detach())
        _, baseline = self.reinforce.advantage(value)
        if self.reinforce.accumulate(-log_prob * (reward - baseline), self.net.arch_parameters()):
            self.step_architecture()
        size = len(batch["arch"]["x"])
        self.log("train/arch_reward", value, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)
        self.log("train/arch_baseline", baseline, on_step=False, on_epoch=True, batch_size=size, sync_dist=True)

    def pick(self) -> str:
        generator = self.generator()
        with torch.no_grad():
            archs = [self.net.controller(generator)[2] for _ in range(self.hparams.candidates)]
        return self.best_candidate(archs)[0]


# ---------------------------------------------------------------------------------------------- registration
def _defaults(spec: TaskSpec) -> dict[str, Any]:
    """Batch 64 (the NATS config) unless the task's reference batch is smaller; evaluation/candidate batch 512 likewise."""
    batch = min(64, spec.reference.batch_size)
    eval_batch = 512 if spec.kind == "point" else min(512, spec.reference.eval_batch_size or spec.reference.batch_size)
    return {
        "data.batch_size": batch,
        "data.eval_batch_size": eval_batch,
        "model.candidate_batch": eval_batch,
        "data.split": "search",
        **eval_defaults(spec),
    }


def _arguments(parser: Any) -> None:
    add_nb201_arguments(parser, search_epochs=100, eval_epochs=200)


def _run(ctx: RunContext) -> dict[str, Any]:
    return run_nb201_search(ctx, "nb201")


for _name, _module, _description in (
    ("nb201_darts", DartsV1, "NB201 topology space: DARTS-V1 (first order) on the NATS weight-sharing setup"),
    ("nb201_darts2", DartsV2, "NB201 topology space: DARTS-V2 (unrolled second-order architecture gradient)"),
    ("nb201_gdas", GDAS, "NB201 topology space: GDAS (hard Gumbel-softmax sampling, tau 10 -> 0.1)"),
    ("nb201_setn", SETN, "NB201 topology space: SETN (path sampling, best of 100 probable candidates)"),
    ("nb201_enas", ENAS, "NB201 topology space: ENAS (LSTM controller trained by REINFORCE)"),
    ("nb201_rsps", RSPS, "NB201 topology space: random sampling with parameter sharing (best of 100)"),
):
    register_method(
        Method(name=_name, description=_description, module=_module, run=_run, defaults=_defaults, add_arguments=_arguments)
    )
