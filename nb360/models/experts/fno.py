"""Darcy Flow's expert: the 2-D Fourier Neural Operator (Li et al. 2021), as NB360 trains it.

Reference: NB ``expert/Darcyflow/fourier_neural_operator/fourier_2d.py``: a pointwise lifting
to ``width`` channels, four Fourier layers (a spectral convolution that keeps ``modes``
frequencies per axis plus a pointwise 1x1 convolution, GELU between layers), the domain
zero-padded by 9 on the bottom/right while in the Fourier layers, and a pointwise projection
``width -> 128 -> 1``. The reference adds the two grid channels inside its model; nb360's
Darcy inputs already carry them (normalised coefficient, then the grid), so the lifting maps
the input's channels directly (the grid channels come in the other order, which only permutes
the lifting's input weights). The spectral weights are stored as real tensors with a trailing
(real, imaginary) axis, so that parameter counts agree with the reference's ``count_params``
(2,368,001 with modes 12 and width 32) and every optimiser treats them as real numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nb360.errors import UsageError
from nb360.models import register_network
from nb360.search.expert import Expert, register_expert
from nb360.tasks import TaskSpec

__all__ = ["SpectralConv2d", "FNO2d"]


class SpectralConv2d(nn.Module):
    """FFT, a learned complex linear map on the lowest ``modes`` frequencies of both axes, inverse FFT.

    Two weight blocks cover the kept frequencies of the first axis (the positive ``[:modes]`` and the
    negative ``[-modes:]`` ones); along the last axis the real FFT keeps only non-negative frequencies.
    """

    def __init__(self, in_channels: int, out_channels: int, modes1: int, modes2: int) -> None:
        super().__init__()
        self.out_channels, self.modes1, self.modes2 = out_channels, modes1, modes2
        scale = 1 / (in_channels * out_channels)
        # real and imaginary parts uniform in [0, scale), as torch.rand(..., dtype=cfloat) draws them in the reference
        self.weights1 = nn.Parameter(scale * torch.rand(in_channels, out_channels, modes1, modes2, 2))
        self.weights2 = nn.Parameter(scale * torch.rand(in_channels, out_channels, modes1, modes2, 2))

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        if 2 * self.modes1 > height or self.modes2 > width // 2 + 1:
            raise UsageError(
                f"{self.modes1} x {self.modes2} Fourier modes need a grid of at least {2 * self.modes1} x {2 * self.modes2 - 2} "
                f"points (padding included), got {height} x {width}; lower the network option 'modes'"
            )
        m1, m2 = self.modes1, self.modes2
        mix = "bixy,ioxy->boxy"
        with torch.autocast(x.device.type, enabled=False):  # FFTs and complex products in fp32 under mixed precision
            x_ft = torch.fft.rfft2(x.float())
            out_ft = x_ft.new_zeros(x.shape[0], self.out_channels, height, width // 2 + 1)
            out_ft[:, :, :m1, :m2] = torch.einsum(mix, x_ft[:, :, :m1, :m2], torch.view_as_complex(self.weights1.float()))
            out_ft[:, :, -m1:, :m2] = torch.einsum(mix, x_ft[:, :, -m1:, :m2], torch.view_as_complex(self.weights2.float()))
            return torch.fft.irfft2(out_ft, s=(height, width)).to(x.dtype)


class FNO2d(nn.Module):
    """Lifting, ``layers`` Fourier layers ``x -> K(x) + W x`` (GELU after all but the last), projection.

    Input ``(batch, in_channels, H, W)``; output ``(batch, num_outputs, H, W)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_outputs: int = 1,
        modes: int = 12,
        width: int = 32,
        layers: int = 4,
        padding: int = 9,
        projection: int = 128,
    ) -> None:
        super().__init__()
        self.padding = padding
        self.fc0 = nn.Linear(in_channels, width)
        self.spectral = nn.ModuleList(SpectralConv2d(width, width, modes, modes) for _ in range(layers))
        self.pointwise = nn.ModuleList(nn.Conv2d(width, width, 1) for _ in range(layers))
        self.fc1 = nn.Linear(width, projection)
        self.fc2 = nn.Linear(projection, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        x = self.fc0(x.movedim(1, -1)).movedim(-1, 1)
        if self.padding:
            x = F.pad(x, [0, self.padding, 0, self.padding])
        last = len(self.spectral) - 1
        for i, (spectral, pointwise) in enumerate(zip(self.spectral, self.pointwise)):
            x = spectral(x) + pointwise(x)
            if i < last:
                x = F.gelu(x)
        if self.padding:
            x = x[..., : -self.padding, : -self.padding]
        x = F.gelu(self.fc1(x.movedim(1, -1)))
        return self.fc2(x).movedim(-1, 1)


@register_network("fno2d")
def build_fno2d(
    spec: TaskSpec, modes: int = 12, width: int = 32, layers: int = 4, padding: int = 9, dropout: float = 0.0
) -> nn.Module:
    """FNO-2d for a 2-D dense task; the reference has no dropout, so ``dropout`` must be 0."""
    if dropout:
        raise ValueError("fno2d has no dropout (the reference FNO-2d uses none); leave model.dropout at 0")
    if spec.dims != 2 or spec.kind != "dense":
        raise ValueError(f"fno2d needs a 2-D dense task; {spec.name} is {spec.dims}-D {spec.kind}")
    return FNO2d(spec.in_channels, spec.num_outputs, modes=modes, width=width, layers=layers, padding=padding)


register_expert(
    Expert(
        task="darcy",
        title="FNO-2d (modes 12, width 32)",
        source="expert/Darcyflow/fourier_neural_operator/fourier_2d.py",
        defaults={
            "model.network": "fno2d",
            "model.network_options": {"modes": 12, "width": 32},
            "model.optimizer": "adam",
            "model.lr": 1e-3,
            "model.weight_decay": 1e-4,
            "model.schedule": "steplr",
            "model.step_size": 100,
            "model.gamma": 0.5,
            "trainer.max_epochs": 500,
            "data.batch_size": 20,
            "data.eval_batch_size": 20,
        },
    )
)
