"""NAS-Bench-201 (topology space) and NATS-Bench size-space networks for any task, with their NATS cost counts."""

from nb360.models.nb201.cells import InferCell
from nb360.models.nb201.costs import arch_costs, count_flops, count_params, model_costs
from nb360.models.nb201.network import TinyNetwork, size_network, topology_network, topology_widths
from nb360.models.nb201.ops import ResNetBasicblock, make_op

__all__ = [
    "InferCell",
    "ResNetBasicblock",
    "TinyNetwork",
    "arch_costs",
    "count_flops",
    "count_params",
    "make_op",
    "model_costs",
    "size_network",
    "topology_network",
    "topology_widths",
]
