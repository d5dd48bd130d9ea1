"""The one bilevel loop of nb360: a weight step on one half of the training data, an architecture step on the other.

Every one-shot method (DARTS, GAEA, DenseNAS, ...) subclasses :class:`SearchModule` and
defines its supernet, its optimisers and, if needed, its own architecture step.
Training batches are pairs ``{"weights": batch, "arch": batch}`` built by
:class:`BilevelDataModule` from any task's DataModule: the training part is cut into two
halves (the reference's ``BilevelDataset``) and every sample of the first half is paired
with a sample of the second, in an order fixed by the seed and the epoch, so a resumed
search repeats exactly what an uninterrupted one would have done.

Under DDP the architecture gradients are averaged over the processes before every
architecture step, and :meth:`SearchModule.derive` checks that all processes end with
identical architecture parameters and architecture.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from nb360.datamodules.base import loader_generator, run_seed
from nb360.run import sync_epoch_schedules
from nb360.search.task_module import TaskModule

__all__ = ["PairSampler", "BilevelDataset", "BilevelDataModule", "SearchModule", "functional_loss", "global_norm"]


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class PairSampler(DistributedSampler):
    """``(weight index, architecture index)`` pairs of one epoch: a random order of the first half, each
    sample paired with a random sample of the second half; a process's share of them under DDP.

    With ``arch_fraction`` other than 0.5 the architecture part is the last ``arch_fraction`` of the
    samples, and an epoch pairs each of as many random weight samples as the smaller part holds
    with a distinct architecture sample (DenseNAS: 80/20, an epoch = 20 % of the training data).
    """

    def __init__(self, size: int, seed: int, arch_fraction: float = 0.5) -> None:
        if not 0 < arch_fraction < 1:
            raise ValueError(f"arch_fraction must lie in (0, 1), got {arch_fraction}")
        replicas, rank = (dist.get_world_size(), dist.get_rank()) if _distributed() else (1, 0)
        if arch_fraction == 0.5:
            self.half, self.arch_size = size // 2, size // 2
        else:  # e.g. DenseNAS: the last 20 % for the architecture, an epoch as many pairs as that part holds
            self.arch_size = min(size - 1, max(1, round(size * arch_fraction)))
            self.half = size - self.arch_size  # the weights part: indices [0, half)
        super().__init__(range(min(self.half, self.arch_size)), num_replicas=replicas, rank=rank, shuffle=True, seed=seed)

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**63)
        if self.half == self.arch_size:
            order = torch.randperm(self.half, generator=generator)
            partner = torch.randperm(self.half, generator=generator) + self.half
            pairs = list(zip(order.tolist(), partner[order].tolist()))
        else:
            count = min(self.half, self.arch_size)
            order = torch.randperm(self.half, generator=generator)[:count]
            partner = torch.randperm(self.arch_size, generator=generator)[:count] + self.half
            pairs = list(zip(order.tolist(), partner.tolist()))
        total = self.num_samples * self.num_replicas
        pairs += pairs[: total - len(pairs)]
        return iter(pairs[self.rank : total : self.num_replicas])


def _gather(dataset: Dataset, indices: Sequence[int]) -> dict[str, Tensor]:
    if hasattr(dataset, "__getitems__"):
        return dataset.__getitems__(list(indices))
    return default_collate([dataset[i] for i in indices])


class BilevelDataset(Dataset):
    """Batches of pairs: ``{"weights": batch of the first half, "arch": batch of the second}``."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset) // 2

    def __getitems__(self, pairs: Sequence[tuple[int, int]]) -> dict[str, dict[str, Tensor]]:
        weights, arch = zip(*pairs)
        return {"weights": _gather(self.dataset, weights), "arch": _gather(self.dataset, arch)}


def _passthrough(batch: Any) -> Any:
    return batch


