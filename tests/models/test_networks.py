"""Baseline networks: the reference parameter counts, output shapes for every task, and layer-level behaviour."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from nb360.models import build_network, count_parameters
from nb360.models.heads import DenseHead, PointHead
from nb360.models.ops import SamePadConv
from nb360.models.resnet1d import ResNetBlock
from nb360.models.wrn import BasicBlock, WideResNet
from nb360.tasks import get_task, task_names

# instantiated from the reference definitions (NB backbone_pt.py, backbone_grid_wrn.py, backbone_1d.py)
REFERENCE_PARAMS = {
    "cifar100": 2_772_020,
    "spherical": 2_772_020,
    "ninapro": 2_750_658,
    "fsd50k": 2_797_432,
    "darcy": 2_746_577,
    "psicov": 2_754_353,
    "cosmic": 2_746_289,
    "ecg": 504_260,
    "satellite": 506_840,
    "deepsea": 510_116,
}


@pytest.mark.parametrize("task", task_names())
def test_parameter_count_and_output_shape(task):
    spec = get_task(task)
    net = build_network("wrn", spec).eval()
    assert count_parameters(net) == REFERENCE_PARAMS[task]
    with torch.no_grad():
        out = net(torch.randn(2, *spec.input_shape))
    expected = (2, spec.num_outputs) if spec.kind == "point" else (2, spec.num_outputs, *spec.input_shape[1:])
    assert tuple(out.shape) == expected


def reference_block(block: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    """The reference BasicBlock forward, written with functional ops on the block's own weights."""

    def bn(layer, t):
        return F.batch_norm(t, layer.running_mean, layer.running_var, layer.weight, layer.bias, False)

    equal = block.shortcut is None
    stride = block.conv1.stride
    if not equal:
        x = F.relu(bn(block.bn1, x))
        out = x
    else:
        out = F.relu(bn(block.bn1, x))
    out = F.relu(bn(block.bn2, F.conv2d(out, block.conv1.weight, stride=stride, padding=1)))
    out = F.conv2d(out, block.conv2.weight, padding=1)
    skip = x if equal else F.conv2d(x, block.shortcut.weight, stride=stride)
    return skip + out


@pytest.mark.parametrize("channels, stride", [((16, 64), 1), ((64, 128), 2), ((128, 128), 1)])
def test_basic_block_matches_the_reference_forward(channels, stride):
    torch.manual_seed(0)
    block = BasicBlock(2, *channels, stride).eval()
    for bn in (block.bn1, block.bn2):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, channels[0], 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(block(x), reference_block(block, x))


def test_wrn_initialisation():
    net = WideResNet(3, 10)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    big = max(convs, key=lambda m: m.weight.numel())
    fan_out = big.out_channels * big.kernel_size[0] * big.kernel_size[1]
    assert big.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.05)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    assert torch.all(net.head.fc.bias == 0)


def test_dense_wrn_keeps_resolution_and_applies_one_linear_per_pixel():
    head = DenseHead(6, 2)
    x = torch.randn(3, 6, 5, 7)
    expected = torch.einsum("bchw,oc->bohw", x, head.fc.weight) + head.fc.bias[None, :, None, None]
    torch.testing.assert_close(head(x), expected)


def test_fixed_window_pool_only_sees_the_top_left_window():
    """Spherical CIFAR-100's quirk: avg_pool2d(8) on a 15 x 15 map keeps the top-left 8 x 8 window."""
    head = PointHead(4, 3, pool=8)
    x = torch.randn(1, 4, 15, 15)
    y = x.clone()
    y[:, :, 8:, :] = 100.0
    y[:, :, :, 8:] = -100.0
    torch.testing.assert_close(head(x), head(y))
    expected = head.fc(x[:, :, :8, :8].mean(dim=(2, 3)))
    torch.testing.assert_close(head(x), expected)


def test_spherical_uses_the_reference_pool_unless_overridden():
    spec = get_task("spherical")
    assert build_network("wrn", spec).head.pool == 8
    assert build_network("wrn", spec, pool="global").head.pool == "global"


def test_fixed_window_pool_refuses_inputs_it_cannot_flatten():
    with pytest.raises(ValueError, match="pool='global'"):
        PointHead(4, 3, pool=8)(torch.randn(1, 4, 24, 26))


def test_same_padding_puts_the_odd_element_on_the_right():
    torch.manual_seed(0)
    conv = SamePadConv(1, 2, 3, 8)
    x = torch.randn(1, 2, 20)
    expected = F.conv1d(F.pad(x, (3, 4)), conv.conv.weight, conv.conv.bias)
    torch.testing.assert_close(conv(x), expected)
    assert conv(x).shape[-1] == 20


def test_resnet1d_block_shortcut_only_when_channels_change():
    same, wider = ResNetBlock(1, 8, 8), ResNetBlock(1, 4, 8)
    assert same.residual is None and wider.residual is not None
    x = torch.randn(2, 8, 30)
    torch.testing.assert_close(same.eval()(x), same.layers(x))
    y = torch.randn(2, 4, 30)
    torch.testing.assert_close(wider.eval()(y), wider.layers(y) + wider.residual(y))


def test_dropout_is_active_in_wrn_and_ignored_by_resnet1d():
    torch.manual_seed(0)
    spec = get_task("cifar100")
    net = build_network("wrn", spec, dropout=0.6).train()
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(net(x), net(x))
    one_d = build_network("wrn", get_task("ecg"), dropout=0.6)
    assert count_parameters(one_d) == REFERENCE_PARAMS["ecg"]
