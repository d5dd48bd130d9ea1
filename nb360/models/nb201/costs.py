"""Parameter and FLOP counts with NATS-Bench's definitions (xautodl ``utils/flop_benchmark.py``).

* params (M) = number of parameters / 1e6 (xautodl's deprecated "MB" unit; BN running
  statistics are buffers and do not count).
* FLOPs (M) = multiply-accumulates of Conv1d/Conv2d and Linear layers in one forward
  pass, per sample, / 1e6. A convolution counts ``output positions x kernel elements x
  C_in x C_out / groups`` (+ ``C_out x positions`` with a bias); a Linear counts
  ``in x out`` (+ ``out`` with a bias). Pooling, BN, ReLU, additions and ``none`` edges
  count 0.

xautodl counts a Linear once per sample even when it is applied at every position (its
hook reads the batch size only; NB360's Darcy copy just changes which axis it checks), so
the dense head of a Darcy network adds ``in x out + out`` FLOPs, not that times 85 x 85.
That is the default here, to match stored benchmark values; ``linear_per_position=True``
counts the head at every position instead.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from nb360.errors import UsageError
from nb360.models.nb201.network import size_network, topology_network
from nb360.tasks import TaskSpec

__all__ = ["arch_costs", "count_flops", "count_params", "model_costs"]


def count_params(model: nn.Module) -> int:
    """All parameters, trainable or not (xautodl's ``count_parameters``)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: Sequence[int], linear_per_position: bool = False) -> float:
    """FLOPs of one forward pass of a single sample of shape ``(C, *spatial)``, as an absolute number.

    The model runs once in eval mode under ``no_grad`` (its training mode is restored).
    """
    total = 0.0

    def conv_hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        assert isinstance(module, (nn.Conv1d, nn.Conv2d))
        positions = output.shape[0] * math.prod(output.shape[2:])
        per_position = math.prod(module.kernel_size) * module.in_channels * module.out_channels / module.groups
        total += per_position * positions + (module.out_channels * positions if module.bias is not None else 0)

    def linear_hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Linear)
        rows = inputs[0].numel() // module.in_features if linear_per_position else inputs[0].shape[0]
        total += rows * (module.in_features * module.out_features + (module.out_features if module.bias is not None else 0))

    handles = []
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            handles.append(module.register_forward_hook(conv_hook))
        elif isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
    training = model.training
    try:
        param = next(model.parameters(), None)
        x = torch.rand(1, *input_shape, device=None if param is None else param.device)
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    return total


def model_costs(model: nn.Module, input_shape: Sequence[int], linear_per_position: bool = False) -> tuple[float, float]:
    """``(params_M, flops_M)`` of a network for one input of shape ``(C, *spatial)`` (NATS "params" and "flop")."""
    return count_params(model) / 1e6, count_flops(model, input_shape, linear_per_position) / 1e6


def arch_costs(
    arch: str, spec: TaskSpec, network: str | None = None, linear_per_position: bool = False, **options: int
) -> tuple[float, float]:
    """``(params_M, flops_M)`` of an architecture string on a task.

    ``network`` is ``"nb201"`` (cell strings; options ``channels``, ``cells``) or
    ``"nats_sss"`` (width strings ``c0:c1:c2:c3:c4``); by default it is inferred from the
    string (widths strings contain ``:``, cell strings ``|``).
    """
    if network is None:
        network = "nats_sss" if isinstance(arch, str) and ":" in arch and "|" not in arch else "nb201"
    dim, kind, c_in, n_out = spec.dims, spec.kind, spec.in_channels, spec.num_outputs
    model: nn.Module
    if network == "nb201":
        model = topology_network(arch, dim=dim, kind=kind, in_channels=c_in, num_outputs=n_out, **options)
    elif network == "nats_sss":
        if options:
            raise UsageError(f"network 'nats_sss' takes no options besides arch, got {', '.join(sorted(options))}")
        model = size_network(arch, dim=dim, kind=kind, in_channels=c_in, num_outputs=n_out)
    else:
        raise UsageError(f"arch_costs: network must be 'nb201' or 'nats_sss', got {network!r}")
    return model_costs(model, spec.input_shape, linear_per_position)
