"""A self-contained HTML page for a report: Tables 2–3, the performance profile, learning curves and genotypes.

Everything is inline: the CSS in a ``<style>`` element and every image as a base64 ``data:image/png`` URI, so the
page can be mailed or archived as a single file. All text taken from runs is escaped with :func:`html.escape`.
"""

from __future__ import annotations

import base64
import csv
import datetime
import io
import math
from collections.abc import Sequence
from html import escape
from pathlib import Path

from nb360.io import atomic_open
from nb360.report.tables import NA, Cell, _best, _digits, format_value, improvement_over, median_ranks

__all__ = ["write_html", "render_html", "read_curves", "plot_curves", "run_dirs", "png_data_uri"]

#: metrics.csv files of a run, relative to its directory: single-stage runs, then the two stages of staged methods.
METRICS_FILES = ("metrics.csv", "search/metrics.csv", "eval/metrics.csv")
GENOTYPE_FILES = ("genotype.png", "search/genotype.png")

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
.meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
thead th { background: #f0f0f0; }
td.na { color: #999; }
.runs { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; border: 1px solid #ddd; padding: 0.5em; }
figcaption { font-size: 0.85em; font-family: monospace; word-break: break-all; max-width: 420px; }
img { max-width: 100%; }
"""


def png_data_uri(data: bytes) -> str:
    """``data:image/png;base64,...`` for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _img(data: bytes, alt: str, cls: str = "") -> str:
    klass = f' class="{escape(cls)}"' if cls else ""
    return f'<img{klass} alt="{escape(alt)}" src="{png_data_uri(data)}">'


def run_dirs(root: str | Path) -> list[Path]:
    """Every folder under ``root`` holding a ``results.json`` or a metrics CSV (staged sub-folders map to their run)."""
    root = Path(root)
    found: set[Path] = set()
    for name in ("results.json", "metrics.csv"):
        for path in root.rglob(name):
            folder = path.parent
            if folder.name in ("search", "eval") and folder.parent != root:
                folder = folder.parent
            found.add(folder)
    return sorted(found)


def _number(text: str | None) -> float | None:
    if text is None or text.strip() == "":
        return None
    try:
        x = float(text)
    except ValueError:
        return None
    return x if math.isfinite(x) else None


def read_curves(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """``{column: [(epoch, value), ...]}`` for ``train/loss`` and every ``val/*`` and ``test/*`` column of a CSV log.

    Lightning's CSV logger writes sparse rows; the last value logged in an epoch is kept. Rows without an epoch use
    the step instead. Unreadable files give ``{}``.
    """
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return {}
    if not rows:
        return {}
    columns = [c for c in rows[0] if c and (c == "train/loss" or c.startswith(("val/", "test/")))]
    curves: dict[str, dict[float, float]] = {c: {} for c in columns}
    for row in rows:
        x = _number(row.get("epoch"))
        if x is None:
            x = _number(row.get("step"))
        if x is None:
            continue
        for c in columns:
            v = _number(row.get(c))
            if v is not None:
                curves[c][x] = v
    return {c: sorted(points.items()) for c, points in curves.items() if points}


def plot_curves(curves: dict[str, dict[str, list[tuple[float, float]]]], title: str) -> bytes | None:
    """One small PNG with ``{stage: {column: points}}``: losses on the left axis, val/test metrics on the right."""
    if not any(curves.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.8), dpi=90)
    right = None
    for stage, cols in curves.items():
        prefix = f"{stage}: " if stage else ""
        for col, points in cols.items():
            xs, ys = zip(*points)
            if col.endswith("loss"):
                ax.plot(xs, ys, marker=".", label=prefix + col)
            else:
                right = right or ax.twinx()
                right.plot(xs, ys, marker=".", linestyle="--", label=prefix + col, color=f"C{len(right.lines) + 3}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    if right is not None:
        right.set_ylabel("metric")
        h2, l2 = right.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=6, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _table2_html(cells: dict[tuple[str, str], Cell], methods: Sequence[str], tasks: Sequence[str]) -> str:
    head = "".join(f"<th>{escape(t)}</th>" for t in tasks)
    metric_row = "".join(f"<th>{escape(next((c.metric for (m, tt), c in cells.items() if tt == t), ''))}</th>" for t in tasks)
    best = {t: _best(cells, methods, t) for t in tasks}
    body = []
    for m in methods:
        tds = []
        for t in tasks:
            if (m, t) not in cells:
                tds.append(f'<td class="na">{NA}</td>')
                continue
            c = cells[m, t]
            text = escape(f"{format_value(c.mean)} ± {format_value(c.std, _digits(c.mean))}")
            tds.append(f'<td class="best"><b>{text}</b></td>' if m in best[t] else f"<td>{text}</td>")
        body.append(f"<tr><th>{escape(m)}</th>{''.join(tds)}</tr>")
    return (
        f'<table id="table2"><thead><tr><th>method</th>{head}</tr><tr><th>metric</th>{metric_row}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _table3_html(cells, methods: Sequence[str], tasks: Sequence[str], baseline: str) -> str:
    mr = median_ranks(cells, methods, tasks)
    imp = improvement_over(cells, baseline, methods, tasks)
    body = []
    for m in methods:
        r = NA if mr[m] is None else f"{mr[m]:.1f}"
        p = NA if imp[m] is None else f"{imp[m]:.2f}"
        n = sum((m, t) in cells for t in tasks)
        body.append(f"<tr><th>{escape(m)}</th><td>{r}</td><td>{p}</td><td>{n}</td></tr>")
    return (
        f'<table id="table3"><thead><tr><th>method</th><th>median rank</th><th>% better than {escape(baseline)}</th>'
        f"<th>tasks</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _run_figures(runs_root: Path) -> tuple[list[str], list[str]]:
    curves_html, genotypes_html = [], []
    for folder in run_dirs(runs_root):
        label = folder.relative_to(runs_root).as_posix() or "."
        stages = {}
        for rel in METRICS_FILES:
            path = folder / rel
            if path.is_file():
                stages[rel.rpartition("/")[0]] = read_curves(path)
        png = plot_curves(stages, label) if stages else None
        if png is not None:
            curves_html.append(
                f"<figure>{_img(png, f'learning curves of {label}', 'curve')}<figcaption>{escape(label)}</figcaption></figure>"
            )
        for rel in GENOTYPE_FILES:
            path = folder / rel
            if path.is_file():
                data = path.read_bytes()
                if data.startswith(b"\x89PNG"):
                    genotypes_html.append(
                        f"<figure>{_img(data, f'genotype of {label}', 'genotype')}"
                        f"<figcaption>{escape(label + '/' + rel)}</figcaption></figure>"
                    )
    return curves_html, genotypes_html


def render_html(
    cells: dict[tuple[str, str], Cell],
    methods: Sequence[str],
    tasks: Sequence[str],
    baseline: str,
    profile_png: bytes | None = None,
    runs_root: str | Path | None = None,
    title: str = "nb360 report",
) -> str:
    """The whole page as a string."""
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    source = f" from <code>{escape(str(runs_root))}</code>" if runs_root is not None else ""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="meta">Generated {when}{source}: {len(methods)} methods, {len(tasks)} tasks.</p>',
        "<h2>Table 2: mean ± std over seeds</h2>",
        "<p>Best per task in bold; n/a where a method was not run.</p>",
        _table2_html(cells, methods, tasks),
        "<h2>Table 3: median rank and improvement</h2>",
        _table3_html(cells, methods, tasks, baseline),
    ]
    if profile_png is not None:
        parts += ["<h2>Performance profile</h2>", _img(profile_png, "performance profile", "profile")]
    if runs_root is not None:
        curves, genotypes = _run_figures(Path(runs_root))
        parts.append("<h2>Learning curves</h2>")
        parts.append(f'<div class="runs">{"".join(curves)}</div>' if curves else "<p>No metrics.csv found.</p>")
        if genotypes:
            parts += ["<h2>Genotypes</h2>", f'<div class="runs">{"".join(genotypes)}</div>']
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html(path: str | Path, *args, **kwargs) -> Path:
    """Write :func:`render_html`'s page to ``path``."""
    path = Path(path)
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(render_html(*args, **kwargs))
    return path
