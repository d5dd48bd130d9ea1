"""Pictures of an Auto-DeepLab architecture: the network path over the resolution levels, and the cell (PNG and SVG)."""

from __future__ import annotations

from pathlib import Path

from nb360.models.autodeeplab.architecture import Architecture
from nb360.models.darts.draw import _draw_cell, save_figure

__all__ = ["draw_architecture"]


def _draw_path(ax, arch: Architecture) -> None:
    """Layers left to right, levels top (1/4) to bottom; the lattice in grey, the chosen path in colour."""
    layers = len(arch.path)
    for layer in range(-1, layers):
        for level in range(min(layer + 2, arch.levels)):
            ax.plot(layer, level, "o", color="0.85", ms=7, zorder=1)
    xs, ys = [-1, *range(layers)], [0, *arch.path]
    ax.plot(xs, ys, "-o", color="#3182bd", lw=2, ms=8, zorder=2)
    ax.set_yticks(range(arch.levels), [f"1/{2 ** (level + 2)}" for level in range(arch.levels)])
    ax.set_xticks(range(-1, layers), ["stem", *[str(layer) for layer in range(layers)]], fontsize=7)
    ax.set_ylim(arch.levels - 0.5, -0.5)
    ax.set_xlabel("layer")
    ax.set_ylabel("resolution")
    ax.set_title("network path", fontsize=10)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def draw_architecture(arch: Architecture, path_stem: Path) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.svg``: the network path and the cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11.0, 3.8), gridspec_kw={"width_ratios": [1.2, 1.0]})
    _draw_path(axes[0], arch)
    _draw_cell(axes[1], arch.cell, tuple(range(2, arch.steps + 2)), "cell")
    return save_figure(fig, path_stem)