class BilevelDataModule(pl.LightningDataModule):
    """A task's DataModule whose training loader yields bilevel pairs; everything else is the task's."""

    def __init__(self, inner: pl.LightningDataModule, arch_fraction: float | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.arch_fraction = arch_fraction

    def __getattr__(self, name: str) -> Any:
        if name in ("inner", "arch_fraction"):
            raise AttributeError(name)
        return getattr(self.inner, name)

    def prepare_data(self) -> None:
        self.inner.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.inner.setup(stage)

    def train_dataloader(self) -> DataLoader:
        dataset = self.inner.datasets["train"]
        if len(dataset) < 2:
            raise ValueError("a bilevel search needs at least two training samples")
        return DataLoader(
            BilevelDataset(dataset),
            batch_size=self.inner.batch_size,
            sampler=PairSampler(len(dataset), run_seed(), self._arch_fraction()),
            generator=loader_generator(),
            num_workers=self.inner.num_workers,
            persistent_workers=self.inner.num_workers > 0,
            collate_fn=_passthrough,
        )

    def _arch_fraction(self) -> float:
        """The given fraction, else the searching module's ``arch_fraction`` (default: halves)."""
        if self.arch_fraction is not None:
            return self.arch_fraction
        trainer = getattr(self, "trainer", None)
        return float(getattr(trainer.lightning_module, "arch_fraction", 0.5)) if trainer is not None else 0.5

    def val_dataloader(self) -> Any:
        return self.inner.val_dataloader()

    def test_dataloader(self) -> Any:
        return self.inner.test_dataloader()


class SearchModule(TaskModule):
    """Manual bilevel optimisation. Subclasses set ``self.net`` (with ``arch_parameters()`` and
    ``weight_parameters()``), return ``[weight optimiser, arch optimiser], [schedulers]`` from
    ``configure_optimizers`` and implement :meth:`derive_local`.

    Args:
        warmup_epochs: epochs with weight steps only (the reference updates the architecture from
            epoch index ``warmup_epochs`` on; GAEA's ``epoch_idx > 10`` is 11).
        grad_clip: L2 norm the weight gradients are clipped to (0: no clipping).
        arch_first: take the architecture step before the weight step (DARTS) rather than after (GAEA).
    """

    def __init__(
        self, task: str, warmup_epochs: int, grad_clip: float, arch_first: bool, metric_options: dict[str, Any] | None
    ) -> None:
        super().__init__(task, metric_options)
        self.automatic_optimization = False
        self.warmup_epochs, self.grad_clip, self.arch_first = warmup_epochs, grad_clip, arch_first

    # ----------------------------------------------------------------- the loop
    def training_step(self, batch: dict[str, dict[str, Tensor]], batch_idx: int) -> None:
        searching = self.current_epoch >= self.warmup_epochs
        if searching and self.arch_first:
            self.arch_step(batch)
        self.weight_step(batch["weights"])
        if searching and not self.arch_first:
            self.arch_step(batch)

    def weight_step(self, batch: dict[str, Tensor]) -> None:
        weight_opt, arch_opt = self.optimizers()
        weight_opt.zero_grad()
        loss = self.batch_loss(batch)
        self.manual_backward(loss)
        if self.grad_clip > 0:
            self.clip_gradients(weight_opt, gradient_clip_val=self.grad_clip, gradient_clip_algorithm="norm")
        weight_opt.step()
        arch_opt.zero_grad()  # this step's architecture gradients are not used
        self.log_epoch_mean("train/loss", loss, len(batch["x"]))

    def arch_step(self, batch: dict[str, dict[str, Tensor]]) -> None:
        """First-order step: the gradient of the loss on the architecture half (override for other rules)."""
        weight_opt, arch_opt = self.optimizers()
        arch_opt.zero_grad()
        loss = self.batch_loss(batch["arch"])
        self.manual_backward(loss)
        self.step_architecture()
        self.log_epoch_mean("train/arch_loss", loss, len(batch["arch"]["x"]))

    def step_architecture(self) -> None:
        """Average the architecture gradients over processes, step the architecture optimiser, drop weight gradients."""
        weight_opt, arch_opt = self.optimizers()
        if _distributed():
            for p in self.net.arch_parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                    p.grad /= dist.get_world_size()
        arch_opt.step()
        weight_opt.zero_grad()

    def on_train_epoch_start(self) -> None:
        """Bring the per-epoch schedules to this epoch.

        Stepping them at the start of an epoch rather than at its end keeps them right after
        a resume: the checkpoint of an epoch is written before a module's epoch-end hook runs.
        """
        sync_epoch_schedules(self.trainer)

    def on_train_epoch_end(self) -> None:
        self.log_epoch_means()
        self.log_dict(self.arch_summary(), on_step=False, on_epoch=True)

    # ----------------------------------------------------------------- DARTS' second order
    def unrolled_arch_step(self, batch: dict[str, dict[str, Tensor]]) -> None:
        """Architecture step with DARTS' unrolled second-order gradient (needs ``hparams.unroll_eps``)."""
        weight_opt, arch_opt = self.optimizers()
        arch_opt.zero_grad()
        gradients, loss = self.unrolled_arch_gradients(batch["weights"], batch["arch"], weight_opt.optimizer)
        for p, g in zip(self.net.arch_parameters(), gradients):
            p.grad = g
        self.step_architecture()
        self.log_epoch_mean("train/arch_loss", loss, len(batch["arch"]["x"]))

    def unrolled_arch_gradients(
        self, train_batch: dict[str, Tensor], arch_batch: dict[str, Tensor], weight_opt: torch.optim.Optimizer
    ) -> tuple[list[Tensor], Tensor]:
        """DARTS' second-order architecture gradient (Liu et al. 2019, eq. 7-8), and the unrolled architecture loss.

        With one virtual SGD step ``w' = w - xi (momentum * buffer + dL_train/dw + wd * w)`` (xi the
        weights' current learning rate), the gradient of ``L_arch(w', alpha)`` is
        ``dL_arch/dalpha - xi * d2L_train/dalpha dw . dL_arch/dw'``; the Hessian-vector product
        is the central difference of ``dL_train/dalpha`` at ``w +- eps dL_arch/dw'``.
        """
        group = weight_opt.param_groups[0]
        xi, momentum, decay = group["lr"], group.get("momentum", 0.0), group.get("weight_decay", 0.0)
        names = {id(p): n for n, p in self.net.named_parameters()}
        weights, arch = self.net.weight_parameters(), self.net.arch_parameters()
        grads = torch.autograd.grad(self.batch_loss(train_batch), weights)
        unrolled = {}
        for w, g in zip(weights, grads):
            buffer = weight_opt.state.get(w, {}).get("momentum_buffer")
            step = g + decay * w.detach() + (momentum * buffer if buffer is not None else 0.0)
            unrolled[names[id(w)]] = (w.detach() - xi * step).requires_grad_()
        arch_loss = functional_loss(self, arch_batch, unrolled)
        arch_grads = torch.autograd.grad(arch_loss, [*arch, *unrolled.values()])
        d_arch, d_unrolled = arch_grads[: len(arch)], arch_grads[len(arch) :]
        eps = self.hparams.unroll_eps / global_norm(d_unrolled).clamp_min(1e-12)

        def train_arch_grads(sign: float) -> tuple[Tensor, ...]:
            shifted = {names[id(w)]: w.detach() + sign * eps * d for w, d in zip(weights, d_unrolled)}
            return torch.autograd.grad(functional_loss(self, train_batch, shifted), arch)

        plus, minus = train_arch_grads(1.0), train_arch_grads(-1.0)
        return [da - xi * (p - m) / (2 * eps) for da, p, m in zip(d_arch, plus, minus)], arch_loss.detach()

    def sgd_and_adam(self) -> Any:
        """SGD (cosine to ``min_lr``) for the weights and Adam for the architecture, from the usual hyperparameter names."""
        from nb360.search.train import build_scheduler

        h = self.hparams
        weights = torch.optim.SGD(self.net.weight_parameters(), lr=h.lr, momentum=h.momentum, weight_decay=h.weight_decay)
        arch = torch.optim.Adam(self.net.arch_parameters(), lr=h.arch_lr, betas=tuple(h.arch_betas), weight_decay=h.arch_weight_decay)
        return [weights, arch], [build_scheduler(weights, "cosine", self.trainer.max_epochs, h.min_lr)]

    # ----------------------------------------------------------------- architecture
    def arch_summary(self) -> dict[str, float]:
        """Scalars describing the architecture weights, logged every epoch (CSV, W&B)."""
        return {}

    def derive_local(self) -> dict[str, Any]:
        """The discrete architecture of this process's supernet, as JSON-serialisable data."""
        raise NotImplementedError

    def derive(self) -> dict[str, Any]:
        """The derived architecture, checked to be identical, with identical architecture parameters, on every process."""
        arch = self.derive_local()
        if _distributed():
            state = [p.detach().cpu() for p in self.net.arch_parameters()]
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (arch, state))
            for rank, (other, other_state) in enumerate(gathered):
                same = other == arch and all(torch.equal(a, b) for a, b in zip(state, other_state))
                if not same:
                    raise RuntimeError(
                        f"process {rank} ended the search with different architecture parameters than process {dist.get_rank()}"
                    )
        return arch


def global_norm(tensors: Sequence[Tensor]) -> Tensor:
    return torch.sqrt(sum((t.detach() ** 2).sum() for t in tensors))


def functional_loss(module: TaskModule, batch: dict[str, Tensor], parameters: dict[str, Tensor]) -> Tensor:
    """The task loss of ``module.net`` with some parameters replaced; BN statistics of these calls are discarded."""
    x, y, extras = module._split(batch)
    buffers = {name: b.clone() for name, b in module.net.named_buffers()}
    out = torch.func.functional_call(module.net, {**buffers, **parameters}, (x,))
    return module.loss(module.decoder(out), y, **extras)
