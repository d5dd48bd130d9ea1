"""Pictures of a DARTS genotype: each cell as a small left-to-right graph (PNG and SVG)."""

from __future__ import annotations

from pathlib import Path

from nb360.io import atomic_path
from nb360.models.darts.genotype import Cell, Genotype

__all__ = ["draw_genotype"]


def _draw_cell(ax, cell: Cell, concat: tuple[int, ...], title: str) -> None:
    steps = len(cell) // 2
    names = ["c_{k-2}", "c_{k-1}", *[str(i) for i in range(steps)]]
    positions = {0: (0.0, 0.8), 1: (0.0, 0.2)}
    for node in range(steps):  # intermediate nodes on a descending diagonal, so that edges rarely overlap
        positions[node + 2] = (1.2 + 1.1 * node, 0.95 - 0.9 * node / max(steps - 1, 1))
    positions[steps + 2] = (1.2 + 1.1 * steps, 0.5)
    for position, (op, source) in enumerate(cell):
        target = position // 2 + 2
        (x0, y0), (x1, y1) = positions[source], positions[target]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "color": "0.35", "shrinkA": 14, "shrinkB": 14})
        t = 0.62  # label near the target, where the edges into one node are apart
        ax.text(x0 + t * (x1 - x0), y0 + t * (y1 - y0), op, fontsize=7, ha="center", va="center",
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
    for source in concat:
        (x0, y0), (x1, y1) = positions[source], positions[steps + 2]
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops={"arrowstyle": "->", "color": "0.75", "ls": "--", "shrinkA": 14, "shrinkB": 14})
    colours = {0: "#9ecae1", 1: "#9ecae1", steps + 2: "#fdd0a2"}
    for index, (x, y) in positions.items():
        label = names[index] if index < steps + 2 else "c_{k}"
        ax.text(x, y, f"${label}$" if "_" in label else label, ha="center", va="center", fontsize=9,
                bbox={"boxstyle": "circle,pad=0.3", "fc": colours.get(index, "#c7e9c0"), "ec": "0.3"})
    ax.set_title(title, fontsize=10)
    ax.set_xlim(-0.5, 1.7 + 1.1 * steps)
    ax.set_ylim(0.0, 1.05)
    ax.axis("off")


def draw_genotype(genotype: Genotype, path_stem: Path) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.svg`` showing the normal (and reduction) cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [(genotype.normal, genotype.normal_concat, "normal cell")]
    if genotype.reduce is not None:
        cells.append((genotype.reduce, genotype.reduce_concat or (), "reduction cell"))
    fig, axes = plt.subplots(1, len(cells), figsize=(5.5 * len(cells), 3.2), squeeze=False)
    for ax, (cell, concat, title) in zip(axes[0], cells):
        _draw_cell(ax, cell, concat, title)
    fig.tight_layout()
    written = []
    for suffix in (".png", ".svg"):
        target = path_stem.with_suffix(suffix)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=120)
        written.append(target)
    plt.close(fig)
    return written
