"""``python -m nb360.proxies correlate``: proxies of NB201 cells against a tabular store's final scores."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from nb360 import proxies
from nb360.models import build_network
from nb360.proxies.__main__ import main
from nb360.spaces import get_space
from nb360.tabular import RunRecord, StoreBuilder
from nb360.tasks import get_task

TSS = get_space("tss")
INDEXES = (3, 17, 123, 512, 2024, 5000, 9000, 15000)  # cells of different sizes
TINY = ["--channels", "2", "--cells", "1", "--batch_size", "4", "--no_progress"]


def n_params(index: int) -> int:
    network = build_network("nb201", get_task("ninapro"), arch=TSS.arch(index), channels=2, cells=1)
    return sum(p.numel() for p in network.parameters())


def write_store(path: Path, values: dict[int, float], *, error: bool = False, space: str = "tss", epochs: int = 2) -> Path:
    """A ninapro store whose final score of cell ``i`` is ``values[i]``: test accuracy, or with ``error`` an error metric."""
    rule = {"column": "metric", "name": "error", "unit": "%", "lower_is_better": True} if error else None
    builder = StoreBuilder(space, score={"ninapro": rule} if error else None)
    for index, value in values.items():
        final = np.array([value + 5.0, value])  # the first epoch is a decoy: only the final epoch counts
        evals = {"loss": np.ones(epochs), "acc1": final, "time": np.ones(epochs)}
        if error:
            evals = {**evals, "acc1": 100 - final, "metric": final}
        builder.add(
            RunRecord(
                arch_index=index,
                dataset="ninapro",
                hp="200",
                seed=777,
                epochs=epochs,
                train={"loss": np.ones(epochs), "acc1": np.ones(epochs), "time": np.ones(epochs)},
                evals={"ori-test": evals},
                params=1.0,
                flops=1.0,
            )
        )
    return builder.write(path, source={"file": "test", "sha256": None})


pytestmark = pytest.mark.usefixtures("one_thread")  # many tiny steps: one intra-op thread


@pytest.fixture(scope="module")
def params() -> dict[int, int]:
    return {i: n_params(i) for i in INDEXES}


def count_params(network, batch_x, batch_y, loss_fn) -> float:
    return float(sum(p.numel() for p in network.parameters()))


@pytest.mark.parametrize("error", [False, True])
def test_a_proxy_that_is_the_ground_truth_correlates_perfectly(tmp_path, monkeypatch, params, error) -> None:
    assert len(set(params.values())) >= 5  # the cells differ in size (some tie: ties must match too)
    monkeypatch.setitem(proxies.PROXIES, "params", count_params)
    # accuracy grows with the parameter count; the error falls with it (so ranks agree once its direction is respected)
    values = {i: (100 - 30 / np.log(p) if not error else 30 / np.log(p)) for i, p in params.items()}
    store = write_store(tmp_path / "s.nb360", values, error=error)
    out = tmp_path / "out"
    argv = ["correlate", "--benchmark", str(store), "--task", "ninapro", "--all", "--proxies", "params", "--batch", "random"]
    assert main([*argv, *TINY, "-o", str(out)]) == 0
    result = json.loads((out / "correlations.json").read_text())
    assert result["lower_is_better"] is error and result["n"] == len(INDEXES)
    assert result["proxies"]["params"] == {"spearman": 1.0, "kendall": 1.0, "n": len(INDEXES)}
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert [int(r["index"]) for r in rows] == sorted(INDEXES)
    assert all(float(r["params"]) == params[int(r["index"])] and r["arch"] == TSS.arch(int(r["index"])) for r in rows)
    assert all(float(r["ground_truth"]) == values[int(r["index"])] for r in rows)  # the final epoch, not the first


def test_real_proxies_smoke_and_numbers_match_scipy(tmp_path, params) -> None:
    rng = np.random.default_rng(0)
    store = write_store(tmp_path / "s.nb360", {i: float(rng.uniform(20, 80)) for i in INDEXES}, error=True)
    out = tmp_path / "out"
    argv = ["correlate", "--benchmark", str(store), "--task", "ninapro", "--archs", "5", "--proxies", "grad_norm,synflow"]
    assert main([*argv, "--batch", "random", "--repeats", "2", *TINY, "-o", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"scores.csv", "correlations.json", "correlations.md", "correlations.png"}
    assert (out / "correlations.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 5 and set(rows[0]) == {"index", "arch", "ground_truth", "grad_norm", "synflow"}
    result = json.loads((out / "correlations.json").read_text())
    assert (result["task"], result["dataset"], result["store"], result["n"]) == ("ninapro", "ninapro", str(store), 5)
    truth = -np.array([float(r["ground_truth"]) for r in rows])  # an error: negated
    for name in ("grad_norm", "synflow"):
        s = np.array([float(r[name]) for r in rows])
        assert result["proxies"][name]["spearman"] == pytest.approx(stats.spearmanr(s, truth)[0], abs=1e-12)
        assert result["proxies"][name]["kendall"] == pytest.approx(stats.kendalltau(s, truth)[0], abs=1e-12)
        assert result["proxies"][name]["n"] == 5
    md = (out / "correlations.md").read_text()
    assert "| grad_norm |" in md and "| synflow |" in md
    # the sample is seeded: the same command picks the same cells and gives the same scores
    again = tmp_path / "again"
    assert main([*argv, "--batch", "random", "--repeats", "2", *TINY, "-o", str(again)]) == 0
    assert (again / "scores.csv").read_text() == (out / "scores.csv").read_text()


def test_real_batch_from_the_task_data(tmp_path) -> None:
    from nb360.datamodules.ninapro import NinaProDataModule

    root = tmp_path / "ninapro"
    NinaProDataModule.write_fixture(root, 8, seed=1)
    store = write_store(tmp_path / "s.nb360", {i: float(k) for k, i in enumerate(INDEXES[:3])})
    out = tmp_path / "out"
    argv = ["correlate", "--benchmark", str(store), "--task", "ninapro", "--all", "--proxies", "snip", "--batch", "real"]
    assert main([*argv, "--data.root", str(root), *TINY, "-o", str(out)]) == 0
    result = json.loads((out / "correlations.json").read_text())
    assert result["batch"] == "real" and result["batch_size"] == 4 and result["proxies"]["snip"]["n"] == 3


@pytest.fixture(scope="module")
def bad_stores(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("stores")
    write_store(tmp / "s.nb360", {i: 50.0 for i in INDEXES})
    (tmp / "corrupt.nb360").mkdir()
    (tmp / "corrupt.nb360" / "meta.json").write_text("{not json")
    write_store(tmp / "sss.nb360", {0: 1.0, 1: 2.0}, space="sss")
    return tmp


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--proxies", "grad_norm,nope"], "unknown proxy 'nope'", 2),
        (["--task", "nope"], "unknown task", 2),
        (["--task", "darcy"], "not in this benchmark", 2),
        (["--archs", "9"], "more than the 8 evaluated", 2),
        (["--benchmark", "{tmp}/missing.nb360"], "does not exist", 1),
        (["--benchmark", "{tmp}/corrupt.nb360"], "corrupt.nb360", 1),
        (["--benchmark", "{tmp}/sss.nb360"], "nats_sss benchmark", 2),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, bad_stores, args, message, code) -> None:
    out = tmp_path / "out"
    base = {"--benchmark": str(bad_stores / "s.nb360"), "--task": "ninapro", "--archs": "3", "--batch": "random", "-o": str(out)}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value.format(tmp=bad_stores)
    assert main(["correlate", *[x for kv in base.items() for x in kv], *TINY]) == code
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and err.startswith("nb360: error:")
    assert not out.exists()


def test_neither_archs_nor_all_and_unknown_command(capsys) -> None:
    assert main(["correlate", "--benchmark", "x", "--task", "ninapro", "-o", "out"]) == 2
    assert "--archs N" in capsys.readouterr().err
    assert main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
