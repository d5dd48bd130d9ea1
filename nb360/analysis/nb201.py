"""Cross-task analyses of the NB201 precompute, after the NAS-Bench-360 paper (its Figures 3 and 4).

Two questions the paper asks of a tabular benchmark over all 15,625 NB201 cells:

* Do tasks agree on which cells are good? :func:`rank_correlations` gives Kendall's τ-b and
  Spearman's ρ for every pair of tasks, :func:`plot_rankings` the cross-task ranking plot
  (paper Fig. 3, NB201's cross-dataset figure) and :func:`plot_correlation_matrix` a heatmap.
* Which operations help on a task? :func:`operation_importance` measures, for every edge of
  every cell, how much the score drops when that edge is set to ``none`` (paper Fig. 4; the
  exact definition is ours, see the function), :func:`plot_operation_importance` draws it.

Inputs are plain arrays: per task, one float per architecture in the space's index order
(``NaN`` = not evaluated), and a direction flag ``lower_is_better`` (Darcy's relative ℓ2:
``True``; accuracies: ``False``). Every analysis first *orients* scores so that higher is
better, which makes correlations and importances comparable across metric directions.
Nothing here imports PyTorch; scipy and matplotlib are imported when first needed so that a
command line that only opens a store stays fast. :func:`write_report` bundles everything for
a CLI.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from nb360.errors import UsageError
from nb360.io import atomic_open, atomic_path
from nb360.spaces.nb201 import OPS

__all__ = [
    "OP_NAMES",
    "CorrelationTable",
    "edge_deltas",
    "importance_summary",
    "none_substitution_index",
    "operation_importance",
    "orient",
    "plot_correlation_matrix",
    "plot_operation_importance",
    "plot_rankings",
    "rank_correlations",
    "ranks",
    "write_report",
]

#: The paper's short operation names (Fig. 4) and the NB201 operations they stand for.
OP_NAMES: dict[str, str] = {"c1": "nor_conv_1x1", "c3": "nor_conv_3x3", "skip": "skip_connect", "ap3": "avg_pool_3x3"}
NONE_CODE = OPS.index("none")
PLOT_SUFFIXES = (".png", ".svg", ".pdf")

IMPORTANCE_DEFINITION = (
    "For every architecture a and every edge e whose operation o is not 'none', one sample "
    "s(a) - s(a with e set to none), s oriented so that higher is better; pairs where either "
    "score is NaN are dropped. Positive = the operation on that edge helps."
)


# --- scores and ranks ---------------------------------------------------------------------------
def orient(scores: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """A float64 copy of ``scores`` in which higher is better (negated when ``lower_is_better``).

    Negation, not ``1 - x`` or ``1 / x``, because it is monotone for any metric and keeps
    score differences (operation importance) in the metric's own units.
    """
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"scores must be one value per architecture (1-D), got shape {arr.shape}")
    return -arr if lower_is_better else arr.copy()


def ranks(score: np.ndarray, lower_is_better: bool) -> np.ndarray:
    """Rank 1 = best; tied scores share the average of their ranks; ``NaN`` (not evaluated) stays ``NaN``.

    Ranks are over the evaluated architectures only, so the worst evaluated one has rank
    ``(~isnan(score)).sum()`` whatever the coverage.
    """
    from scipy.stats import rankdata

    oriented = orient(score, lower_is_better)
    out = np.full(oriented.shape, np.nan)
    ok = ~np.isnan(oriented)
    out[ok] = rankdata(-oriented[ok], method="average")
    return out


def _oriented(scores: Mapping[str, np.ndarray], lower_is_better: Mapping[str, bool]) -> dict[str, np.ndarray]:
    """Oriented copies of every task's scores, checked to cover the same architectures."""
    if not scores:
        raise UsageError("no tasks to analyse")
    missing = [task for task in scores if task not in lower_is_better]
    if missing:
        raise UsageError(f"no metric direction (lower_is_better) for task(s): {', '.join(missing)}")
    out = {task: orient(values, bool(lower_is_better[task])) for task, values in scores.items()}
    sizes = {task: arr.size for task, arr in out.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"every task needs one score per architecture of the same space; sizes: {sizes}")
    return out


