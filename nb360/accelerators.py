"""Accelerator settings of ``train.py``: precision, cuDNN benchmark, channels-last, ``torch.compile``, global batch size.

Each setting is a small pure function (what to choose on this machine) and, where it acts on
the model or the batches, a Lightning callback that ``nb360.cli`` adds to every Trainer of a
run. Every setting falls back silently (or with one note on stderr) where it cannot apply:

* precision: ``bf16-mixed`` on GPUs with native bf16 (compute capability 8.0+, Ampere and
  later), ``16-mixed`` on older GPUs (the reference V100 setting), ``32-true`` on CPU
  (:func:`precision_default`); ``--trainer.precision`` overrides it.
* cuDNN benchmark: Lightning's own ``--trainer.benchmark`` (it sets
  ``torch.backends.cudnn.benchmark``); nb360 turns it on by default on CUDA unless
  ``--trainer.deterministic`` is set (:func:`benchmark_default`).
* channels-last (``--channels_last``, on by default): the model and the 4-D input batches of
  2-D convnets in ``torch.channels_last`` memory format, on CUDA only (:class:`ChannelsLast`).
* ``torch.compile`` (``--compile``, off by default; ``--compile_mode``): the network compiled
  in place (its state dict, hence checkpoints, are unchanged); eager when compilation is
  unavailable or fails (:class:`Compile`).
* global batch size (``--global_batch_size``): the per-device batch size from the global one,
  the number of devices and nodes and ``--trainer.accumulate_grad_batches``
  (:func:`per_device_batch_size`).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn

__all__ = [
    "COMPILE_MODES",
    "precision_default",
    "benchmark_default",
    "has_conv2d",
    "channels_last_batch",
    "count_devices",
    "per_device_batch_size",
    "auto_num_workers",
    "ChannelsLast",
    "Compile",
]

COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _note(message: str) -> None:
    print(f"nb360: {message}", file=sys.stderr)


# ----------------------------------------------------------------------------- precision and cuDNN
def precision_default(cuda: bool | None = None, capability: tuple[int, int] | None = None) -> str:
    """``bf16-mixed`` on Ampere or newer GPUs, ``16-mixed`` on older ones (the reference's V100s), ``32-true`` on CPU.

    ``cuda`` and ``capability`` default to this machine's (the first visible GPU's compute capability).
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        return "32-true"
    capability = torch.cuda.get_device_capability() if capability is None else capability
    return "bf16-mixed" if tuple(capability) >= (8, 0) else "16-mixed"


