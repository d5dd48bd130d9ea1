"""The NAS-Bench-201 edge operations and the residual reduction block, written once for 1-D and 2-D.

Definitions follow xautodl's ``cell_operations.py`` (the code that trained the benchmark),
with its benchmark settings: BatchNorm ``affine=True`` and ``track_running_stats=True``, so
every convolution is bias-free (xautodl uses ``bias=not affine``). Cells only ever use
stride 1; stride 2 appears in :class:`ResNetBasicblock` alone.
"""

from __future__ import annotations

from torch import Tensor, nn

from nb360.models.ops import avg_pool, batch_norm, conv
from nb360.spaces.nb201 import OPS

__all__ = ["AvgPoolOp", "ReLUConvBN", "ResNetBasicblock", "SkipProjection", "Zero", "make_op"]


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv (no bias: the BN that follows is affine) -> BN: xautodl's ``ReLUConvBN``."""

    def __init__(self, dim: int, c_in: int, c_out: int, kernel_size: int, stride: int = 1, padding: int = 0) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            conv(dim, c_in, c_out, kernel_size, stride=stride, padding=padding, bias=False),
            batch_norm(dim, c_out),
        )


class Zero(nn.Module):
    """The ``none`` edge: zeros shaped like the input, with ``c_out`` channels.

    The reference returns ``x * 0`` when the widths agree and a fresh zero tensor when
    they differ. Here both cases stay attached to ``x``'s autograd graph (``x[:, :1] * 0``
    broadcast to ``c_out`` channels), so that a cell whose input edges are all ``none``
    does not leave upstream parameters without gradients, which DDP would reject. The
    values are the same zeros.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.c_in, self.c_out = c_in, c_out

    def forward(self, x: Tensor) -> Tensor:
        if self.c_in == self.c_out:
            return x.mul(0.0)
        return x[:, :1].mul(0.0).expand(x.shape[0], self.c_out, *x.shape[2:])

    def extra_repr(self) -> str:
        return f"c_in={self.c_in}, c_out={self.c_out}"


class SkipProjection(nn.Sequential):
    """``skip_connect`` between different widths: Conv1x1 (no bias) -> BN, without a ReLU.

    This is xautodl's ``FactorizedReduce`` at stride 1 (its ReLU is applied only in the
    stride-2 branch). NB201 meets it in the dense (no-reduction) networks, where the
    cells that replace the reduction blocks change the width.
    """

    def __init__(self, dim: int, c_in: int, c_out: int) -> None:
        super().__init__(conv(dim, c_in, c_out, 1, bias=False), batch_norm(dim, c_out))


class AvgPoolOp(nn.Module):
    """``avg_pool_3x3``: stride 1, padding 1, padded positions excluded from the mean.

    A ReLU-Conv1x1-BN maps the width first when ``c_in != c_out`` (xautodl's ``POOLING``).
    """

    def __init__(self, dim: int, c_in: int, c_out: int) -> None:
        super().__init__()
        self.preprocess = ReLUConvBN(dim, c_in, c_out, 1) if c_in != c_out else None
        self.pool = avg_pool(dim, 3, stride=1, padding=1, count_include_pad=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(x if self.preprocess is None else self.preprocess(x))


def make_op(name: str, dim: int, c_in: int, c_out: int) -> nn.Module:
    """One NB201 edge operation (stride 1) mapping ``c_in`` to ``c_out`` channels."""
    if name == "none":
        return Zero(c_in, c_out)
    if name == "skip_connect":
        return nn.Identity() if c_in == c_out else SkipProjection(dim, c_in, c_out)
    if name == "nor_conv_1x1":
        return ReLUConvBN(dim, c_in, c_out, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(dim, c_in, c_out, 3, padding=1)
    if name == "avg_pool_3x3":
        return AvgPoolOp(dim, c_in, c_out)
    raise ValueError(f"unknown NB201 operation {name!r}; choose one of: {', '.join(OPS)}")


class ResNetBasicblock(nn.Module):
    """The fixed block between NB201 stages (xautodl's ``ResNetBasicblock``).

    Main path: ReLUConvBN 3x3 (``stride``, pad 1) -> ReLUConvBN 3x3 (pad 1). Shortcut at
    stride 2: AvgPool 2/2 -> Conv1x1 (no bias, no BN); at stride 1 a ReLUConvBN 1x1 when
    the width changes, else the identity. Output = shortcut + main, with no final ReLU.

    Deviation: the shortcut pool uses ``ceil_mode=True`` so that odd sizes (e.g. length
    23 -> 12) agree with the strided convolution; on even sizes, the only ones the
    reference can run, the result is identical.
    """

    def __init__(self, dim: int, c_in: int, c_out: int, stride: int = 2) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ResNetBasicblock stride must be 1 or 2, got {stride!r}")
        self.conv_a = ReLUConvBN(dim, c_in, c_out, 3, stride=stride, padding=1)
        self.conv_b = ReLUConvBN(dim, c_out, c_out, 3, padding=1)
        self.shortcut: nn.Module | None
        if stride == 2:
            pool = avg_pool(dim, 2, stride=2)
            pool.ceil_mode = True
            self.shortcut = nn.Sequential(pool, conv(dim, c_in, c_out, 1, bias=False))
        elif c_in != c_out:
            self.shortcut = ReLUConvBN(dim, c_in, c_out, 1)
        else:
            self.shortcut = None
        self.c_in, self.c_out, self.stride = c_in, c_out, stride

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.shortcut is None else self.shortcut(x)
        return residual + self.conv_b(self.conv_a(x))

    def extra_repr(self) -> str:
        return f"c_in={self.c_in}, c_out={self.c_out}, stride={self.stride}"