# --- rank correlation ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CorrelationTable:
    """Pairwise rank correlations; entry ``[i, j]`` compares task ``tasks[i]`` (the row) with ``tasks[j]``.

    Without ``top`` the matrices are symmetric. With ``top`` the row task picks the
    architectures (its top fraction), so ``[i, j]`` and ``[j, i]`` generally differ.
    ``counts[i, j]`` is how many architectures entered that entry; ``NaN`` marks a pair with
    fewer than two architectures or a constant score.
    """

    tasks: tuple[str, ...]
    kendall: np.ndarray
    spearman: np.ndarray
    counts: np.ndarray
    lower_is_better: dict[str, bool]
    top: float | None = None

    def _ij(self, a: str, b: str) -> tuple[int, int]:
        try:
            return self.tasks.index(a), self.tasks.index(b)
        except ValueError:
            raise UsageError(f"unknown task in {a!r}, {b!r}; tasks: {', '.join(self.tasks)}") from None

    def tau(self, a: str, b: str) -> float:
        """Kendall τ-b of row task ``a`` with task ``b``."""
        return float(self.kendall[self._ij(a, b)])

    def rho(self, a: str, b: str) -> float:
        """Spearman ρ of row task ``a`` with task ``b``."""
        return float(self.spearman[self._ij(a, b)])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (``NaN`` becomes ``None``)."""
        return {
            "tasks": list(self.tasks),
            "lower_is_better": {t: bool(self.lower_is_better[t]) for t in self.tasks},
            "top": self.top,
            "kendall_tau_b": _nan_to_none(self.kendall),
            "spearman_rho": _nan_to_none(self.spearman),
            "counts": self.counts.astype(int).tolist(),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def to_markdown(self, digits: int = 3) -> str:
        """Three Markdown tables (τ-b, ρ, architectures per pair) with a line on how they were made."""
        lower = [t for t in self.tasks if self.lower_is_better[t]]
        scope = "architectures evaluated on both tasks"
        if self.top is not None:
            scope += f", restricted to the top {100 * self.top:g}% of the row task"
        lines = [
            f"Rank correlation between tasks over {scope}; scores oriented so that higher is better"
            + (f" (lower is better on: {', '.join(lower)})." if lower else "."),
            "",
        ]
        for title, matrix, fmt in (
            ("Kendall τ-b", self.kendall, f"{{:.{digits}f}}"),
            ("Spearman ρ", self.spearman, f"{{:.{digits}f}}"),
            ("Architectures per pair", self.counts, "{:d}"),
        ):
            lines += [f"**{title}**", "", "| | " + " | ".join(self.tasks) + " |", "|---" + "|---:" * len(self.tasks) + "|"]
            for i, task in enumerate(self.tasks):
                cells = ["–" if isinstance(v, float) and math.isnan(v) else fmt.format(v) for v in matrix[i].tolist()]
                lines.append(f"| {task} | " + " | ".join(cells) + " |")
            lines.append("")
        return "\n".join(lines)


def _nan_to_none(matrix: np.ndarray) -> list[list[float | None]]:
    return [[None if math.isnan(v) else float(v) for v in row] for row in matrix.tolist()]


def _pair_correlation(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(τ-b, ρ) of two fully evaluated vectors; ``NaN`` where undefined (n < 2 or a constant vector)."""
    from scipy.stats import kendalltau, spearmanr

    if x.size < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan, math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on near-constant input; the NaN says enough
        return float(kendalltau(x, y, variant="b")[0]), float(spearmanr(x, y)[0])