def benchmark_default(cuda: bool | None = None, deterministic: Any = None) -> bool | None:
    """cuDNN benchmark mode on CUDA (``True``) unless deterministic algorithms are asked for; ``None`` (leave it) on CPU."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if not cuda:
        return None
    return not deterministic


# ----------------------------------------------------------------------------- channels-last
def has_conv2d(module: nn.Module) -> bool:
    """Whether the module holds a 2-D convolution (a 4-D convolution weight): the networks channels-last speeds up."""
    return any(isinstance(m, nn.modules.conv._ConvNd) and m.weight is not None and m.weight.dim() == 4 for m in module.modules())


def channels_last_batch(batch: Any) -> Any:
    """A batch with its 4-D floating-point tensors in channels-last memory format (dicts, lists and tuples are walked)."""
    if isinstance(batch, Tensor):
        return batch.contiguous(memory_format=torch.channels_last) if batch.dim() == 4 and batch.is_floating_point() else batch
    if isinstance(batch, dict):
        return {k: channels_last_batch(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(channels_last_batch(v) for v in batch)
    return batch


class ChannelsLast(Callback):
    """On CUDA, puts a 2-D convnet and its 4-D input batches (the ``x`` of dict batches) in channels-last format.

    The model is converted when a Trainer sets up (``setup``), the batches when they reach
    the device (``on_*_batch_start``, after Lightning's transfer). Elsewhere it does nothing.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.active = False

    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        self.active = self.enabled and trainer.strategy.root_device.type == "cuda" and has_conv2d(pl_module)
        if self.active:
            pl_module.to(memory_format=torch.channels_last)

    def _convert(self, batch: Any) -> None:
        if self.active and isinstance(batch, dict) and isinstance(batch.get("x"), Tensor):
            batch["x"] = channels_last_batch(batch["x"])

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._convert(batch)

    def on_validation_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._convert(batch)

    def on_test_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._convert(batch)


class Compile(Callback):
    """Compiles the module's network (``pl_module.net``, else the module) in place with ``torch.compile``.

    In place (``nn.Module.compile``), so parameter names, state dicts and checkpoints do not
    change. Where compilation is unavailable, or fails on the first batches, the network
    runs eagerly after one note on stderr (``torch._dynamo``'s ``suppress_errors``).
    """

    def __init__(self, mode: str = "default") -> None:
        self.mode = mode

    def setup(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        compile_module(getattr(pl_module, "net", pl_module), self.mode)


# ----------------------------------------------------------------------------- torch.compile
def compile_module(module: nn.Module, mode: str = "default") -> bool:
    """Compile ``module`` in place (idempotent); ``False``, after one note, where torch.compile is unavailable."""
    if getattr(module, "_nb360_compiled", False):
        return True
    if not hasattr(module, "compile") or not hasattr(torch, "compile"):
        _note(f"torch {torch.__version__} cannot compile modules in place: training eagerly")
        return False
    try:
        dynamo = importlib.import_module("torch._dynamo")
        dynamo.config.suppress_errors = True  # a failing graph runs eagerly instead of stopping the run
        module.compile(mode=None if mode == "default" else mode)
    except Exception as err:  # noqa: BLE001 - any failure means: train eagerly
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        _note(f"torch.compile unavailable ({reason}): training eagerly")
        return False
    module._nb360_compiled = True
    return True


# ----------------------------------------------------------------------------- batch sizes and workers
def count_devices(devices: Any, accelerator: Any = "auto", cuda_count: int | None = None) -> int:
    """How many devices ``--trainer.devices`` names on one node (``auto``/``-1``: every GPU, or 1 process on CPU)."""
    on_cpu = str(accelerator) == "cpu"
    cuda_count = (torch.cuda.device_count() if not on_cpu else 0) if cuda_count is None else cuda_count
    if isinstance(devices, str):
        text = devices.strip()
        if text in ("auto", "-1"):
            return 1 if on_cpu or cuda_count == 0 else cuda_count
        if "," in text:
            return len([d for d in text.split(",") if d.strip()])
        devices = int(text)
    if isinstance(devices, Sequence):
        return len(devices)
    if devices == -1:
        return 1 if on_cpu or cuda_count == 0 else cuda_count
    return int(devices)


def per_device_batch_size(global_batch_size: int, devices: int, num_nodes: int = 1, accumulate_grad_batches: int = 1) -> int:
    """``global / (devices x nodes x accumulation)``; a ``ValueError`` naming the numbers if it does not divide."""
    if global_batch_size < 1:
        raise ValueError(f"--global_batch_size must be positive, got {global_batch_size}")
    parts = devices * num_nodes * accumulate_grad_batches
    if global_batch_size % parts:
        raise ValueError(
            f"--global_batch_size {global_batch_size} is not divisible by {devices} devices x {num_nodes} nodes x "
            f"{accumulate_grad_batches} accumulated batches = {parts}"
        )
    return global_batch_size // parts


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_num_workers(cuda: bool, processes_per_node: int = 1, cpus: int | None = None) -> int:
    """Workers for ``--data.num_workers auto``: none on CPU-only runs, else ``min(4, (cpus - 1) / processes)``, at least 1."""
    if not cuda:
        return 0
    cpus = _cpu_count() if cpus is None else cpus
    return max(1, min(4, (cpus - 1) // max(1, processes_per_node)))
