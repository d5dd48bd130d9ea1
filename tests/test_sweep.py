"""``python -m nb360.sweep``: the grid, shards, skipping, failures that do not stop the others."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from filelock import FileLock

from nb360.methods import Method, get_method, register_method
from nb360.sweep import Run, grid, main, shard_of


def test_shards_partition_the_grid():
    runs = [Run("ecg", "wrn", seed) for seed in range(10)]
    shards = [shard_of(runs, f"{i}/3") for i in range(3)]
    assert sorted(r.seed for shard in shards for r in shard) == list(range(10))
    assert [r.seed for r in shards[1]] == [1, 4, 7]
    assert shard_of(runs, None) == runs
    for bad in ("3/3", "1", "a/b", "0/0"):
        with pytest.raises(Exception, match="--shard"):
            shard_of(runs, bad)


def test_grid_resolves_names_and_reports_inapplicable_pairs():
    from nb360.tasks import TASKS

    wrn = get_method("wrn")
    register_method(
        Method("only_1d", "test method", wrn.module, wrn.run, applies_to=lambda s: None if s.dims == 1 else "1-D only")
    )
    runs, inapplicable = grid(["protein,ecg"], ["only_1d", "wrn"], [0, 1])
    assert [(r.task, r.method, r.seed) for r in runs] == [
        ("psicov", "wrn", 0), ("psicov", "wrn", 1),
        ("ecg", "only_1d", 0), ("ecg", "only_1d", 1), ("ecg", "wrn", 0), ("ecg", "wrn", 1),
    ]  # fmt: skip
    assert {(o.task, o.method, o.detail) for o in inapplicable} == {("psicov", "only_1d", "1-D only")}
    everything, _ = grid(["all"], ["wrn"], [0])
    assert [r.task for r in everything] == [s.name for s in TASKS.values() if s.datamodule is not None]
    with pytest.raises(Exception, match="unknown method"):
        grid(["ecg"], ["nas9"], [0])


def test_sweep_runs_skips_and_survives_a_failing_run(tmp_path: Path, monkeypatch, capsys):
    from nb360.datamodules.ecg import ECGDataModule

    data = tmp_path / "data"
    ECGDataModule.write_fixture(data / "ecg", 8)
    monkeypatch.setenv("NB360_DATA", str(data))  # satellite has no files there: its run fails
    config = tmp_path / "sweep.yaml"
    ecg_args = [f"--data.{k}={v}" for k, v in ECGDataModule.fixture_args(8).items()]
    config.write_text(
        yaml.safe_dump({"tasks": ["ecg", "satellite"], "methods": ["wrn"], "seeds": [3], "task_args": {"ecg": ecg_args}})
    )
    out = tmp_path / "runs"
    status = main(["--config", str(config), "--output_dir", str(out), "--", "--trainer.max_epochs", "1"])
    printed = capsys.readouterr()
    assert status == 1
    result = json.loads((out / "ecg" / "wrn" / "seed3" / "results.json").read_text())
    assert (result["task"], result["seed"]) == ("ecg", 3)
    summary = {r["task"]: r for r in json.loads((out / "sweep-0of1.json").read_text())["runs"]}
    assert summary["ecg"]["status"] == "finished"
    assert summary["satellite"]["status"] == "failed" and "nb360: error:" in summary["satellite"]["detail"]
    assert "failed: satellite / wrn / seed 3" in printed.err

    # rerun: the finished run is skipped without a process; a run another sweep holds is left to it
    with FileLock(str(out / "sweep-logs" / "satellite-wrn-seed3.lock")):
        assert main(["--config", str(config), "--output_dir", str(out)]) == 0
    summary = {r["task"]: r["status"] for r in json.loads((out / "sweep-0of1.json").read_text())["runs"]}
    assert summary == {"ecg": "skipped", "satellite": "running elsewhere"}
    assert main(["--tasks", "ecg", "--methods", "wrn", "--seeds", "x"]) == 2
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    (tmp_path / "corrupt.yaml").write_text("tasks: [ecg\nmethods: : :")
    assert main(["--config", str(tmp_path / "corrupt.yaml")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors[-2].startswith("nb360: error: sweep file") and errors[-1].startswith("nb360: error:") and "YAML" in errors[-1]
