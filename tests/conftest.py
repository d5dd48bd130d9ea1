"""Shared fixtures: an isolated HOME/data/W&B environment, a Darcy fixture, and an in-process ``train.py``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURE_N = 8
S3_PAYLOAD = bytes(range(256)) * 4000  # ~1 MB


@pytest.fixture(scope="session", autouse=True)
def isolated_environment(tmp_path_factory: pytest.TempPathFactory):
    """Keep wandb, matplotlib and data caches out of the user's HOME and working tree."""
    home = tmp_path_factory.mktemp("home")
    patch = pytest.MonkeyPatch()
    for key, value in {
        "HOME": home,
        "WANDB_DIR": home / "wandb",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "MPLCONFIGDIR": home / "mpl",
        "NB360_DATA": home / "data",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        patch.setenv(key, str(value))
    patch.delenv("NB360_PLUGINS", raising=False)
    yield home
    patch.undo()


@pytest.fixture(autouse=True)
def restore_registries():
    """Tasks and methods that a test registers (YAML tasks, plugins) do not leak into later tests."""
    from nb360.methods import METHODS
    from nb360.tasks import TASKS

    saved = []
    for registry in (TASKS, METHODS):
        registry.names()  # load the built-ins first
        saved.append((registry, dict(registry._entries), dict(registry._keys)))
    yield
    for registry, entries, keys in saved:
        registry._entries, registry._keys = entries, keys


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: tiny networks run fastest so, and several threads crawl on a shared CPU.

    Modules of many tiny steps use it for every test: ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def s3_server(isolated_environment):
    """A local S3 server (moto) on 127.0.0.1 with the public bucket ``pde-xd`` holding ``task/blob.bin``."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
    client.create_bucket(Bucket="pde-xd", ACL="public-read")
    client.put_object(Bucket="pde-xd", Key="task/blob.bin", Body=S3_PAYLOAD, ACL="public-read")
    yield url, client
    server.stop()


@pytest.fixture(scope="session")
def darcy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Darcy Flow fixture: two solver-made files of 8 samples on a 21 x 21 grid (v5 and v7.3)."""
    from nb360.datamodules.darcy import DarcyDataModule

    root = tmp_path_factory.mktemp("darcy")
    DarcyDataModule.write_fixture(root, FIXTURE_N, seed=0)
    return root


def darcy_args(root: Path) -> list[str]:
    from nb360.datamodules.darcy import DarcyDataModule

    flags = [f"--data.{k}={v}" for k, v in DarcyDataModule.fixture_args(FIXTURE_N).items()]
    return ["--task", "darcy", "--method", "wrn", f"--data.root={root}", *flags, "--data.batch_size=4"]


QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


@pytest.fixture(scope="session")
def task_fixture(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, dict]]:
    """A task's format-exact fixture (``FIXTURE_N`` samples per part), written once per session: ``(root, data options)``."""
    from nb360.tasks import get_task

    written: dict[str, tuple[Path, dict]] = {}

    def get(task: str) -> tuple[Path, dict]:
        if task not in written:
            cls = get_task(task).datamodule
            root = tmp_path_factory.mktemp(f"fixture-{task}")
            cls.write_fixture(root, FIXTURE_N)
            written[task] = (root, cls.fixture_args(FIXTURE_N))
        return written[task]

    return get


@pytest.fixture
def train(tmp_path: Path) -> Callable[..., int]:
    """Run ``train.py`` in this process (Lightning is imported once); outputs go under ``tmp_path/runs``."""
    from nb360.cli import main

    def run(*args: str, output_dir: Path | None = None) -> int:
        out = output_dir or tmp_path / "runs"
        return main([*QUIET, f"--output_dir={out}", *args], config_dir=REPO / "configs")

    return run


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("PYTHONHASHSEED", "0")
    from nb360.methods import METHODS

    METHODS.names()  # register the built-in methods in their own order before test modules import single ones
