"""The NATS size-space (S_s) supernet for any task: the ``nats_sss`` network at 64 channels everywhere, with
one searched width per layer, as in xautodl's ``GenericNAS301Model`` (``exps/NATS-algos/search-size.py``).

The supernet is the :class:`~nb360.models.nb201.network.TinyNetwork` of the size space at the
largest widths (stem, cell, reduction, cell, reduction, cell; dense tasks have stride-1 cells in
the reduction slots). Its six layers map onto the five width decisions ``c0..c4`` as in the
space: the stem and the first cell both have width ``c0``. After every layer a per-decision
operation narrows the 64 channels to the chosen width; the three algorithms differ in that
operation:

* ``mask_gumbel`` (FBNetV2): ``x * (g @ M)`` with ``g`` a Gumbel-softmax sample (temperature
  ``tau``) of the decision's logits and ``M[i]`` the 0/1 mask of the first ``WIDTHS[i]`` channels;
* ``mask_rl`` (TuNAS): ``x * M[a]`` with ``a`` drawn from ``softmax(logits)``; the log-probabilities of
  the draws are kept in :attr:`SizeSupernet.log_probs` for the REINFORCE update;
* ``tas`` (TAS): two widths ``c1, c2`` drawn without replacement from the Gumbel-softmax
  probabilities, each prefix ``x[:, :c]`` interpolated channel-wise to ``max(c1, c2)`` channels
  (:func:`channel_interpolate`), summed with the two renormalised probabilities and zero-padded
  to 64 channels (xautodl's ``select2withP`` and ``ChannelWiseInter``).

Deviations from the reference (documented in the method docs):

* one draw per decision per forward pass: the reference draws ``c0`` separately for the stem and
  for the first cell (``idx = max(0, i - 1)``), so its two ``c0`` layers can get different widths;
  ``resample_c0=True`` restores that;
* ``mask_inside=True`` (default) also masks the output of every BatchNorm inside a layer (the
  convolutions of the cells and residual blocks), so that the supernet with a one-hot choice is
  exactly the ``nats_sss`` network on the sliced weights (where the cells keep an identity skip);
  the reference masks the layer outputs only (``mask_inside=False``). TAS always transforms the
  layer outputs only, as the reference;
* in evaluation mode (and whenever :attr:`SizeSupernet.fixed` is set) the supernet runs the single
  argmax (or fixed) architecture with 0/1 masks instead of sampling.

BatchNorm follows the search defaults of ``search-size.py`` (``affine=0``, ``track_running_stats=0``)
except in the residual reduction blocks, which the reference builds with its defaults (affine,
tracking). Convolutions stay bias-free: the reference's ``bias=not affine`` only adds biases in front of
a BatchNorm, which removes them.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nb360.models.nb201.network import TinyNetwork
from nb360.models.nb201.ops import ResNetBasicblock
from nb360.models.nb201.supernet import configure_batch_norm
from nb360.spaces.nb201 import SIZE, SSS_CELL, SSS_LAYERS, WIDTHS

__all__ = [
    "ALGOS",
    "LAYER_DECISIONS",
    "SizeSupernet",
    "channel_interpolate",
    "select_two",
    "warmup_at",
]

ALGOS = ("tas", "mask_gumbel", "mask_rl")
#: width decision of each supernet layer: stem, cell, reduction, cell, reduction, cell
LAYER_DECISIONS = (0, 0, 1, 2, 3, 4)
MAX_WIDTH = max(WIDTHS)


def warmup_at(epoch: int, epochs: int, ratio: float | None) -> float | None:
    """The probability of the full width during the controller warm-up (``None``: warm-up over, search on).

    As the reference: warm-up lasts while ``epoch / epochs < ratio``, with probability
    ``1 - epoch / epochs / ratio`` of the full width, else a uniformly drawn width.
    """
    if ratio is None or ratio <= epoch / epochs:
        return None
    return 1.0 - epoch / epochs / ratio


def channel_interpolate(x: Tensor, channels: int) -> Tensor:
    """xautodl's ``ChannelWiseInterV2`` for 1-D and 2-D features: adaptive average pooling over the channel axis.

    Output channel ``o`` is the mean of input channels ``floor(o C / channels) .. ceil((o + 1) C / channels) - 1``.
    """
    if x.shape[1] == channels:
        return x
    pool = {3: F.adaptive_avg_pool2d, 4: F.adaptive_avg_pool3d}[x.dim()]
    return pool(x.unsqueeze(1), (channels, *x.shape[2:])).squeeze(1)


def gumbel_logits(logits: Tensor, tau: float) -> Tensor:
    """``(log_softmax(logits) + Gumbel noise) / tau``, redrawn in the rare case of an infinite sample (the reference's loop)."""
    while True:
        gumbels = -torch.empty_like(logits).exponential_().log()
        new_logits = (logits.log_softmax(dim=-1) + gumbels) / tau
        if torch.isfinite(gumbels).all() and torch.isfinite(new_logits.softmax(dim=-1)).all():
            return new_logits


def select_two(logits: Tensor, tau: float, eps: float = 1e-7) -> tuple[list[int], Tensor]:
    """TAS' ``select2withP`` for one decision: two indices drawn without replacement from the Gumbel-softmax
    probabilities, and the softmax of their two perturbed logits (differentiable in ``logits``)."""
    new_logits = gumbel_logits(logits, tau) if tau > 0 else logits
    with torch.no_grad():
        index = torch.multinomial(new_logits.softmax(dim=-1).cpu() + eps, 2, replacement=False).tolist()
    return index, new_logits[index].softmax(dim=-1)


class SizeSupernet(nn.Module):
    """The S_s supernet of one algorithm (``tas``, ``mask_gumbel`` or ``mask_rl``).

    Args:
        dim, kind, in_channels, num_outputs: the task (1-D/2-D, point/dense, input channels, outputs).
        algo: the width-selection rule (see the module docstring).
        affine, track_running_stats: BatchNorm of the stem, cells and last activation (reference: both off).
        mask_inside: mask every BatchNorm output inside a layer too (not only the layer output).
        resample_c0: draw ``c0`` separately for the stem and the first cell, as the reference does.

    Attributes:
        arch_logits: ``(5, 8)`` logits, initialised as the reference ``1e-3 * N(0, 1)``.
        tau: Gumbel temperature (a buffer, set every epoch by the search module).
        warmup: probability of the full width during the warm-up, or ``None`` (search).
        fixed: width codes to run instead of sampling (``None``: sample in training, argmax in evaluation).
        log_probs: the log-probabilities of the ``mask_rl`` draws of the last forward pass.
    """

    def __init__(
        self,
        dim: int,
        kind: str,
        in_channels: int,
        num_outputs: int,
        algo: Literal["tas", "mask_gumbel", "mask_rl"] = "mask_gumbel",
        affine: bool = False,
        track_running_stats: bool = False,
        mask_inside: bool = True,
        resample_c0: bool = False,
    ) -> None:
        super().__init__()
        if algo not in ALGOS:
            raise ValueError(f"unknown size-search algorithm {algo!r}; choose one of: {', '.join(ALGOS)}")
        self.algo, self.mask_inside, self.resample_c0 = algo, mask_inside, resample_c0
        self.net = TinyNetwork(dim, kind, in_channels, num_outputs, SSS_CELL, [MAX_WIDTH] * SSS_LAYERS)
        for part in (self.net.stem, *self.net.cells, self.net.lastact):
            if not isinstance(part, ResNetBasicblock):
                configure_batch_norm(part, affine, track_running_stats)
        self.arch_logits = nn.Parameter(1e-3 * torch.randn(SSS_LAYERS, len(WIDTHS)))
        masks = torch.zeros(len(WIDTHS), MAX_WIDTH)
        for i, width in enumerate(WIDTHS):
            masks[i, :width] = 1.0
        self.register_buffer("masks", masks, persistent=False)
        self.register_buffer("tau", torch.tensor(10.0))
        self.warmup: float | None = None
        self.fixed: tuple[int, ...] | None = None
        self.log_probs: list[Tensor] = []
        self._inside: Tensor | None = None
        for layer in self.layers:
            for module in layer.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.register_forward_hook(self._mask_hook)

    @property
    def layers(self) -> list[nn.Module]:
        return [self.net.stem, *self.net.cells]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.arch_logits]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p is not self.arch_logits]

    def _mask_hook(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> Tensor | None:
        return None if self._inside is None else output * self._inside

    def _shape(self, mask: Tensor, like: Tensor) -> Tensor:
        return mask.view(1, -1, *([1] * (like.dim() - 2)))

    # ------------------------------------------------------------------ one decision
    def _draw(self, decision: int) -> tuple[str, object]:
        """What narrows the layers of one decision: ``("mask", tensor)`` or ``("tas", (indices, probs))``."""
        logits = self.arch_logits[decision]
        if self.fixed is not None or not self.training:
            code = self.fixed[decision] if self.fixed is not None else int(logits.argmax())
            return "mask", self.masks[code]
        if self.warmup is not None:
            full = torch.rand(()).item() < self.warmup
            code = len(WIDTHS) - 1 if full else int(torch.randint(len(WIDTHS), ()).item())
            return "mask", self.masks[code]
        if self.algo == "mask_gumbel":
            weights = F.gumbel_softmax(logits, tau=float(self.tau), dim=-1)
            return "mask", weights @ self.masks
        if self.algo == "mask_rl":
            distribution = torch.distributions.Categorical(logits=logits)
            action = distribution.sample()
            self.log_probs.append(distribution.log_prob(action))
            return "mask", self.masks[int(action)]
        return "tas", select_two(logits, float(self.tau))

    def _narrow(self, x: Tensor, kind: str, choice: object) -> Tensor:
        if kind == "mask":
            assert isinstance(choice, Tensor)
            return x * self._shape(choice, x)
        (i1, i2), probs = choice  # type: ignore[misc]
        c1, c2 = WIDTHS[i1], WIDTHS[i2]
        width = max(c1, c2)
        out = channel_interpolate(x[:, :c1], width) * probs[0] + channel_interpolate(x[:, :c2], width) * probs[1]
        return F.pad(out, [0, 0] * (x.dim() - 2) + [0, x.shape[1] - width])

    def forward(self, x: Tensor) -> Tensor:
        self.log_probs = []
        drawn: dict[int, tuple[str, object]] = {}
        for position, (layer, decision) in enumerate(zip(self.layers, LAYER_DECISIONS)):
            if decision not in drawn or (self.resample_c0 and position == 1):
                drawn[decision] = self._draw(decision)
            kind, choice = drawn[decision]
            inside = kind == "mask" and self.mask_inside and self.algo != "tas"
            self._inside = self._shape(choice, x) if inside else None  # type: ignore[arg-type]
            try:
                x = layer(x)
            finally:
                self._inside = None
            x = self._narrow(x, kind, choice)
        return self.net.head(self.net.lastact(x))

    # ------------------------------------------------------------------ architecture
    def probabilities(self) -> Tensor:
        return self.arch_logits.detach().softmax(dim=-1)

    def derive(self) -> str:
        """``c0:c1:c2:c3:c4`` by the argmax of every decision's logits."""
        return SIZE.format(tuple(int(i) for i in self.arch_logits.detach().argmax(dim=-1)))

    def entropy(self) -> float:
        p = self.probabilities()
        return float(-(p * p.clamp_min(1e-12).log()).sum(dim=-1).mean() / math.log(len(WIDTHS)))
