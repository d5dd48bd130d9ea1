"""Your own task from arrays: a YAML file describes it, ``.npz``/``.npy`` files hold the data.

``python train.py --task my_task.yaml --method wrn`` reads a file such as::

    name: sines                  # a new task name
    title: Noisy sines
    dims: 1                      # 1-D (channels, length) or 2-D (channels, height, width) inputs
    kind: point                  # point: one output vector per input; dense: one per position
    input_shape: [1, 128]
    num_outputs: 3
    loss: cross_entropy          # cross_entropy | bce_with_logits | mse | relative_l2_sum | ...
    metric: error                # any nb360 metric, or package.module:MetricClass
    reference: {lr: 0.01, batch_size: 32, epochs: 10}
    data:
      train: sines_train.npz     # arrays "x" and "y" (+ any extra arrays: passed to loss and metric)
      val: sines_val.npz
      test: sines_test.npz

Paths are relative to the YAML file's folder unless ``--data.root`` says otherwise. A
part may also be ``{x: x.npy, y: y.npy, ...}``. Arrays are loaded without pickle.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from nb360.datamodules.base import TaskDataModule, TensorDictDataset
from nb360.datamodules.sources import RemoteFile
from nb360.errors import DataError, UsageError
from nb360.tasks import Reference, TaskSpec, get_task, register_task

__all__ = ["ArrayDataModule", "load_task_file"]

_SPEC_KEYS = {"name", "title", "dims", "kind", "input_shape", "num_outputs", "loss", "metric", "metric_kwargs", "reference", "aliases", "data"}
_PARTS = ("train", "val", "test")


def _part_files(part: str | Mapping[str, str]) -> dict[str, str]:
    return {"npz": part} if isinstance(part, str) else dict(part)


class ArrayDataModule(TaskDataModule):
    """Train/val/test arrays of a task described by a YAML file (see the module docstring).

    Args:
        merge_val: in the final split, train on train + val (the NB360 default) rather than train only.
        **kwargs: the common options of :class:`~nb360.datamodules.base.TaskDataModule`
            (``root`` defaults to the YAML file's folder; files are only read locally).
    """

    task = ""
    parts: dict[str, dict[str, str]] = {}
    spec_dir = Path(".")

    def __init__(self, merge_val: bool = True, **kwargs: Any) -> None:
        if kwargs.get("root") is None:
            kwargs["root"] = str(self.spec_dir)
        kwargs["source"] = "local"
        super().__init__(**kwargs)
        self.merge_val = merge_val

    def required_files(self) -> tuple[RemoteFile, ...]:
        names = [name for files in self.parts.values() for name in files.values()]
        return tuple(RemoteFile(name) for name in names)

    def prepare_data(self) -> None:
        """The user's own files: check they exist (no checksums: users regenerate their arrays)."""
        missing = [f.name for f in self.required_files() if not (self.root / f.name).is_file()]
        if missing:
            raise DataError(f"task {self.task}: missing {', '.join(missing)} in {self.root.resolve()} (set --data.root to their folder)")

    def _load_part(self, part: str) -> dict[str, torch.Tensor]:
        arrays: dict[str, np.ndarray] = {}
        for key, name in self.parts[part].items():
            path = self.root / name
            try:
                loaded = np.load(path, allow_pickle=False)
            except Exception as err:
                raise DataError(f"cannot read {path} as .npy/.npz without pickle: {type(err).__name__}: {err}") from None
            if key == "npz":
                arrays.update({k: loaded[k] for k in loaded.files})
            else:
                arrays[key] = loaded
        missing = {"x", "y"} - set(arrays)
        if missing:
            raise DataError(f"task {self.task}, part {part}: arrays {sorted(missing)} not found in {list(self.parts[part].values())}")
        spec = self.spec
        x = arrays.pop("x")
        if tuple(x.shape[1:2]) != spec.input_shape[:1] or x.ndim != spec.dims + 2:
            raise DataError(f"task {self.task}, part {part}: x has shape {x.shape}, expected (N, {spec.input_shape[0]}, ...) with {spec.dims} spatial axes")
        y = arrays.pop("y")
        target = torch.from_numpy(np.ascontiguousarray(y))
        target = target.long() if spec.loss == "cross_entropy" else target.float()
        if spec.loss == "cross_entropy" and len(target) and (target.min() < 0 or target.max() >= spec.num_outputs):
            raise DataError(f"task {self.task}, part {part}: class labels must lie in 0..{spec.num_outputs - 1}")
        extras = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        return {"x": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), "y": target, **extras}

    def load(self) -> dict[str, TensorDictDataset]:
        train, val = self._load_part("train"), self._load_part("val")
        if self.split == "search":
            return {"train": TensorDictDataset(**train), "val": TensorDictDataset(**val)}
        if self.merge_val:
            train = {k: torch.cat([train[k], val[k]]) for k in train}
        return {"train": TensorDictDataset(**train), "test": TensorDictDataset(**self._load_part("test"))}

    @classmethod
    def write_fixture(cls, root: Path, n: int, seed: int = 0) -> list[Path]:
        """Random arrays of the task's shapes, one ``.npz`` per part, named as in the task file."""
        spec, rng = get_task(cls.task), np.random.default_rng(seed)
        paths = []
        for part, files in cls.parts.items():
            path = Path(root) / files.get("npz", f"{part}.npz")
            x = rng.standard_normal((n, *spec.input_shape)).astype(np.float32)
            y = rng.integers(0, spec.num_outputs, n) if spec.loss == "cross_entropy" else rng.random((n, spec.num_outputs)).astype(np.float32)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, x=x, y=y)
            paths.append(path)
        return paths


def load_task_file(path: str | Path) -> TaskSpec:
    """Register the task described by a YAML file (with an :class:`ArrayDataModule`) and return its spec."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise UsageError(f"cannot read task file {path}: {err}".splitlines()[0]) from None
    if not isinstance(raw, dict):
        raise UsageError(f"task file {path} must hold a mapping of task fields")
    unknown = set(raw) - _SPEC_KEYS
    if unknown:
        raise UsageError(f"task file {path}: unknown field(s) {', '.join(sorted(unknown))}; valid fields: {', '.join(sorted(_SPEC_KEYS))}")
    data = raw.pop("data", None)
    if not isinstance(data, dict) or set(data) != set(_PARTS):
        raise UsageError(f"task file {path}: 'data' must name the train, val and test files")
    try:
        reference = Reference(**raw.pop("reference"))
        spec_fields = dict(raw, input_shape=tuple(raw["input_shape"]), aliases=tuple(raw.get("aliases", ())))
        datamodule = type(
            f"{raw['name'].title().replace('_', '')}DataModule",
            (ArrayDataModule,),
            {"task": raw["name"], "parts": {p: _part_files(data[p]) for p in _PARTS}, "spec_dir": path.resolve().parent},
        )
        spec = TaskSpec(**spec_fields, reference=reference, datamodule=datamodule)
    except (KeyError, TypeError, ValueError) as err:
        raise UsageError(f"task file {path}: {type(err).__name__}: {err}") from None
    from nb360.losses import LOSSES
    from nb360.metrics import metric_class

    if spec.loss not in LOSSES:
        raise UsageError(f"task file {path}: unknown loss {spec.loss!r}; choose one of: {', '.join(LOSSES)}")
    metric_class(spec.metric)
    return register_task(spec)
