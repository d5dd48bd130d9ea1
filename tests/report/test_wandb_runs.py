"""nb360.report --wandb: runs of a W&B project (through a stand-in for wandb.Api) become report rows."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import nb360.report.wandb_runs as wandb_runs
from nb360.report.__main__ import main
from nb360.report.wandb_runs import collect_wandb, row_from_wandb_run


class Summary:
    """Like wandb's run summary: the values behind ``_json_dict``."""

    def __init__(self, data: dict) -> None:
        self._json_dict = data


def run(summary: dict, group="ecg", job_type="wrn", seed=0, run_id="r"):
    return SimpleNamespace(id=run_id, summary=Summary(summary), group=group, job_type=job_type, config={"seed_everything": seed})


def result(task, method, seed, value, **extra):
    fields = {
        "task": task,
        "method": method,
        "seed": seed,
        "metric": "f1",
        "value": value,
        "lower_is_better": True,
        "split": "test",
    }
    return {f"result/{k}": v for k, v in {**fields, **extra}.items()}


class FakeApi:
    def __init__(self, runs, fail=None):
        self._runs, self._fail, self.asked = runs, fail, []

    def runs(self, path):
        self.asked.append(path)
        if self._fail:
            raise self._fail
        return iter(self._runs)


def test_rows_from_runs_skip_unfinished_and_search_and_warn_on_malformed():
    runs = [
        run(result("ecg", "wrn", 0, 0.43, params=100, wall_time_s=2.5)),
        run(result("ecg", "gaea", 1, 0.34), job_type="gaea"),
        run({"train/loss": 1.0}),  # crashed or still running: no result yet
        run(result("ecg", "gaea", 0, 0.5, split="val")),  # a search stage's own score
        run(result("ecg", "wrn", 2, "oops"), run_id="bad"),
    ]
    warnings = []
    rows, skipped = collect_wandb("me/nb360", api=FakeApi(runs), warn=warnings.append)
    assert [(r.task, r.method, r.seed, r.value) for r in rows] == [("ecg", "wrn", 0, 0.43), ("ecg", "gaea", 1, 0.34)]
    assert rows[0].params == 100 and rows[0].wall_time_s == 2.5 and rows[0].metric == "f1"
    assert skipped == 2
    assert len(warnings) == 1 and "bad" in warnings[0] and "not a number" in warnings[0]


def test_old_runs_fall_back_on_group_job_type_and_config_seed():
    row = row_from_wandb_run(run({"result/value": 0.07, "result/metric": "relative_l2"}, group="darcy", job_type="fno", seed=4))
    assert (row.task, row.method, row.seed, row.value) == ("darcy", "fno", 4, 0.07)
    assert row_from_wandb_run(SimpleNamespace(summary={}, config={})) is None


def test_unreachable_project_is_one_line_error(tmp_path, capsys, monkeypatch):
    api = FakeApi([], fail=RuntimeError("Could not find project nb360\nTraceback ..."))
    monkeypatch.setattr(wandb_runs, "_default_api", lambda: api)
    assert main(["--wandb", "me/nb360", "-o", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nb360: error: cannot read W&B project 'me/nb360': Could not find project") and err.count("\n") == 1


def test_report_from_wandb_and_folder_together(tmp_path, monkeypatch):
    api = FakeApi([run(result("ecg", "gaea", s, v), job_type="gaea") for s, v in enumerate([0.30, 0.34])])
    monkeypatch.setattr(wandb_runs, "_default_api", lambda: api)
    folder = tmp_path / "runs" / "ecg" / "wrn" / "seed0"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text('{"task": "ecg", "method": "wrn", "seed": 0, "metric": "f1", "value": 0.41}')
    out = tmp_path / "out"
    assert main([str(tmp_path / "runs"), "--wandb", "me/nb360", "-o", str(out)]) == 0
    assert api.asked == ["me/nb360"]
    md = (out / "table2.md").read_text()
    assert "| gaea | **0.320 ± 0.028** |" in md and "| wrn | 0.410 ± 0.000 |" in md


def test_no_source_is_a_usage_error(tmp_path, capsys):
    assert main(["-o", str(tmp_path / "o")]) == 2
    assert "give a runs folder, a W&B project" in capsys.readouterr().err


@pytest.mark.parametrize("summary", [{"result/value": 0.1}])
def test_missing_task_and_method_is_malformed(summary):
    with pytest.raises(ValueError, match="missing task, method"):
        row_from_wandb_run(SimpleNamespace(summary=summary, config={}, group=None, job_type=None))
