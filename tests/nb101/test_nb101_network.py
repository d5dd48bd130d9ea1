"""The NB101 network: parameter counts from hand formulas and published values, shapes on 1-D/2-D/dense tasks."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from nb101_cells import INCEPTION

from nb360.errors import UsageError
from nb360.models import build_network, count_parameters
from nb360.models.nb101 import BN_MOMENTUM, nb101_network, vertex_channels
from nb360.nb101.space import NB101
from nb360.nb101.spec import OPS
from nb360.tasks import get_task


def hand_count(matrix, ops, c_in=3, stem=128, stacks=3, cells=3, classes=10) -> int:
    """Trainable parameters by the reference definitions: conv k x k without bias (k*k*in*out), BN (2 per channel), dense."""
    m = np.array(matrix)
    n = len(m)

    def cell(cin: int, cout: int) -> int:
        ch = [0] * n
        feeders = [v for v in range(1, n - 1) if m[v, n - 1]]
        for k, v in enumerate(feeders):
            ch[v] = cout // len(feeders) + (1 if k < cout % len(feeders) else 0)
        for v in reversed(range(1, n - 1)):
            if not m[v, n - 1]:
                ch[v] = max(ch[w] for w in range(v + 1, n - 1) if m[v, w])
        total = 0
        for v in range(1, n - 1):
            if m[0, v]:
                total += cin * ch[v] + 2 * ch[v]  # 1x1 projection + BN
            k = {OPS[0]: 3, OPS[1]: 1}.get(ops[v])
            if k:
                total += k * k * ch[v] * ch[v] + 2 * ch[v]
        if m[0, n - 1]:
            total += cin * cout + 2 * cout
        return total

    total = 9 * c_in * stem + 2 * stem
    c = stem
    for s in range(stacks):
        cin = c
        if s:
            c *= 2
        for _ in range(cells):
            total += cell(cin, c)
            cin = c
    return total + c * classes + classes


def test_published_parameter_counts() -> None:
    two = ([[0, 1], [0, 0]], ["input", "output"])
    assert count_parameters(nb101_network({"matrix": two[0], "ops": two[1]})) == hand_count(*two) == 882_570
    # the reference Colab prints trainable_parameters 2694282 for the Inception-like cell
    assert count_parameters(nb101_network({"matrix": INCEPTION[0], "ops": INCEPTION[1]})) == hand_count(*INCEPTION) == 2_694_282


def test_parameter_counts_of_random_cells() -> None:
    rng = random.Random(0)
    for i in rng.sample(range(len(NB101)), 6):
        spec = NB101.spec(i)
        net = nb101_network(spec, stem_channels=16)
        assert count_parameters(net) == hand_count(spec.matrix, spec.ops, stem=16)


def test_channel_rule() -> None:
    # OUT has 3 interior feeders: 128 = 43 + 43 + 42, lowest index first; vertex 1 feeds 2 and takes its max
    m = np.zeros((6, 6), dtype=int)
    m[0, 1] = m[1, 2] = m[2, 5] = m[0, 3] = m[3, 5] = m[0, 4] = m[4, 5] = 1
    assert vertex_channels(64, 128, m) == [64, 43, 43, 43, 42, 128]


def test_shapes_on_every_kind_of_task() -> None:
    spec = {"matrix": INCEPTION[0], "ops": INCEPTION[1]}
    net = build_network("nb101", get_task("ninapro"), cell=spec, stem_channels=8)
    assert net(torch.randn(2, 1, 16, 52)).shape == (2, 18)
    net = build_network("nb101", get_task("satellite"), arch=NB101.index(spec), stem_channels=8)
    assert net(torch.randn(2, 1, 46)).shape == (2, 24)
    assert not any(
        isinstance(m, torch.nn.MaxPool1d) and m.stride == 2
        for m in build_network("nb101", get_task("darcy"), cell=spec, stem_channels=4).modules()
    )
    net = build_network("nb101", get_task("darcy"), cell=spec, stem_channels=4, stacks=2, cells=1)
    assert net(torch.randn(1, 3, 21, 21)).shape == (1, 1, 21, 21)
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert bn.momentum == pytest.approx(BN_MOMENTUM) == pytest.approx(0.003) and bn.eps == 1e-5
    # odd sizes downsample like TensorFlow's 'same' max-pool: ceil(n / 2)
    net = nb101_network(spec, stem_channels=4)
    feats = net.cells[:5](net.stem(torch.randn(1, 3, 33, 33)))
    assert feats.shape[-1] == 17
    with pytest.raises(UsageError, match="needs a cell"):
        build_network("nb101", get_task("ninapro"))
