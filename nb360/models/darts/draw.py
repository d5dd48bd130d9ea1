"""Pictures of a DARTS genotype: each cell as a small left-to-right graph (PNG and SVG)."""

from __future__ import annotations

from pathlib import Path

from nb360.io import atomic_path
from nb360.models.darts.genotype import Cell, Genotype

__all__ = ["draw_genotype", "save_figure"]


def _draw_cell(ax, cell: Cell, concat: tuple[int, ...], title: str) -> None:
    """Inputs on the left, the nodes in a zig-zag column, the output on the right; edges between nodes curve."""
    steps = len(cell) // 2
    height = 2.6  # data units; the axes have an equal aspect, so curves computed in data units match what is drawn
    positions = {0: (0.0, 0.78 * height), 1: (0.0, 0.22 * height)}
    for node in range(steps):
        positions[node + 2] = (1.7 + 0.45 * (node % 2), (0.92 - 0.84 * node / max(steps - 1, 1)) * height)
    out = steps + 2
    positions[out] = (3.4, 0.5 * height)
    for position, (op, source) in enumerate(cell):
        target = position // 2 + 2
        (x0, y0), (x1, y1) = positions[source], positions[target]
        rad = 0.0 if source < 2 else -0.55
        ax.annotate(
            "",
            xy=(x1, y1),
            xytext=(x0, y0),
            arrowprops={"arrowstyle": "->", "color": "0.35", "shrinkA": 13, "shrinkB": 13, "connectionstyle": f"arc3,rad={rad}"},
        )
        # label at the middle of the quadratic curve (control point rad * |d| off the chord, as matplotlib's arc3)
        cx, cy = (x0 + x1) / 2 + rad * (y1 - y0), (y0 + y1) / 2 - rad * (x1 - x0)
        lx, ly = 0.25 * x0 + 0.5 * cx + 0.25 * x1, 0.25 * y0 + 0.5 * cy + 0.25 * y1
        if source < 2:  # straight edges from the inputs: label near the target, where they are apart
            lx, ly = x0 + 0.7 * (x1 - x0), y0 + 0.7 * (y1 - y0)
        ax.text(
            lx,
            ly,
            op,
            fontsize=7,
            ha="center",
            va="center",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.9},
        )
    for source in concat:
        (x0, y0), (x1, y1) = positions[source], positions[out]
        ax.annotate(
            "",
            xy=(x1, y1),
            xytext=(x0, y0),
            arrowprops={"arrowstyle": "->", "color": "0.75", "ls": "--", "shrinkA": 13, "shrinkB": 13},
        )
    for index, (x, y) in positions.items():
        label = {0: "$c_{k-2}$", 1: "$c_{k-1}$", out: "$c_{k}$"}.get(index, str(index - 2))
        colour = "#9ecae1" if index < 2 else "#fdd0a2" if index == out else "#c7e9c0"
        ax.text(x, y, label, ha="center", va="center", fontsize=9, bbox={"boxstyle": "circle,pad=0.3", "fc": colour, "ec": "0.3"})
    ax.set_title(title, fontsize=10)
    ax.set_xlim(-0.4, 3.8)
    ax.set_ylim(-0.05 * height, 1.05 * height)
    ax.set_aspect("equal")
    ax.axis("off")


def draw_genotype(genotype: Genotype, path_stem: Path) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.svg`` showing the normal (and reduction) cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [(genotype.normal, genotype.normal_concat, "normal cell")]
    if genotype.reduce is not None:
        cells.append((genotype.reduce, genotype.reduce_concat or (), "reduction cell"))
    fig, axes = plt.subplots(1, len(cells), figsize=(5.0 * len(cells), 3.8), squeeze=False)
    for ax, (cell, concat, title) in zip(axes[0], cells):
        _draw_cell(ax, cell, concat, title)
    return save_figure(fig, path_stem)


def save_figure(fig, path_stem: Path) -> list[Path]:
    """Write ``fig`` (laid out tightly) to ``<stem>.png`` and ``<stem>.svg``, each atomically, and close it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    written = []
    for suffix in (".png", ".svg"):
        target = path_stem.with_suffix(suffix)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=120)
        written.append(target)
    plt.close(fig)
    return written
