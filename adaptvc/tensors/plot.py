"""``adaptvc diff --plot``: a heat map of how much each module's update changed, layer by layer."""

from __future__ import annotations

import math
import os
import re

from ..errors import AdaptvcError
from ..peft_layout import short_module_name
from .diff import Diff

_LAYER = re.compile(r"^(?P<head>.*?)(?:^|\.)(?:layers|layer|h|blocks|block)\.(?P<index>\d+)\.(?P<kind>.+)$")




def _layer_and_kind(name: str) -> tuple[int | None, str]:
    m = _LAYER.match(name)
    if m:
        folder = name.split("/")[0] + "/" if "/" in name else ""
        return int(m.group("index")), folder + m.group("kind").removesuffix(".weight")
    return None, short_module_name(name)


def plot_values(diff: Diff) -> tuple[str, dict[str, float | None]]:
    """What the picture shows: relative change of ΔW per LoRA module, else relative change per tensor."""
    if diff.modules:
        return "relative change of ΔW = s·B·A", {m.name: m.delta_w_rel_change for m in diff.modules}
    return "relative change ‖b − a‖ / ‖a‖", {t.name: t.rel_delta for t in diff.tensors
                                           if t.status in ("modified", "unchanged")}


def plot_title(diff: Diff, labels: tuple[str, str] | None = None) -> str:
    """The picture's title: the names the user gave (``v1 → HEAD``), else short ids."""
    a, b = labels if labels is not None else (diff.a[:12], diff.b[:12])
    label, values = plot_values(diff)
    changed = sum(1 for v in values.values() if v)
    return f"{a} → {b}: {label}\n{changed} of {len(values)} changed"


def write_plot(diff: Diff, path: str | os.PathLike[str], labels: tuple[str, str] | None = None) -> None:
    """Write a PNG: layers across, module kinds down, colour = relative change (grey: not comparable)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        raise AdaptvcError("--plot needs matplotlib: pip install 'adaptvc[plot]'") from None
    label, values = plot_values(diff)
    if not values:
        raise AdaptvcError("nothing to plot: the two versions share no tensors")
    cells: dict[tuple[str, int | None], float | None] = {}
    for name, value in values.items():
        layer, kind = _layer_and_kind(name)
        cells[(kind, layer)] = value if value is None or math.isfinite(value) else None
    kinds = sorted({k for k, _ in cells})
    layers = sorted({i for _, i in cells}, key=lambda i: -1 if i is None else i)
    grid = np.full((len(kinds), len(layers)), np.nan)
    for (kind, layer), value in cells.items():
        if value is not None:
            grid[kinds.index(kind), layers.index(layer)] = value
    width = min(22.0, 3.0 + 0.35 * len(layers))
    height = min(16.0, 1.8 + 0.38 * len(kinds))
    fig, ax = plt.subplots(figsize=(max(width, 6.0), max(height, 3.0)), dpi=110)
    cmap = plt.get_cmap("viridis").with_extremes(bad="#d0d0d0")
    finite = grid[np.isfinite(grid)]
    vmax = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    image = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", cmap=cmap, interpolation="nearest", vmin=0.0,
                      vmax=vmax)
    if grid.size <= 160:  # small enough to print each value in its cell
        for (row, col), value in np.ndenumerate(grid):
            if np.isfinite(value):
                ax.text(col, row, f"{value:.2g}", ha="center", va="center", fontsize=7,
                        color="white" if value < 0.6 * vmax else "black")
    ax.set_yticks(range(len(kinds)), kinds, fontsize=8)
    step = max(1, len(layers) // 32)
    ax.set_xticks(range(0, len(layers), step), ["-" if i is None else str(i) for i in layers][::step], fontsize=8)
    ax.set_xlabel("layer")
    fig.colorbar(image, ax=ax, label=label, fraction=0.046, pad=0.02)
    ax.set_title(plot_title(diff, labels), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