def _top_mask(x: np.ndarray, top: float) -> np.ndarray:
    """The ``ceil(top * n)`` best of ``x`` (higher is better), plus anything tied with the last of them."""
    from scipy.stats import rankdata

    k = math.ceil(top * x.size)
    return rankdata(-x, method="min") <= k


def rank_correlations(
    scores: Mapping[str, np.ndarray], lower_is_better: Mapping[str, bool], *, top: float | None = None
) -> CorrelationTable:
    """Kendall τ-b and Spearman ρ (scipy) between every pair of tasks.

    Each pair uses the architectures evaluated on both tasks (non-``NaN`` in both), after
    orienting scores so that higher is better: a positive correlation then always means the
    tasks agree on which cells are good, whatever their metrics' directions. τ-b corrects
    for ties, which the precompute has (e.g. cells that never train).

    ``top`` (a fraction in (0, 1]) asks whether tasks agree *among good cells*, the regime a
    search cares about: for entry ``[i, j]`` only the ``ceil(top * n)`` architectures that
    rank best on task ``i`` (the row) among the ``n`` evaluated on both are kept, plus any
    tied with the last one. The selection truncates the row task's range, so top-fraction
    correlations are lower than whole-space ones by construction; compare them with each
    other, not with the full table.
    """
    if top is not None and not 0.0 < float(top) <= 1.0:
        raise UsageError(f"top must be a fraction in (0, 1], got {top}")
    oriented = _oriented(scores, lower_is_better)
    tasks = tuple(oriented)
    size = len(tasks)
    tau = np.full((size, size), np.nan)
    rho = np.full((size, size), np.nan)
    counts = np.zeros((size, size), dtype=np.int64)
    for i, a in enumerate(tasks):
        for j, b in enumerate(tasks):
            if top is None and j < i:  # symmetric: mirror the upper triangle
                tau[i, j], rho[i, j], counts[i, j] = tau[j, i], rho[j, i], counts[j, i]
                continue
            joint = ~np.isnan(oriented[a]) & ~np.isnan(oriented[b])
            x, y = oriented[a][joint], oriented[b][joint]
            if top is not None and x.size:
                keep = _top_mask(x, float(top))
                x, y = x[keep], y[keep]
            counts[i, j] = x.size
            tau[i, j], rho[i, j] = _pair_correlation(x, y)
    directions = {t: bool(lower_is_better[t]) for t in tasks}
    return CorrelationTable(tasks, tau, rho, counts, directions, None if top is None else float(top))


# --- operation importance -----------------------------------------------------------------------
def _default_codes(codes: np.ndarray | None) -> np.ndarray:
    if codes is None:
        from nb360.spaces.nb201 import TOPOLOGY

        codes = TOPOLOGY.codes_array
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be (architectures, edges), got shape {codes.shape}")
    return codes


def none_substitution_index(codes: np.ndarray | None = None) -> np.ndarray:
    """``(N, E)`` int64: ``[a, e]`` is the index of architecture ``a`` with edge ``e`` set to ``none``.

    Vectorised through a mixed-radix key (``len(OPS)`` choices per edge, first edge most
    significant) and a key → index table of ``len(OPS) ** E`` entries, so it costs a few
    array operations rather than 15,625 × 6 string look-ups. ``codes`` defaults to
    ``TOPOLOGY.codes_array`` (index order of the benchmark); it must list every
    ``none``-substituted cell of its own rows, as the full space does.
    """
    codes = _default_codes(codes).astype(np.int64)
    n, edges = codes.shape
    radix = len(OPS)
    if codes.size and (codes.min() < 0 or codes.max() >= radix):
        raise ValueError(f"codes must lie in 0..{radix - 1} (indices into OPS)")
    weights = radix ** np.arange(edges - 1, -1, -1, dtype=np.int64)
    keys = codes @ weights
    table = np.full(radix**edges, -1, dtype=np.int64)
    table[keys] = np.arange(n)
    if np.unique(keys).size != n:
        raise ValueError("codes list some architecture more than once")
    sub = table[keys[:, None] - (codes - NONE_CODE) * weights[None, :]]
    if (sub < 0).any():
        raise ValueError("codes lack some cells with an edge set to none; pass the whole space")
    return sub


