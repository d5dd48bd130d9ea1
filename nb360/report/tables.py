"""The NAS-Bench-360 paper's Table 2 (mean ± std per method and task) and Table 3 (median rank, % better than WRN).

Table 3's definitions (reconstructed from the paper; they reproduce its published values from its Table 2):

* **median rank**: on each task, the methods that were run on it are ranked (1 = best; tied methods get the average of
  their ranks); a method's score is the median of its ranks over the tasks it was run on.
* **% better than the baseline** (default WRN): on each task ``100 · (base − m) / base`` for lower-is-better metrics
  (``100 · (m − base) / base`` for higher-is-better ones); the median over the tasks where both were run.

Computed from the paper's own Table 2 these give the published ranks and GAEA 14.6 %, AMBER 20.0 %, Auto-DL −75.3 %, but
DenseNAS random 2.53 % / DenseNAS original 0.0 % (the published row has the two swapped) and WRN ASHA −0.09 % (printed
0.1 % in the paper).
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nb360.report.collect import Row

__all__ = ["Cell", "aggregate", "ranks", "median_ranks", "improvement_over", "table2", "table3", "format_value"]

NA = "n/a"


@dataclass(frozen=True)
class Cell:
    """A method's result on a task: mean and std over seeds (sample std; 0 for one seed, or the published std)."""

    mean: float
    std: float
    n: int
    metric: str = ""
    lower_is_better: bool = True


def aggregate(rows: Iterable[Row]) -> dict[tuple[str, str], Cell]:
    """Mean and std over seeds for each (method, task)."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.method, row.task), []).append(row)
    cells = {}
    for key, group in groups.items():
        values = [r.value for r in group]
        if len(group) == 1 and group[0].std is not None:
            std = group[0].std
        else:
            std = statistics.stdev(values) if len(values) > 1 else 0.0
        cells[key] = Cell(statistics.fmean(values), std, len(values), group[0].metric, group[0].lower_is_better)
    return cells


def _order(items: Iterable[str], preferred: Sequence[str] | None) -> list[str]:
    items = list(dict.fromkeys(items))
    if preferred is None:
        return items
    return [x for x in preferred if x in items]


def _tasks_methods(cells, tasks, methods):
    tasks = _order((t for _, t in cells), tasks)
    methods = _order((m for m, _ in cells), methods)
    return tasks, methods


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def ranks(scores: dict[str, float], lower_is_better: bool = True) -> dict[str, float]:
    """Rank of each method (1 = best); tied methods get the average of the ranks they span."""
    order = sorted(scores, key=lambda m: scores[m], reverse=not lower_is_better)
    out: dict[str, float] = {}
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and _close(scores[order[j + 1]], scores[order[i]]):
            j += 1
        for m in order[i : j + 1]:
            out[m] = (i + j) / 2 + 1
        i = j + 1
    return out


def median_ranks(
    cells: dict[tuple[str, str], Cell], methods: Sequence[str] | None = None, tasks: Sequence[str] | None = None
) -> dict[str, float | None]:
    """Each method's median rank over the tasks it was run on, ranking only ``methods`` (default all)."""
    tasks, methods = _tasks_methods(cells, tasks, methods)
    per_method: dict[str, list[float]] = {m: [] for m in methods}
    for task in tasks:
        present = {m: cells[m, task] for m in methods if (m, task) in cells}
        if not present:
            continue
        lower = next(iter(present.values())).lower_is_better
        for m, r in ranks({m: c.mean for m, c in present.items()}, lower).items():
            per_method[m].append(r)
    return {m: (statistics.median(rs) if rs else None) for m, rs in per_method.items()}


def improvement_over(
    cells: dict[tuple[str, str], Cell],
    baseline: str = "wrn",
    methods: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
) -> dict[str, float | None]:
    """Median over tasks of each method's relative improvement (%) over ``baseline``; ``None`` where none is defined."""
    tasks, methods = _tasks_methods(cells, tasks, methods)
    out: dict[str, float | None] = {}
    for m in methods:
        gains = []
        for task in tasks:
            if (m, task) not in cells or (baseline, task) not in cells:
                continue
            base, cell = cells[baseline, task], cells[m, task]
            if base.mean == 0:
                continue  # undefined relative change
            diff = base.mean - cell.mean if cell.lower_is_better else cell.mean - base.mean
            gains.append(100 * diff / abs(base.mean))
        out[m] = statistics.median(gains) if gains else None
    return out


