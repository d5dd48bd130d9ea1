"""Shared machinery of the task DataModules: splits, loaders, batches as dicts, data-root resolution.

Every task DataModule yields batches as dicts: ``x`` (network input), ``y`` (target)
and any extra keys its metric or loss needs (recording ids, clip ids, masks). Two
protocols are selected by ``split``:

* ``"search"``: fit on the training part, validate (and finally score) on the
  validation part; nothing touches the test set;
* ``"final"``: fit on train + validation (unless the task's protocol says otherwise)
  and score on the test set; there is no validation set, so model selection cannot
  peek at the test set, and the reported model is the one at the end of training.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning.pytorch as pl
import torch
import torch.distributed as dist
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from nb360.accelerators import auto_num_workers
from nb360.datamodules.archives import extract
from nb360.datamodules.sources import NB360_DRIVE_FOLDER, RemoteFile, SourceName, Sources, checksum_path, fetch_files, verify_file
from nb360.errors import DataError
from nb360.tasks import TaskSpec, get_task

__all__ = [
    "TensorDictDataset",
    "EpochShuffle",
    "DistributedEpochShuffle",
    "TaskDataModule",
    "default_root",
    "run_seed",
    "loader_generator",
]

Split = Literal["search", "final"]


def default_root(task: str) -> Path:
    """``$NB360_DATA/<task>`` if the variable is set, else ``./data/<task>``."""
    return Path(os.environ.get("NB360_DATA", "data")) / task


def run_seed() -> int:
    """The run's seed (``--seed``): Lightning's ``seed_everything`` records it in ``PL_GLOBAL_SEED``."""
    return int(os.environ.get("PL_GLOBAL_SEED", torch.initial_seed() % 2**31))


def _passthrough(batch: Any) -> Any:
    return batch


class TensorDictDataset(Dataset):
    """Equal-length tensors indexed together; batches are gathered with one indexing op per tensor.

    ``transform`` maps a gathered batch (a dict of tensors) to what the network sees: a
    cast of a compact stored dtype, a normalisation, a batched augmentation. It runs in
    the DataLoader's workers, once per batch, with vectorised torch ops.
    """

    def __init__(self, transform: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None, **tensors: Tensor) -> None:
        lengths = {len(t) for t in tensors.values()}
        if len(lengths) != 1:
            raise ValueError(f"tensors must have equal length, got { {k: len(t) for k, t in tensors.items()} }")
        self.tensors = tensors
        self.transform = transform

    def __len__(self) -> int:
        return len(next(iter(self.tensors.values())))

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {k: v[0] for k, v in self.__getitems__([index]).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        batch = {k: t[index] for k, t in self.tensors.items()}
        return batch if self.transform is None else self.transform(batch)


def loader_generator() -> torch.Generator:
    """A training loader's own generator: creating its iterator (which draws worker seeds) then leaves the
    global generator alone, so that each epoch's augmentation depends only on the epoch's seed."""
    return torch.Generator().manual_seed(run_seed())


class EpochShuffle(Sampler[int]):
    """A random order that depends only on ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every epoch, so a run resumed from a
    checkpoint sees exactly the batches the uninterrupted run would have seen.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):  # type: ignore[no-untyped-def]
        generator = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) % 2**63)
        return iter(torch.randperm(self.size, generator=generator).tolist())


