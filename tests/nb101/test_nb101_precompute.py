"""``python -m nb360.precompute run --space nb101`` trains NB101 cells through the generic runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import nb360.models.nb101 as nb101_models
from nb360.nb101.space import NB101
from nb360.precompute.__main__ import main
from nb360.tabular import create


def test_a_slice_of_cells_trains_and_merges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nb360.datamodules.ninapro import NinaProDataModule

    root = tmp_path / "ninapro"
    NinaProDataModule.write_fixture(root, 16, seed=1)
    built = []
    network = nb101_models.NB101Network

    def small(spec, **options):  # the benchmark network with 8 stem channels, to keep the test fast
        built.append(spec)
        return network(spec, **{**options, "stem_channels": 8})

    monkeypatch.setattr(nb101_models, "NB101Network", small)
    out = tmp_path / "out"
    args = ["--space", "nb101", "--task", "ninapro", f"--data.root={root}", "--epochs", "1", "--batch_size", "8"]
    assert main(["run", *args, "--archs", "100,2000,359715", "--out", str(out), "--quiet"]) == 0
    assert [NB101.index(s) for s in built] == [100, 2000, 359715]
    results = sorted(p.name for p in (out / "runs").rglob("*.json"))
    assert len(results) == 3
    assert main(["merge", "--out", str(out), "--store", str(tmp_path / "store.nb360")]) == 0
    bench = create(tmp_path / "store.nb360", progress=False)
    assert bench.space.name == "nb101" and len(bench) == 423_624
    assert bench.evaluated("ninapro", "1").nonzero()[0].tolist() == [100, 2000, 359715]
    assert json.loads((tmp_path / "store.nb360" / "meta.json").read_text())["space"] == "nb101"