def _digits(x: float) -> int:
    a = abs(x)
    return 2 if a >= 1 else 3 if a >= 0.01 or a == 0 else 4


def format_value(x: float, digits: int | None = None) -> str:
    """Two decimals from 1 up, three below, four below 0.01 (as the paper prints its numbers), or ``digits``."""
    return f"{x:.{_digits(x) if digits is None else digits}f}"


def _best(cells, methods, task) -> set[str]:
    present = {m: cells[m, task] for m in methods if (m, task) in cells}
    if not present:
        return set()
    lower = next(iter(present.values())).lower_is_better
    best = (min if lower else max)(c.mean for c in present.values())
    return {m for m, c in present.items() if _close(c.mean, best)}


def _escape_latex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("_", r"\_"), ("%", r"\%"), ("&", r"\&"), ("#", r"\#"), ("$", r"\$")):
        s = s.replace(a, b)
    return s


def table2(
    cells: dict[tuple[str, str], Cell],
    fmt: str = "md",
    methods: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
) -> str:
    """Table 2: methods as rows, tasks as columns, ``mean ± std``; the best per task in bold; ``n/a`` where missing.

    ``fmt``: ``"md"`` (markdown), ``"tex"`` (LaTeX tabular) or ``"csv"`` (long form: method, task, metric, mean, std, n).
    """
    tasks, methods = _tasks_methods(cells, tasks, methods)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["method", "task", "metric", "mean", "std", "n", "best"])
        for m in methods:
            for t in tasks:
                if (m, t) in cells:
                    c = cells[m, t]
                    w.writerow([m, t, c.metric, repr(c.mean), repr(c.std), c.n, int(m in _best(cells, methods, t))])
        return buf.getvalue()
    best = {t: _best(cells, methods, t) for t in tasks}
    tex = fmt == "tex"
    if fmt not in ("md", "tex"):
        raise ValueError(f"unknown table format {fmt!r} (md, tex, csv)")

    def cell(m: str, t: str) -> str:
        if (m, t) not in cells:
            return NA
        c = cells[m, t]
        mean, std = format_value(c.mean), format_value(c.std, _digits(c.mean))
        text = f"{mean} $\\pm$ {std}" if tex else f"{mean} ± {std}"
        if m in best[t]:
            text = f"\\textbf{{{text}}}" if tex else f"**{text}**"
        return text

    if tex:
        lines = [
            "\\begin{tabular}{l" + "c" * len(tasks) + "}",
            "\\toprule",
            " & ".join(["method"] + [_escape_latex(t) for t in tasks]) + " \\\\",
            "\\midrule",
        ]
        lines += [" & ".join([_escape_latex(m)] + [cell(m, t) for t in tasks]) + " \\\\" for m in methods]
        lines += ["\\bottomrule", "\\end{tabular}"]
    else:
        lines = ["| " + " | ".join(["method", *tasks]) + " |", "|" + "---|" * (len(tasks) + 1)]
        lines += ["| " + " | ".join([m] + [cell(m, t) for t in tasks]) + " |" for m in methods]
    return "\n".join(lines) + "\n"


def table3(
    cells: dict[tuple[str, str], Cell],
    fmt: str = "md",
    methods: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    baseline: str = "wrn",
) -> str:
    """Table 3: each method's median rank, % better than ``baseline`` and number of tasks (``md`` or ``csv``)."""
    tasks, methods = _tasks_methods(cells, tasks, methods)
    mr = median_ranks(cells, methods, tasks)
    imp = improvement_over(cells, baseline, methods, tasks)
    n = {m: sum((m, t) in cells for t in tasks) for m in methods}
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["method", "median_rank", f"pct_better_than_{baseline}", "n_tasks"])
        for m in methods:
            w.writerow([m, "" if mr[m] is None else mr[m], "" if imp[m] is None else round(imp[m], 4), n[m]])
        return buf.getvalue()
    if fmt != "md":
        raise ValueError(f"unknown table format {fmt!r} (md, csv)")
    lines = ["| method | median rank | % better than " + baseline + " | tasks |", "|---|---|---|---|"]
    for m in methods:
        r = NA if mr[m] is None else f"{mr[m]:.1f}"
        p = NA if imp[m] is None else f"{imp[m]:.2f}"
        lines.append(f"| {m} | {r} | {p} | {n[m]} |")
    return "\n".join(lines) + "\n"
