"""NB201 / NATS size-space networks: parameter and FLOP counts against published and hand-computed numbers, shapes, errors.

The expected numbers come from outside this code: NATS-Bench's stored cost records and
ranges (spec ``nb201.md`` section 8), the NB360 columns of that table (computed from the
reference definitions, and reproduced by running xautodl's and NB360's own classes and
``get_model_infos``), and arithmetic written out below from the layer definitions.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nb360.errors import UsageError
from nb360.models import build_network, network_names
from nb360.models.nb201 import (
    InferCell,
    ResNetBasicblock,
    arch_costs,
    count_params,
    model_costs,
    size_network,
    topology_network,
)
from nb360.spaces.nb201 import OPS, SSS_CELL, TOPOLOGY
from nb360.tasks import get_task

RESNET = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"
ALL_3X3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"

# name -> (constructor options, input shape (C, *spatial))
SHAPES = {
    "cifar10": ({"in_channels": 3, "num_outputs": 10}, (3, 32, 32)),
    "cifar100": ({"in_channels": 3, "num_outputs": 100}, (3, 32, 32)),
    "imagenet16-120": ({"in_channels": 3, "num_outputs": 120}, (3, 16, 16)),
    "ninapro": ({"in_channels": 1, "num_outputs": 18}, (1, 16, 52)),
    "darcy": ({"in_channels": 3, "num_outputs": 1, "kind": "dense"}, (3, 85, 85)),
}

# spec nb201.md section 8
PARAMS = {
    RESNET: {"cifar10": 559_386, "cifar100": 565_236, "imagenet16-120": 566_536, "ninapro": 559_618, "darcy": 558_993},
    ALL_3X3: {"cifar10": 1_531_546, "cifar100": 1_537_396, "imagenet16-120": 1_538_696, "ninapro": 1_531_778, "darcy": 1_667_409},
    ALL_NONE: {"cifar10": 73_306, "cifar100": 79_156, "imagenet16-120": 80_456, "ninapro": 73_538, "darcy": 657},
}

# stored NATS FLOPs (M): the CIFAR-10 ResNet record, and the (min, max) over S_t reached by
# conv-free cells and the all-3x3 cell
FLOP_RANGES = {"cifar10": (7.78305, 220.11969), "cifar100": (7.7889, 220.12554), "imagenet16-120": (1.9534, 55.03756)}


def network(arch: str, task: str) -> nn.Module:
    options, _ = SHAPES[task]
    return topology_network(arch, **options)


@pytest.mark.parametrize("task", list(SHAPES))
@pytest.mark.parametrize("arch", list(PARAMS), ids=["resnet", "all_3x3", "all_none"])
def test_parameter_table(arch, task):
    assert count_params(network(arch, task)) == PARAMS[arch][task]


def test_resnet_cell_cifar10_costs_match_the_stored_record():
    params, flops = model_costs(network(RESNET, "cifar10"), SHAPES["cifar10"][1])
    assert params == pytest.approx(0.559386, abs=1e-9)
    assert flops == pytest.approx(78.56193, abs=1e-5)


@pytest.mark.parametrize("task", list(FLOP_RANGES))
def test_flop_range_of_the_topology_space(task):
    conv_free = "|avg_pool_3x3~0|+|skip_connect~0|none~1|+|none~0|avg_pool_3x3~1|skip_connect~2|"
    low, high = FLOP_RANGES[task]
    shape = SHAPES[task][1]
    assert model_costs(network(ALL_NONE, task), shape)[1] == pytest.approx(low, abs=1e-5)
    assert model_costs(network(conv_free, task), shape)[1] == pytest.approx(low, abs=1e-5)
    assert model_costs(network(ALL_3X3, task), shape)[1] == pytest.approx(high, abs=1e-5)


def rcb(k: int, c_in: int, c_out: int) -> int:
    """ReLU-Conv(k, no bias)-BN: weights plus BN scale and shift."""
    return k * c_in * c_out + 2 * c_out


def test_size_space_parameters_by_hand():
    # SSS_CELL edges: 1<-0 3x3, 2<-0 3x3, 2<-1 3x3, 3<-0 skip, 3<-1 3x3, 3<-2 3x3
    def cell(c_in: int, c_out: int) -> int:
        skip = 0 if c_in == c_out else c_in * c_out + 2 * c_out  # conv1x1 + BN when the width changes
        return 2 * rcb(9, c_in, c_out) + skip + 3 * rcb(9, c_out, c_out)

    def resblock(c_in: int, c_out: int) -> int:
        return rcb(9, c_in, c_out) + rcb(9, c_out, c_out) + c_in * c_out  # shortcut conv1x1, no BN

    stem = 9 * 3 * 8 + 2 * 8
    total = stem + cell(8, 8) + resblock(8, 16) + cell(16, 24) + resblock(24, 32) + cell(32, 40) + 2 * 40 + (40 * 10 + 10)
    assert total == 232 + 2_960 + 3_648 + 23_136 + 17_024 + 68_000 + 80 + 410 == 115_490
    assert count_params(size_network("8:16:24:32:40")) == total
    # all widths 64: cells keep the width, so the skip edges are free
    total64 = 9 * 3 * 64 + 128 + 3 * 5 * rcb(9, 64, 64) + 2 * (2 * rcb(9, 64, 64) + 64 * 64) + 128 + 64 * 100 + 100
    assert count_params(size_network("64:64:64:64:64", num_outputs=100)) == total64 == 719_524


def test_size_space_channel_flow():
    net = size_network("8:16:24:32:40")
    flow = [(layer.c_in, layer.c_out, type(layer).__name__) for layer in net.cells]
    assert flow == [
        (8, 8, "InferCell"),
        (8, 16, "ResNetBasicblock"),
        (16, 24, "InferCell"),
        (24, 32, "ResNetBasicblock"),
        (32, 40, "InferCell"),
    ]
    assert net.stem[0].out_channels == 8 and net.head.fc.in_features == 40
    assert all(layer.arch == SSS_CELL for layer in net.cells if isinstance(layer, InferCell))


@pytest.mark.parametrize("widths", ["8:16:24:32:40", "64:8:40:16:56"])
def test_size_space_forward(widths):
    net = size_network(widths, num_outputs=100).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    dense = build_network("nats_sss", get_task("darcy"), arch=widths).eval()
    assert not any(isinstance(m, ResNetBasicblock) for m in dense.modules())
    with torch.no_grad():
        assert dense(torch.randn(1, 3, 20, 20)).shape == (1, 1, 20, 20)


@pytest.fixture(scope="module")
def darcy_net() -> nn.Module:
    return build_network("nb201", get_task("darcy"), arch=RESNET).eval()


def test_darcy_network_is_full_resolution(darcy_net):
    assert len(darcy_net.cells) == 17 and all(isinstance(c, InferCell) for c in darcy_net.cells)
    assert [(c.c_in, c.c_out) for c in darcy_net.cells][4:7] == [(16, 16), (16, 32), (32, 32)]
    strides = {s for m in darcy_net.modules() if isinstance(m, (nn.Conv2d, nn.AvgPool2d)) for s in _tuple(m.stride)}
    assert strides == {1}
    with torch.no_grad():
        out = darcy_net(torch.randn(2, 3, 85, 85))
    assert out.shape == (2, 1, 85, 85) and torch.isfinite(out).all()


def _tuple(value: int | tuple[int, ...]) -> tuple[int, ...]:
    return value if isinstance(value, tuple) else (value,)


def test_darcy_flops_count_the_head_once_like_xautodl(darcy_net):
    once = model_costs(darcy_net, (3, 85, 85))[1]
    per_position = model_costs(darcy_net, (3, 85, 85), linear_per_position=True)[1]
    # xautodl's (and NB360's Darcy) Linear hook counts in*out+out per sample; at every one of the 85*85 positions it would be:
    assert (per_position - once) * 1e6 == pytest.approx((85 * 85 - 1) * (64 * 1 + 1))


def test_ninapro_network_and_arch_costs():
    spec = get_task("ninapro")
    net = build_network("nb201", spec, arch=RESNET, dropout=0.3).eval()
    assert [type(c).__name__ for c in net.cells].count("ResNetBasicblock") == 2
    with torch.no_grad():
        assert net(torch.randn(2, 1, 16, 52)).shape == (2, 18)
    params, flops = arch_costs(RESNET, spec)
    assert params == pytest.approx(0.559618, abs=1e-9)
    # xautodl's get_model_infos on NB360's NinaPro TinyNetwork (run once by hand; not a test dependency)
    assert flops == pytest.approx(63.59259, abs=1e-5)
    assert arch_costs("8:16:24:32:40", get_task("cifar100"))[0] == pytest.approx(0.119180, abs=1e-9)


@pytest.mark.parametrize(("task", "length", "outputs"), [("ecg", 1000, 4), ("satellite", 46, 24)])
def test_one_dimensional_point_tasks(task, length, outputs):
    net = build_network("nb201", get_task(task), arch=RESNET, channels=8, cells=1).eval()
    assert all(isinstance(m, nn.Conv1d) for m in net.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d)))
    with torch.no_grad():
        assert net(torch.randn(2, 1, length)).shape == (2, outputs)  # 46 -> 23 -> 12: odd lengths work too


@pytest.mark.parametrize("dim", [1, 2])
def test_cells_give_finite_outputs(dim):
    rng = torch.Generator().manual_seed(0)
    single_op = [TOPOLOGY.format((code,) * 6) for code in range(len(OPS))]
    sampled = [TOPOLOGY.arch(int(i)) for i in torch.randint(0, len(TOPOLOGY), (20,), generator=rng)]
    x = torch.randn(2, 4, *(6,) * dim, generator=rng)
    for arch in single_op + sampled:
        for c_out in (4, 6):
            cell = InferCell(dim, arch, 4, c_out)
            out = cell(x)
            assert out.shape == (2, c_out, *(6,) * dim) and torch.isfinite(out).all(), arch
    block = ResNetBasicblock(dim, 4, 8)
    assert block(x).shape == (2, 8, *(3,) * dim)


def test_all_none_network_runs_and_keeps_gradients_flowing():
    for spec in (get_task("ninapro"), get_task("darcy")):
        net = build_network("nb201", spec, arch=ALL_NONE, cells=1)
        x = torch.randn(2, *spec.input_shape[:1], 16, 20)
        out = net(x)
        assert torch.isfinite(out).all()
        out.sum().backward()
        # the zeros stay attached to the graph, so DDP sees a gradient for every parameter
        assert all(p.grad is not None for p in net.parameters())


def test_registered_networks():
    assert {"nb201", "nats_sss"} <= set(network_names())


@pytest.mark.parametrize(
    ("network", "options"),
    [
        ("nb201", {}),
        ("nb201", {"arch": "bogus"}),
        ("nb201", {"arch": "|conv_5x5~0|+|none~0|none~1|+|none~0|none~1|none~2|"}),
        ("nb201", {"arch": "|none~0|+|none~0|none~1|"}),
        ("nb201", {"arch": 3}),
        ("nats_sss", {}),
        ("nats_sss", {"arch": "8:16:24:32"}),
        ("nats_sss", {"arch": "9:16:24:32:40"}),
        ("nats_sss", {"arch": RESNET}),
    ],
)
def test_bad_architectures_are_one_line_usage_errors(network, options):
    with pytest.raises(UsageError) as err:
        build_network(network, get_task("ninapro"), **options)
    message = str(err.value)
    assert message and "\n" not in message


def test_arch_costs_rejects_unknown_network():
    with pytest.raises(UsageError):
        arch_costs(RESNET, get_task("ninapro"), network="darts")