class DistributedEpochShuffle(DistributedSampler):
    """Under DDP: the one-process :class:`EpochShuffle` order, dealt out to the processes in turn.

    Process ``r`` of ``N`` takes positions ``r, r + N, r + 2N, ...`` of the order (padded, as
    ``DistributedSampler`` pads, by repeating its start up to a multiple of ``N``). With a per-process
    batch of ``B / N``, global batch ``b`` (all processes' ``b``-th batches) then holds exactly the
    samples of batch ``b`` of a one-process run with batch ``B``: the same global batches, whatever
    the number of processes, so that DDP reproduces a one-process run up to float rounding.
    """

    def __init__(self, dataset: Dataset, seed: int, num_replicas: int | None = None, rank: int | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.order = EpochShuffle(len(dataset), seed)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.order.set_epoch(epoch)

    def __iter__(self):  # type: ignore[no-untyped-def]
        indices = list(self.order)
        padding = self.total_size - len(indices)
        if padding > 0:
            indices += (indices * (padding // len(indices) + 1))[:padding]
        return iter(indices[self.rank : self.total_size : self.num_replicas])


class TaskDataModule(pl.LightningDataModule):
    """Base of the task DataModules. Subclasses set ``task``/``files`` and implement :meth:`load`.

    Args:
        root: directory of the task's files (default ``$NB360_DATA/<task>`` or ``data/<task>``).
        split: ``"search"`` (train -> validation) or ``"final"`` (train + validation -> test).
        batch_size: training batch size (default: the task's reference).
        eval_batch_size: evaluation batch size (default: the task's reference, else ``batch_size``).
        num_workers: DataLoader worker processes per process, or ``auto``: none when the run trains on CPU
            (the batches are gathered from in-memory tensors, and worker processes only add overhead), else
            ``min(4, (cpus - 1) / processes on the node)``. Memory is pinned when the run trains on CUDA.
        source: where missing files come from: ``auto`` (S3, then https, then Google Drive), ``local``,
            ``s3``, ``https`` or ``gdrive``.
        s3_bucket, s3_endpoint, https_base, gdrive_folder: the S3 bucket, an alternative S3 endpoint,
            an https mirror, a Google Drive folder id.
    """

    task: ClassVar[str]
    files: ClassVar[tuple[RemoteFile, ...]] = ()

    def __init__(
        self,
        root: str | None = None,
        split: Split = "final",
        batch_size: int | None = None,
        eval_batch_size: int | None = None,
        num_workers: int | Literal["auto"] = "auto",
        source: SourceName = "auto",
        s3_bucket: str = "pde-xd",
        s3_endpoint: str | None = None,
        https_base: str = "https://pde-xd.s3.amazonaws.com",
        gdrive_folder: str = NB360_DRIVE_FOLDER,
    ) -> None:
        super().__init__()
        if split not in ("search", "final"):
            raise DataError(f"split must be 'search' or 'final', got {split!r}")
        spec = self.spec
        self.root = Path(root) if root is not None else default_root(spec.name)
        self.split = split
        self.batch_size = batch_size or spec.reference.batch_size
        self.eval_batch_size = eval_batch_size or spec.reference.eval_batch_size or self.batch_size
        self.num_workers = num_workers
        self.drop_last = False  # tasks whose reference drops the last short training batch set it
        self.sources = Sources(source, s3_bucket, s3_endpoint, https_base, gdrive_folder)
        self.datasets: dict[str, Dataset] = {}

    @property
    def spec(self) -> TaskSpec:
        return get_task(self.task)

    @property
    def num_workers(self) -> int:
        """The DataLoader workers of this run: the ``num_workers`` option, ``auto`` resolved for the attached Trainer's device."""
        if self._num_workers != "auto":
            return int(self._num_workers)
        return auto_num_workers(self._on_cuda(), getattr(self._trainer_or_none(), "num_devices", 1))

    @num_workers.setter
    def num_workers(self, value: int | str) -> None:
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise DataError(f"num_workers must be 'auto' or a non-negative integer, got {value!r}")
        self._num_workers = value

    def _trainer_or_none(self) -> Any:
        return getattr(self, "trainer", None)

    def _on_cuda(self) -> bool:
        """Whether the attached Trainer trains on CUDA (without a Trainer: whether CUDA is available)."""
        trainer = self._trainer_or_none()
        if trainer is None:
            return torch.cuda.is_available()
        return trainer.strategy.root_device.type == "cuda"

    # ----------------------------------------------------------------- data files
    def required_files(self) -> tuple[RemoteFile, ...]:
        """The files this configuration reads (all of ``files`` unless a subclass narrows it)."""
        return self.files

    def missing_hint(self) -> str:
        """Extra advice appended to the missing-files error (e.g. how to generate the data instead)."""
        return ""

    def prepare_data(self) -> None:
        """Fetch and verify the task's files (rank 0 only); unpack the archives among them."""
        files = self.required_files()
        for file, path in zip(files, fetch_files(files, self.root, self.sources, self.spec.name, self.missing_hint())):
            if file.unpack:
                extract(path, self.root)

    def verify(self) -> list[str]:
        """Check every file's checksum and format; one line per file."""
        lines = []
        for file in self.required_files():
            path = self.root / file.name
            if not path.exists():
                raise DataError(f"{path} is missing; fetch it with `python -m nb360.data download --task {self.spec.name} --root {self.root}`")
            if checksum_path(path).exists():  # a recorded checksum first: "changed since" says more than "unreadable"
                digest = verify_file(path, file.sha256)
                summary = self.describe_file(path)
            else:  # first use: check the format before trusting the file's checksum
                summary = self.describe_file(path)
                digest = verify_file(path, file.sha256)
            lines.append(f"ok  {path}  sha256 {digest[:16]}  {summary}")
        return lines

    def describe_file(self, path: Path) -> str:
        """Check a file's format and summarise its content in a few words (subclasses parse their formats)."""
        return f"{path.stat().st_size} bytes"

    @classmethod
    def write_fixture(cls, root: Path, n: int, seed: int = 0) -> list[Path]:
        """Write a tiny dataset of ``n`` samples per part in the exact on-disk format; return its files."""
        raise NotImplementedError(f"{cls.__name__} does not define write_fixture")

    @classmethod
    def fixture_args(cls, n: int) -> dict[str, Any]:
        """The ``--data.*`` options needed to read a fixture of ``n`` samples (none when sizes come from the files)."""
        return {}

    # ----------------------------------------------------------------- datasets
    def load(self) -> Mapping[str, Dataset]:
        """Build the datasets of ``self.split``: keys ``train`` and ``val`` (search) or ``train`` and ``test`` (final)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.datasets = dict(self.load())

    def output_decoder(self) -> nn.Module:
        """Maps network outputs to the units of the targets (identity unless the task normalises targets)."""
        return nn.Identity()

    def eval_forward(self, forward: Callable[[Tensor], Tensor], batch: dict[str, Tensor]) -> Tensor:
        """The prediction that validation and test score: by default ``forward`` on the whole input.

        Tasks whose reference evaluates differently (PSICOV's tiled 512 x 512 prediction)
        override this; ``forward`` is the model's network followed by its output decoder.
        """
        return forward(batch["x"])

    @property
    def has_validation(self) -> bool:
        return self.split == "search"

    @property
    def eval_split(self) -> str:
        """The part that the ``test`` stage scores: the test set (final) or the validation set (search)."""
        return "test" if self.split == "final" else "val"

    @staticmethod
    def _sampler(dataset: Dataset, train: bool) -> Sampler[int] | None:
        """Training: an order fixed by (seed, epoch), the same global batches under DDP. Evaluation under DDP:
        each sample on exactly one process."""
        seed = run_seed()
        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return EpochShuffle(len(dataset), seed) if train else None
        if train:
            return DistributedEpochShuffle(dataset, seed)
        return UnrepeatedDistributedSampler(dataset, shuffle=False)

    def _loader(self, part: str, train: bool) -> DataLoader:
        dataset = self.datasets[part]
        batched = isinstance(dataset, TensorDictDataset)
        workers = self.num_workers
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=self._sampler(dataset, train),
            generator=loader_generator() if train else None,
            drop_last=train and self.drop_last,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=self._on_cuda(),
            collate_fn=_passthrough if batched else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list[Any]:
        return self._loader("val", train=False) if self.has_validation else []

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_split, train=False)
