"""The NB201 topology space and the NATS size space: strings, index order, uniqueness, sampling."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys

import numpy as np
import pytest

from nb360.errors import UsageError
from nb360.spaces import get_space
from nb360.spaces.nb201 import OPS, SIZE, SSS_CELL, TOPOLOGY, WIDTHS, cell_edges, has_path

RESNET = "|nor_conv_3x3~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|skip_connect~2|"


def nb201_string(ops: tuple[str, ...]) -> str:
    return "|{}~0|+|{}~0|{}~1|+|{}~0|{}~1|{}~2|".format(*ops)


def test_shipped_order_is_nb201_generator_order() -> None:
    """NB201's gen_all is the product over edges (first edge outermost), then random.seed(88); shuffle."""
    expected = [nb201_string(ops) for ops in itertools.product(OPS, repeat=6)]
    random.seed(88)
    random.shuffle(expected)
    assert list(TOPOLOGY.archs) == expected
    assert len(TOPOLOGY) == 15_625


@pytest.mark.parametrize(
    ("index", "arch"),
    [
        (0, "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"),
        (9, "|avg_pool_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_3x3~2|"),
        (123, "|avg_pool_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|"),
    ],
)
def test_published_indices(index: int, arch: str) -> None:
    assert TOPOLOGY.arch(index) == arch
    assert TOPOLOGY.index(arch) == index


def test_string_round_trip_and_codes() -> None:
    codes = TOPOLOGY.to_codes(RESNET)
    assert codes == (3, 0, 3, 1, 0, 1)
    assert TOPOLOGY.format(codes) == RESNET
    assert cell_edges(RESNET)[3] == (0, 3, "skip_connect")
    index = TOPOLOGY.index(RESNET)
    assert TOPOLOGY.index(codes) == TOPOLOGY.index(index) == index
    assert tuple(TOPOLOGY.codes_array[index]) == codes

    class XautodlLike:  # NATS-Bench accepts anything with tostr()
        def tostr(self) -> str:
            return RESNET

    assert TOPOLOGY.index(XautodlLike()) == index


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "|nor_conv_3x3~0|",
        "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|",
        "|none~0|+|none~0|+|none~0|none~1|none~2|",
        "none~0+|none~0|none~1|+|none~0|none~1|none~2|",
    ],
)
def test_malformed_strings_are_one_line_errors(bad: str) -> None:
    with pytest.raises(UsageError) as err:
        TOPOLOGY.index(bad)
    assert "\n" not in str(err.value)


def test_unique_architecture_counts() -> None:
    """NB201's to_unique_str: 6,466 classes with zero-awareness, 12,751 without (NATS: "6.5k")."""
    assert len({TOPOLOGY.canonical(a) for a in TOPOLOGY.archs}) == 6_466
    assert len({TOPOLOGY.canonical(a, consider_zero=False) for a in TOPOLOGY.archs}) == 12_751


def test_canonical_keys_by_hand() -> None:
    # node1 = "(0)@c3"; node2 = sorted("#", "(node1)@c3"); node3 = sorted("0", "#", node2) joined by "+"
    assert TOPOLOGY.canonical(RESNET) == "#+#+((0)@nor_conv_3x3)@nor_conv_3x3+0"
    # out = skip(x) only: nodes 1 and 2 are dead, so all 125 choices for them are one class
    dead = {
        TOPOLOGY.canonical(nb201_string((a, b, c, "skip_connect", "none", "none")))
        for a, b, c in itertools.product(OPS, repeat=3)
    }
    assert dead == {"#+#+0"}
    # node 1 is a copy of the input, so which of the two edges into node 2 reads node 0 and which node 1 does not matter
    one = nb201_string(("skip_connect", "nor_conv_1x1", "avg_pool_3x3", "none", "none", "skip_connect"))
    two = nb201_string(("skip_connect", "avg_pool_3x3", "nor_conv_1x1", "none", "none", "skip_connect"))
    assert TOPOLOGY.canonical(one) == TOPOLOGY.canonical(two)  # node1 = x, so both edges into node 2 read x


def test_has_path() -> None:
    assert has_path(RESNET)
    assert not has_path(nb201_string(("nor_conv_3x3",) * 3 + ("none",) * 3))
    assert has_path(nb201_string(("skip_connect", "none", "none", "none", "avg_pool_3x3", "none")))
    assert not has_path(nb201_string(("none", "none", "skip_connect", "none", "avg_pool_3x3", "skip_connect")))


def test_sampling_and_mutation() -> None:
    rng = np.random.default_rng(0)
    for space, neighbours in ((TOPOLOGY, 6 * 4), (SIZE, 5 * 7)):
        arch = space.sample(rng)
        child = space.mutate(arch, rng)
        diff = np.array(space.to_codes(arch)) != np.array(space.to_codes(child))
        assert diff.sum() == 1
        near = space.neighbours(arch)
        assert len(near) == len(set(near)) == neighbours
        assert all((np.array(space.to_codes(n)) != np.array(space.to_codes(arch))).sum() == 1 for n in near)
    counts = np.bincount([TOPOLOGY.to_codes(TOPOLOGY.sample(rng))[0] for _ in range(5000)], minlength=5)
    assert counts.min() > 850  # uniform over the 5 operations (expected 1000 each)


def test_one_hot() -> None:
    hot = TOPOLOGY.one_hot(RESNET)
    assert hot.shape == (6, 5) and hot.sum() == 6 and hot[0, OPS.index("nor_conv_3x3")] == 1


def test_size_space() -> None:
    assert len(SIZE) == 8**5 == 32_768
    assert SIZE.arch(0) == "8:8:8:8:8" and SIZE.arch(32_767) == "64:64:64:64:64"
    widths = (16, 64, 8, 24, 56)
    mixed_radix = sum(WIDTHS.index(w) * 8 ** (4 - k) for k, w in enumerate(widths))
    assert SIZE.index(":".join(map(str, widths))) == mixed_radix
    assert SIZE.widths("16:64:8:24:56") == widths
    with pytest.raises(UsageError):
        SIZE.index("16:64:8:24")
    with pytest.raises(UsageError):
        SIZE.index("16:64:8:24:12")
    assert TOPOLOGY.index(SSS_CELL) >= 0


def test_registry_aliases_and_no_torch() -> None:
    assert get_space("tss") is get_space("topology") is TOPOLOGY
    assert get_space("sss") is SIZE
    with pytest.raises(UsageError, match="unknown search space"):
        get_space("nb999")
    code = "import sys, nb360.spaces as s; s.get_space('nb201').codes_array; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
