"""Every task with a data loader: its fixture goes through the real S3 path and ``train.py --method wrn`` runs on it."""

from __future__ import annotations

import math

import pytest

from helpers import read_results
from nb360.tasks import get_task, task_names

LOADED = [name for name in task_names() if get_task(name).datamodule is not None]
FIXTURE_SIZE = 8


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> dict:
    """One fixture per task, written once for this module: {task: (root, datamodule options)}."""
    made = {}
    for name in LOADED:
        cls = get_task(name).datamodule
        root = tmp_path_factory.mktemp(f"fixture-{name}")
        cls.write_fixture(root, FIXTURE_SIZE, seed=0)
        made[name] = (root, cls.fixture_args(FIXTURE_SIZE))
    return made


def _options(options: dict) -> list[str]:
    return [f"--data.{k}={v}" for k, v in options.items()]


@pytest.mark.parametrize("task", LOADED)
@pytest.mark.parametrize("split", ["final", "search"])
def test_train_one_epoch_on_the_fixture(task, split, fixtures, train, tmp_path):
    root, options = fixtures[task]
    args = ["--task", task, "--method", "wrn", f"--data.root={root}", *_options(options), f"--data.split={split}"]
    assert train(*args, "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1") == 0
    results = read_results(tmp_path / "runs" / task / "wrn" / "seed0")
    assert results["split"] == ("test" if split == "final" else "val")
    assert math.isfinite(results["value"]), results


@pytest.mark.parametrize("task", LOADED)
def test_fixture_files_download_through_the_s3_path(task, fixtures, s3_server, tmp_path):
    url, client = s3_server
    root, options = fixtures[task]
    cls = get_task(task).datamodule
    files = cls(root=str(root), split="final", **options).required_files()
    in_bucket = [f for f in files if f.s3_key is not None]
    for file in in_bucket:
        client.put_object(Bucket="pde-xd", Key=file.s3_key, Body=(root / file.name).read_bytes(), ACL="public-read")
    dm = cls(root=str(tmp_path), split="final", source="s3", s3_endpoint=url, **options)
    if len(in_bucket) < len(files):
        pytest.skip(f"{task}: some files are not in the NB360 bucket (their own https source is tested in the task's tests)")
    dm.prepare_data()
    dm.setup("fit")
    assert {"train", "test"} <= set(dm.datasets)
    for file in in_bucket:
        assert (tmp_path / file.name).read_bytes() == (root / file.name).read_bytes()


@pytest.mark.parametrize("task", LOADED)
def test_gaea_searches_and_retrains_on_the_fixture(task, fixtures, train, tmp_path):
    root, options = fixtures[task]
    tiny = ["--model.channels=4", "--model.layers=3", "--model.warmup_epochs=0", "--eval.channels=4", "--eval.layers=3"]
    args = ["--task", task, "--method", "gaea", f"--data.root={root}", *_options(options), *tiny, "--search_epochs=1", "--eval_epochs=1"]
    assert train(*args) == 0
    results = read_results(tmp_path / "runs" / task / "gaea" / "seed0")
    assert results["stage"] == "all" and results["split"] == "test" and math.isfinite(results["value"])
    assert (results["genotype"]["reduce"] is None) == (get_task(task).kind == "dense")
