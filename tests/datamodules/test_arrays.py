"""Users' own tasks: a YAML-described array task, and a task of their own DataModule loaded as a plugin."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import read_results
from nb360.datamodules.arrays import load_task_file
from nb360.errors import UsageError
from nb360.models import build_network


def sines(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of noisy sines of different frequency, shape (n, 1, 64)."""
    y = rng.integers(0, 3, n)
    t = np.linspace(0, 1, 64)
    x = np.sin(2 * np.pi * (2 + 3 * y[:, None]) * t + rng.uniform(0, 6.3, (n, 1))) + 0.3 * rng.standard_normal((n, 64))
    return x[:, None].astype(np.float32), y


@pytest.fixture
def sines_task(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for part, n in (("train", 48), ("val", 16), ("test", 24)):
        x, y = sines(n, rng)
        np.savez(tmp_path / f"sines_{part}.npz", x=x, y=y)
    spec = tmp_path / "sines.yaml"
    spec.write_text(
        textwrap.dedent(
            """\
            name: sines
            title: Noisy sines
            dims: 1
            kind: point
            input_shape: [1, 64]
            num_outputs: 3
            loss: cross_entropy
            metric: error
            reference: {lr: 0.01, batch_size: 16, epochs: 3}
            data: {train: sines_train.npz, val: sines_val.npz, test: sines_test.npz}
            """
        )
    )
    return spec


def test_a_yaml_task_trains_end_to_end(train, tmp_path, sines_task):
    assert train("--task", str(sines_task), "--method", "wrn") == 0
    run_dir = tmp_path / "runs" / "sines" / "wrn" / "seed0"
    results = read_results(run_dir)
    assert results["metric"] == "error" and results["epochs"] == 3 and results["split"] == "test"
    # the reported error is that of the saved network on the test arrays
    spec = load_task_file(sines_task)
    net = build_network("wrn", spec)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
    test = np.load(tmp_path / "sines_test.npz")
    with torch.no_grad():
        predicted = net.eval()(torch.from_numpy(test["x"])).argmax(1).numpy()
    assert results["value"] == pytest.approx(100 * np.mean(predicted != test["y"]))


def test_a_yaml_task_with_a_metric_of_the_users_choice(train, tmp_path):
    rng = np.random.default_rng(1)
    for part in ("train", "val", "test"):
        x = rng.standard_normal((12, 2, 8, 8)).astype(np.float32)
        np.savez(tmp_path / f"{part}.npz", x=x, y=x.mean(axis=(1, 2, 3))[:, None])
    spec = tmp_path / "means.yaml"
    spec.write_text(
        "name: means\ntitle: Image means\ndims: 2\nkind: point\ninput_shape: [2, 8, 8]\nnum_outputs: 1\nloss: mse\n"
        "metric: torchmetrics.regression:MeanAbsoluteError\nreference: {lr: 0.01, batch_size: 4, epochs: 1}\n"
        "data: {train: train.npz, val: val.npz, test: test.npz}\n"
    )
    assert train("--task", str(spec), "--data.split=search") == 0
    results = read_results(tmp_path / "runs" / "means" / "wrn" / "seed0")
    assert results["metric"] == "meanabsoluteerror" and results["lower_is_better"] and results["split"] == "val"


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\ncolour: blue\n", r"unknown field\(s\) colour"),
        ("name: x\ndims: 1\n", "'data' must name the train, val and test files"),
        ("- just\n- a list\n", "must hold a mapping"),
    ],
)
def test_malformed_task_files_are_one_line_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=message) as err:
        load_task_file(path)
    assert "\n" not in str(err.value)


def test_a_task_with_wrongly_shaped_arrays_is_refused(train, tmp_path, sines_task, capsys):
    np.savez(tmp_path / "sines_test.npz", x=np.zeros((4, 2, 64), np.float32), y=np.zeros(4, int))
    assert train("--task", str(sines_task)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "x has shape (4, 2, 64)" in err[0]


PLUGIN = '''
"""A user's own task: one DataModule and its spec."""
import torch
from nb360.datamodules.base import TaskDataModule, TensorDictDataset
from nb360.tasks import Reference, TaskSpec, register_task


class BlobsDataModule(TaskDataModule):
    task = "blobs"

    def __init__(self, n: int = 32, **kwargs):
        super().__init__(**kwargs)
        self.n = n

    def prepare_data(self):
        pass

    def load(self):
        g = torch.Generator().manual_seed(0)
        def part(n):
            y = torch.randint(0, 2, (n,), generator=g)
            x = torch.randn(n, 1, 6, 6, generator=g) + 2.0 * y[:, None, None, None]
            return TensorDictDataset(x=x, y=y)
        return {"train": part(self.n), "val": part(8)} if self.split == "search" else {"train": part(self.n), "test": part(8)}


SPEC = register_task(TaskSpec(name="blobs", title="Blobs", dims=2, kind="point", input_shape=(1, 6, 6), num_outputs=2,
                              loss="cross_entropy", metric="error", reference=Reference(lr=0.05, batch_size=8, epochs=2),
                              datamodule=BlobsDataModule))
'''


def test_a_plugin_task_with_its_own_datamodule_and_config(train, tmp_path, monkeypatch):
    (tmp_path / "my_blobs.py").write_text(PLUGIN)
    (tmp_path / "blobs.yaml").write_text("data:\n  n: 16\ntrainer:\n  max_epochs: 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert train("--plugins", "my_blobs", "--task", "blobs", f"--config={tmp_path / 'blobs.yaml'}") == 0
    results = read_results(tmp_path / "runs" / "blobs" / "wrn" / "seed0")
    assert results["task"] == "blobs" and results["epochs"] == 1 and results["metric"] == "error"
