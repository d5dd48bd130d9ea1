"""nb360.report's report.html: structure (tables, embedded PNGs, escaping) and rendering in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from nb360.report.__main__ import main
from nb360.report.html import read_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(root: Path, task: str, method: str, seed: int, value: float, staged: bool = False) -> Path:
    folder = root / task / method / f"seed{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    data = {"task": task, "method": method, "seed": seed, "metric": "err", "value": value, "lower_is_better": True}
    (folder / "results.json").write_text(json.dumps(data))
    header = "epoch,step,train/loss,val/err,test/err\n"
    lines = [f"{e},{e * 10},{2.0 - 0.3 * e},,\n{e},{e * 10},,{0.9 - 0.1 * e},\n" for e in range(4)]
    csv_text = header + "".join(lines) + f"3,40,,,{value}\n"
    if staged:
        for stage in ("search", "eval"):
            (folder / stage).mkdir()
            (folder / stage / "metrics.csv").write_text(csv_text)
    else:
        (folder / "metrics.csv").write_text(csv_text)
    return folder


def write_png(path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1), dpi=50)
    ax.plot([0, 1], [0, 1])
    fig.savefig(path)
    plt.close(fig)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, str]]]] = {}
        self.imgs: list[dict[str, str]] = []
        self._table = None
        self._cell = None
        self._bold = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id", ""), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = ""
            self._bold = False
        elif tag == "b":
            self._bold = True
        elif tag == "img":
            self.imgs.append(a)

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._cell is not None:
            self._table[-1].append((self._cell, "b" if self._bold else ""))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("html")
    runs = tmp / "runs"
    write_run(runs, "ecg", "wrn", 0, 0.4)
    write_run(runs, "ecg", "wrn", 1, 0.6)
    gaea = write_run(runs, "ecg", "gaea<x>", 0, 0.3, staged=True)
    write_png(gaea / "genotype.png")
    write_run(runs, "darcy", "wrn", 0, 0.02)
    out = tmp / "out"
    assert main([str(runs), "-o", str(out)]) == 0
    page = out / "report.html"
    assert page.is_file()
    return page


def test_read_curves_keeps_last_value_per_epoch(tmp_path):
    folder = write_run(tmp_path, "ecg", "wrn", 0, 0.4)
    curves = read_curves(folder / "metrics.csv")
    assert set(curves) == {"train/loss", "val/err", "test/err"}
    assert curves["train/loss"][0] == (0.0, 2.0) and len(curves["val/err"]) == 4
    assert curves["test/err"] == [(3.0, 0.4)]
    assert read_curves(tmp_path / "missing.csv") == {}


def test_html_tables_images_and_escaping(report):
    text = report.read_text()
    assert "<link" not in text and "<script" not in text and 'src="http' not in text
    assert "gaea&lt;x&gt;" in text and "gaea<x>" not in text
    parsed = _Collector()
    parsed.feed(text)
    t2 = parsed.tables["table2"]
    assert [c for c, _ in t2[0]] == ["method", "darcy", "ecg"]  # the paper's task order
    rows = {r[0][0]: r[1:] for r in t2[2:]}
    assert rows["wrn"] == [("0.020 ± 0.000", "b"), ("0.500 ± 0.141", "")]
    assert rows["gaea<x>"] == [("n/a", ""), ("0.300 ± 0.000", "b")]
    t3 = {r[0][0]: [c for c, _ in r[1:]] for r in parsed.tables["table3"][1:]}
    assert t3["gaea<x>"] == ["1.0", "40.00", "1"] and t3["wrn"] == ["1.5", "0.00", "2"]
    classes = [img.get("class") for img in parsed.imgs]
    assert classes.count("profile") == 1 and classes.count("curve") == 4 and classes.count("genotype") == 1
    for img in parsed.imgs:
        assert img["src"].startswith("data:image/png;base64,")
        data = base64.b64decode(img["src"].split(",", 1)[1], validate=True)
        assert data.startswith(PNG_MAGIC)


def _chromium(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    cmd = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="chromium not installed")
def test_html_renders_in_headless_chromium(report):
    url = report.resolve().as_uri()
    dom = _chromium("--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<table id="table2">' in dom.stdout and '<table id="table3">' in dom.stdout
    assert len(re.findall(r"<img [^>]*src=\"data:image/png;base64,", dom.stdout)) == 6
    shot = report.parent / "screenshot.png"
    res = _chromium(f"--screenshot={shot}", "--window-size=1200,2000", url)
    assert shot.is_file() and shot.stat().st_size > 0, res.stderr[-2000:]
    from PIL import Image

    with Image.open(io.BytesIO(shot.read_bytes())) as im:
        assert im.size == (1200, 2000)
        gray = im.convert("L")
        lo, hi = gray.getextrema()
        assert hi > lo  # not blank
    # images decode with a nonzero natural size in the browser's view: same bytes Pillow reads here
    for src in re.findall(r"src=\"data:image/png;base64,([^\"]+)\"", dom.stdout):
        with Image.open(io.BytesIO(base64.b64decode(src))) as im:
            assert im.size[0] > 0 and im.size[1] > 0
