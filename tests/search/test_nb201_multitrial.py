"""Multi-trial NAS with real training (``--method nb201_<algo>``): trials, budget accounting, replay on resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import read_results

from nb360.models import build_network, count_parameters
from nb360.spaces import get_space
from nb360.tasks import get_task

TINY = ["--search.channels=4", "--search.cells=1", "--search.epochs=2", "--eval.channels=4", "--eval.cells=1", "--eval_epochs=1"]


@pytest.fixture(scope="module")
def ninapro_root(task_fixture) -> Path:
    return task_fixture("ninapro")[0]


def _trials(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]


def test_rea_trains_its_population_then_retrains_the_best(ninapro_root, train, tmp_path):
    options = '--search.options={"population_size": 4, "sample_size": 2}'
    assert train("--task=ninapro", "--method=nb201_rea", f"--data.root={ninapro_root}", *TINY, options, "--search.budget=11") == 0
    run_dir = tmp_path / "runs" / "ninapro" / "nb201_rea" / "seed0"
    trials = _trials(run_dir)
    # the initial population (4) is trained before the budget is first looked at; then children until 11 epochs are used
    assert len(trials) == 6 and all(t["epochs"] == 2 and t["cost"] == 2.0 for t in trials)
    space = get_space("nb201")
    assert all(space.to_string(t["arch"]) == t["arch"] for t in trials)
    best = min(trials, key=lambda t: t["score"])  # NinaPro's error: lower is better; the first of equals wins
    results = read_results(run_dir)
    search = json.loads((run_dir / "search.json").read_text())
    assert search["genotype"]["arch"] == results["genotype"]["arch"] == best["arch"]
    assert search["value"] == best["score"] and search["budget_used"] == 12.0 and search["trials"] == 6
    assert results["split"] == "test" and results["stage"] == "all"
    network = build_network("nb201", get_task("ninapro"), arch=best["arch"], channels=4, cells=1)
    assert results["params"] == count_parameters(network)
    assert not (run_dir / "trials").exists()  # finished trials keep no checkpoints


def test_an_interrupted_search_replays_its_trials_and_ends_the_same(ninapro_root, train, tmp_path):
    args = [
        "--task=ninapro",
        "--method=nb201_random",
        f"--data.root={ninapro_root}",
        *TINY,
        "--search.budget=3",
        "--search.budget_unit=trials",
    ]
    assert train(*args, "--stage=search") == 0
    run_dir = tmp_path / "runs" / "ninapro" / "nb201_random" / "seed0"
    first = _trials(run_dir)
    assert len(first) == 3
    # as if killed during the third trial: two trials recorded, no architecture yet
    (run_dir / "trials.jsonl").write_text("".join(json.dumps(t) + "\n" for t in first[:2]))
    for name in ("genotype.json", "genotype.png", "genotype.svg", "search.json", "results.json"):
        (run_dir / name).unlink()
    assert train(*args, "--stage=search") == 2  # a started search is not overwritten
    assert train(*args, "--stage=search", "--ckpt_path=last") == 0
    again = _trials(run_dir)
    assert [(t["arch"], t["score"]) for t in again] == [(t["arch"], t["score"]) for t in first]
    # a replay under other settings is refused rather than mixing two searches
    (run_dir / "search.json").unlink()
    (run_dir / "genotype.json").unlink()
    assert (
        train(
            *args[:-2],
            "--search.budget=3",
            "--search.budget_unit=trials",
            "--search.epochs=1",
            "--stage=search",
            "--ckpt_path=last",
        )
        == 2
    )


def test_hyperband_trials_follow_its_brackets(ninapro_root, train, tmp_path):
    args = ["--task=ninapro", "--method=nb201_hyperband", f"--data.root={ninapro_root}", *TINY, "--search.epochs=3"]
    assert train(*args, "--search.budget=8", "--stage=search") == 0
    trials = _trials(tmp_path / "runs" / "ninapro" / "nb201_hyperband" / "seed0")
    # eta 3, budgets 1..3: the first bracket trains 3 cells for 1 epoch, then the best one for 3 (hpbandster's schedule)
    assert [t["epochs"] for t in trials[:4]] == [1, 1, 1, 3]
    best = min(t["score"] for t in trials[:3])
    assert trials[3]["arch"] in {t["arch"] for t in trials[:3] if t["score"] == best}
    assert [t["epochs"] for t in trials[4:]] == [3] and sum(t["cost"] for t in trials) == 9  # the second bracket crosses 8


def test_bad_search_options_are_one_line_errors(ninapro_root, train, capsys):
    assert (
        train("--task=ninapro", "--method=nb201_rea", f"--data.root={ninapro_root}", *TINY, '--search.options={"population": 3}')
        == 2
    )
    assert "rea has no option population; it takes" in capsys.readouterr().err
    assert train("--task=ninapro", "--method=nb201_bohb", f"--data.root={ninapro_root}", *TINY, "--search.min_epochs=5") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("nb360: error: --search.epochs 2 and --search.min_epochs 5")