def edge_deltas(scores: np.ndarray, lower_is_better: bool, codes: np.ndarray | None = None) -> np.ndarray:
    """``(N, E)`` oriented score changes ``s(a) - s(a with edge e set to none)``.

    ``NaN`` where edge ``e`` of ``a`` already is ``none`` (no sample) or where either score
    is missing. Kept per edge so that callers can also ask *where* an operation helps.
    """
    codes = _default_codes(codes)
    oriented = orient(scores, lower_is_better)
    if oriented.size != codes.shape[0]:
        raise ValueError(f"{oriented.size} scores for {codes.shape[0]} architectures")
    delta = oriented[:, None] - oriented[none_substitution_index(codes)]
    delta[codes == NONE_CODE] = np.nan
    return delta


def operation_importance(scores: np.ndarray, lower_is_better: bool, codes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """One task's importance samples per operation, keyed by the short names of :data:`OP_NAMES`.

    Our definition (the paper's exact one is not published with the benchmark): for every
    architecture ``a`` and every edge ``e`` carrying operation ``o`` (not ``none``), one sample
    ``s(a) - s(a with e set to none)`` with ``s`` oriented so that higher is better. Positive
    means ``o`` on that edge does better than cutting it, for accuracies and errors alike;
    the distribution over all such ``(a, e)`` pairs is ``o``'s importance. Pairs with a
    missing score are dropped. Samples are in architecture-then-edge order, in the metric's
    units (so magnitudes compare across operations of one task, not across tasks).
    """
    codes = _default_codes(codes)
    delta = edge_deltas(scores, lower_is_better, codes)
    out = {}
    for short, name in OP_NAMES.items():
        samples = delta[codes == OPS.index(name)]
        out[short] = samples[~np.isnan(samples)]
    return out


def importance_summary(importance: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per operation: ``n``, ``median``, ``mean``, ``q25``, ``q75``, ``iqr``, ``frac_positive``, ``frac_negative``.

    Both fractions are reported because many samples are exactly zero in synthetic or
    dead-edge cases (an edge whose input never reaches the output changes nothing).
    """
    out: dict[str, dict[str, float]] = {}
    for op, samples in importance.items():
        x = np.asarray(samples, dtype=np.float64)
        if x.size == 0:
            out[op] = {k: math.nan for k in ("median", "mean", "q25", "q75", "iqr", "frac_positive", "frac_negative")}
            out[op]["n"] = 0
            continue
        q25, median, q75 = np.percentile(x, [25, 50, 75])
        out[op] = {
            "n": int(x.size),
            "median": float(median),
            "mean": float(x.mean()),
            "q25": float(q25),
            "q75": float(q75),
            "iqr": float(q75 - q25),
            "frac_positive": float((x > 0).mean()),
            "frac_negative": float((x < 0).mean()),
        }
    return out


# --- plots --------------------------------------------------------------------------------------
def _plot_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise UsageError(f"plot {str(path)!r}: the file name must end in one of {', '.join(PLOT_SUFFIXES)}")
    return path


def _figure(width: float, height: float) -> Any:
    """A matplotlib Figure on an Agg canvas, without pyplot: no global backend or figure state to leak."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format=path.suffix[1:].lower())
    return path


def plot_rankings(
    scores: Mapping[str, np.ndarray], lower_is_better: Mapping[str, bool], reference: str, path: str | Path
) -> Path:
    """The cross-task ranking plot (paper Fig. 3): x = rank on ``reference``, y = rank on each other task.

    For every other task, the architectures evaluated on both it and ``reference`` are
    ranked within that common set (rank 1 = best, ties averaged) and drawn as small,
    translucent points, one colour per task, with its Kendall τ-b in the legend; the
    reference itself is the diagonal. Points hugging the diagonal mean agreement; a cloud
    filling the square means none. Scatter points are rasterised so that SVGs stay small.
    """
    path = _plot_path(path)
    oriented = _oriented(scores, lower_is_better)
    if reference not in oriented:
        raise UsageError(f"unknown reference task {reference!r}; tasks: {', '.join(oriented)}")
    ref = oriented[reference]
    fig = _figure(7.0, 4.8)
    ax = fig.add_subplot()
    import matplotlib

    colours = [c["color"] for c in matplotlib.rcParams["axes.prop_cycle"]]
    others = [t for t in oriented if t != reference]
    for k, task in enumerate(others):
        joint = ~np.isnan(ref) & ~np.isnan(oriented[task])
        x, y = ref[joint], oriented[task][joint]
        tau, _ = _pair_correlation(x, y)
        label = f"{task} (τ = {tau:.3f})"
        colour = colours[(k + 1) % len(colours)]
        ax.scatter(ranks(x, False), ranks(y, False), s=2, alpha=0.25, linewidths=0, rasterized=True, color=colour, label=label)
    n_ref = int((~np.isnan(ref)).sum())
    ax.plot([1, n_ref], [1, n_ref], color=colours[0], lw=1.5, label=f"{reference} (reference)")
    ax.set_xlabel(f"architecture ranking on {reference} (1 = best)")
    ax.set_ylabel("architecture ranking on each task")
    ax.set_xlim(0, n_ref + 1)
    ax.set_ylim(0, None)
    legend = ax.legend(loc="upper left", markerscale=5, frameon=True, fontsize="small")
    for handle in legend.legend_handles:
        handle.set_alpha(1.0)
    return _save(fig, path)


def plot_correlation_matrix(table: CorrelationTable, path: str | Path) -> Path:
    """Two heatmaps (Kendall τ-b, Spearman ρ) of a :class:`CorrelationTable`, every cell annotated.

    The colour scale is fixed to [-1, 1] (diverging, white at 0) so that figures of
    different task sets compare at a glance. With a top-fraction table, rows are the tasks
    whose top architectures were kept.
    """
    path = _plot_path(path)
    size = len(table.tasks)
    side = 1.2 + 0.65 * size
    fig = _figure(2 * side + 1.0, side)
    axes = fig.subplots(1, 2)
    image = None
    for ax, matrix, title in ((axes[0], table.kendall, "Kendall τ-b"), (axes[1], table.spearman, "Spearman ρ")):
        image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1.0, vmax=1.0)
        ax.set_xticks(range(size), table.tasks, rotation=45, ha="right")
        ax.set_yticks(range(size), table.tasks)
        ax.set_title(title if table.top is None else f"{title}, top {100 * table.top:g}% of row task")
        for i in range(size):
            for j in range(size):
                value = matrix[i, j]
                text = "–" if math.isnan(value) else f"{value:.2f}"
                colour = "white" if not math.isnan(value) and abs(value) > 0.6 else "black"
                ax.text(j, i, text, ha="center", va="center", color=colour, fontsize="small")
    fig.colorbar(image, ax=list(axes), shrink=0.8)
    return _save(fig, path)


def plot_operation_importance(per_task: Mapping[str, Mapping[str, np.ndarray]], path: str | Path) -> Path:
    """The operation-importance figure (paper Fig. 4): one panel per task, one box per operation.

    Boxes span the quartiles with the median as a line and the mean as a marker; whiskers
    reach the 5th and 95th percentiles (outliers are not drawn: there are ~18,750 samples
    per operation). A dashed line marks zero: a box above it means the operation usually
    beats cutting the edge. Each panel has its own y scale (tasks have different metrics).
    """
    path = _plot_path(path)
    tasks = list(per_task)
    if not tasks:
        raise UsageError("no tasks to plot")
    ncols = min(len(tasks), 3)
    nrows = math.ceil(len(tasks) / ncols)
    fig = _figure(3.2 * ncols + 0.4, 3.0 * nrows + 0.3)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for k, (ax, task) in enumerate(zip(axes, tasks)):
        ops = list(per_task[task])
        data = [np.asarray(per_task[task][op], dtype=np.float64) for op in ops]
        ax.boxplot(
            [x if x.size else np.array([np.nan]) for x in data], whis=(5, 95), showfliers=False, showmeans=True, widths=0.6
        )
        ax.set_xticks(range(1, len(ops) + 1), [f"{op}\nn={x.size:,}" for op, x in zip(ops, data)])
        if not any(x.size for x in data):
            ax.text(
                0.5,
                0.5,
                "no evaluated pair of cells\nthat differ by one edge",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="0.4",
            )
        ax.axhline(0.0, color="black", lw=0.8, ls="--")
        ax.set_title(task)
        if k % ncols == 0:
            ax.set_ylabel("oriented score change\n(op − none)")
    for ax in axes[len(tasks) :]:
        ax.set_visible(False)
    return _save(fig, path)


# --- everything at once -------------------------------------------------------------------------
def write_report(
    scores: Mapping[str, np.ndarray],
    lower_is_better: Mapping[str, bool],
    out_dir: str | Path,
    reference: str | None = None,
    *,
    top: float | None = None,
    codes: np.ndarray | None = None,
    image_format: str = "png",
) -> list[Path]:
    """Write every analysis of ``scores`` under ``out_dir`` and return the paths written.

    Files: ``correlations.json``/``.md`` (whole space), with ``top`` also
    ``correlations_top{pct}.json``/``.md``; ``rankings.<fmt>`` against ``reference`` (default:
    the first task); ``correlation.<fmt>``; ``op_importance.json`` (the definition and, per
    task, :func:`importance_summary`) and ``op_importance.<fmt>``. ``image_format`` is
    ``png``, ``svg`` or ``pdf``.
    """
    out_dir = Path(out_dir)
    suffix = "." + image_format.lower().lstrip(".")
    if suffix not in PLOT_SUFFIXES:
        raise UsageError(f"image format {image_format!r}: choose one of {', '.join(s[1:] for s in PLOT_SUFFIXES)}")
    if not scores:
        raise UsageError("no tasks to analyse")
    reference = reference if reference is not None else next(iter(scores))
    if reference not in scores:
        raise UsageError(f"unknown reference task {reference!r}; tasks: {', '.join(scores)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def text(name: str, content: str) -> None:
        with atomic_open(out_dir / name, "w", encoding="utf-8") as f:
            f.write(content + "\n")
        written.append(out_dir / name)

    table = rank_correlations(scores, lower_is_better)
    text("correlations.json", table.to_json())
    text("correlations.md", table.to_markdown())
    if top is not None:
        top_table = rank_correlations(scores, lower_is_better, top=top)
        text(f"correlations_top{100 * top:g}.json", top_table.to_json())
        text(f"correlations_top{100 * top:g}.md", top_table.to_markdown())
    written.append(plot_rankings(scores, lower_is_better, reference, out_dir / f"rankings{suffix}"))
    written.append(plot_correlation_matrix(table, out_dir / f"correlation{suffix}"))
    importance = {task: operation_importance(values, bool(lower_is_better[task]), codes) for task, values in scores.items()}
    summary = {
        "definition": IMPORTANCE_DEFINITION,
        "ops": OP_NAMES,
        "tasks": {
            task: {"lower_is_better": bool(lower_is_better[task]), "summary": importance_summary(imp)}
            for task, imp in importance.items()
        },
    }
    text("op_importance.json", json.dumps(_jsonable(summary), indent=2, allow_nan=False))
    written.append(plot_operation_importance(importance, out_dir / f"op_importance{suffix}"))
    return written


def _jsonable(value: Any) -> Any:
    """``value`` with every float ``NaN`` replaced by ``None`` (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
