"""A picture of a derived DenseNAS network: the stem, one box per routing block on the path, the final block."""

from __future__ import annotations

from pathlib import Path

from nb360.io import atomic_path
from nb360.models.densenas.space import Arch

__all__ = ["draw_arch"]


def draw_arch(arch: Arch, path_stem: Path) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.svg``: boxes left to right, labelled with width, stride and stacked layers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"stem\n{arch.stem} ch"]
    labels += [f"block {b}\n{c} ch, s{s}\n1 + {n} layers" for b, (c, s, n) in enumerate(arch.blocks)]
    labels.append(f"1x1\n{arch.last_dim} ch")
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(labels)), 1.8))
    for k, text in enumerate(labels):
        ax.text(k * 1.6, 0, text, ha="center", va="center", fontsize=8, bbox={"boxstyle": "round", "facecolor": "#dde8f5"})
        if k:
            ax.annotate("", xy=(k * 1.6 - 0.62, 0), xytext=((k - 1) * 1.6 + 0.62, 0), arrowprops={"arrowstyle": "->"})
    ax.set_xlim(-0.9, 1.6 * (len(labels) - 1) + 0.9)
    ax.set_ylim(-1, 1)
    ax.axis("off")
    ax.set_title(f"DenseNAS path {arch.path}" if arch.path else "DenseNAS network", fontsize=9)
    written = []
    for suffix in (".png", ".svg"):
        target = path_stem.with_suffix(suffix)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=120, bbox_inches="tight")
        written.append(target)
    plt.close(fig)
    return written
