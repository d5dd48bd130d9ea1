"""Published facts about NAS-Bench-101 cells, shared by the NB101 tests."""

from __future__ import annotations

from nb360.nb101.spec import OPS

C3, C1, MP = OPS

# The Inception-like cell of the reference README; its hash appears in google-research's NB101 test code,
# and the reference Colab prints its stored (first-enumerated) form and parameter count.
INCEPTION = (
    [
        [0, 1, 1, 1, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 0],
    ],
    ["input", C1, C3, C3, C3, MP, "output"],
)
INCEPTION_HASH = "28cfc7874f6d200472e1a9dcd8650aa0"
INCEPTION_STORED = (
    [
        [0, 1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0, 0, 0],
    ],
    ["input", C3, C1, MP, C3, C3, "output"],
)
