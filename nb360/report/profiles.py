"""Dolan–Moré performance profiles (Dolan & Moré 2002), as the NAS-Bench-360 paper's Figures 1–2.

For a set of methods S and tasks P, each method's ratio on a task is its score over the best score on that task:
``r = value / min over S`` for lower-is-better metrics (``max over S / value`` for higher-is-better ones), and
``ρ_s(τ) = |{p ∈ P : r_{p,s} ≤ τ}| / |P|``, the fraction of tasks on which s is within a factor τ of the best.

* **Missing entries** (a method not run on a task): ``r = ∞``, so the task never counts for that method and its
  curve stays below 1; the task still counts in ``|P|``. Tasks that no method was run on are left out of ``P``.
* **Zeros and negative scores**: ratios need positive scores, so every score is first raised to ``floor``
  (default ``1e-8``). A method scoring 0 is then the best (r = 1) and the others get very large ratios.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from nb360.io import atomic_path
from nb360.report.tables import Cell, _order

__all__ = ["POINT_2D_TASKS", "ratios", "performance_profile", "profile_csv", "plot_profile"]

#: The NAS-Bench-360 2-D point (classification) tasks of the paper's Figure 2.
POINT_2D_TASKS = ("cifar100", "spherical", "ninapro", "fsd50k")


def ratios(
    cells: dict[tuple[str, str], Cell],
    methods: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    floor: float = 1e-8,
) -> dict[str, dict[str, float]]:
    """``{method: {task: ratio}}`` over the tasks that at least one of ``methods`` was run on; ``inf`` where missing."""
    methods = _order((m for m, _ in cells), methods)
    tasks = [t for t in _order((t for _, t in cells), tasks) if any((m, t) in cells for m in methods)]
    out: dict[str, dict[str, float]] = {m: {} for m in methods}
    for t in tasks:
        present = {m: max(cells[m, t].mean, floor) for m in methods if (m, t) in cells}
        lower = cells[next(iter(present)), t].lower_is_better
        best = min(present.values()) if lower else max(present.values())
        for m in methods:
            if m not in present:
                out[m][t] = math.inf
            else:
                out[m][t] = present[m] / best if lower else best / present[m]
    return out


def performance_profile(
    cells: dict[tuple[str, str], Cell],
    methods: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    floor: float = 1e-8,
) -> tuple[list[float], dict[str, list[float]]]:
    """The step curves: the breakpoints τ (1 and every finite ratio, sorted) and each method's ρ(τ) at them.

    Between breakpoints ρ is constant (right-continuous steps: ρ(τ) holds from τ up to the next breakpoint).
    """
    r = ratios(cells, methods, tasks, floor)
    n = len(next(iter(r.values()))) if r else 0
    taus = sorted({1.0} | {x for per in r.values() for x in per.values() if math.isfinite(x)})
    curves = {m: [sum(x <= tau * (1 + 1e-12) for x in per.values()) / n if n else 0.0 for tau in taus] for m, per in r.items()}
    return taus, curves


def profile_csv(taus: list[float], curves: dict[str, list[float]]) -> str:
    """The curves as CSV: a ``tau`` column and one ρ column per method."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["tau", *curves])
    for i, tau in enumerate(taus):
        w.writerow([repr(tau), *(repr(c[i]) for c in curves.values())])
    return buf.getvalue()


def plot_profile(taus: list[float], curves: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """Plot the step curves on a log-scale τ axis to ``path`` (PNG, SVG or PDF, from the suffix) with matplotlib Agg."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    right = max(taus[-1] * 1.5, 2.0) if taus else 2.0
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colours = plt.get_cmap("tab20").colors  # 20 distinct colours; paper rows ("(paper)") dashed
    for k, (method, rho) in enumerate(curves.items()):
        style = "--" if method.endswith("(paper)") else "-"
        ax.step([*taus, right], [*rho, rho[-1] if rho else 0.0], where="post", label=method, color=colours[k % 20], ls=style)
    ax.set_xscale("log")
    ax.set_xlim(1.0, right)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("τ (ratio to the best score on a task)")
    ax.set_ylabel("ρ(τ): fraction of tasks")
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    return path
