"""Architecture spaces as plain data (strings, codes, index orders), without PyTorch.

The networks that realise them live in :mod:`nb360.models`; tabular benchmarks and
search algorithms only need what is here, so they load in milliseconds.
"""

from __future__ import annotations

from nb360.registry import Registry
from nb360.spaces.base import ProductSpace

__all__ = ["SPACES", "get_space", "space_names", "ProductSpace"]

SPACES: Registry[ProductSpace] = Registry("search space")


def get_space(name: str) -> ProductSpace:
    """A space by name or alias (``nb201``/``tss``/``topology``, ``nats_sss``/``sss``/``size``, ``nb101``)."""
    return SPACES.get(name)


def space_names() -> list[str]:
    return SPACES.names()


def _register_builtins() -> None:
    from nb360.spaces.nb201 import SIZE, TOPOLOGY

    SPACES.register(TOPOLOGY.name, TOPOLOGY, ("tss", "topology", "nats_tss", "nats-tss", "nasbench201"))
    SPACES.register(SIZE.name, SIZE, ("sss", "size", "nats-sss", "nb201_size"))
    from nb360.nb101.space import NB101

    SPACES.register(NB101.name, NB101, ("nasbench101", "nas-bench-101"))


_register_builtins()
