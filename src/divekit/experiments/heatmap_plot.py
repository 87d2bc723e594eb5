"""A heatmap written as a PNG: a pure function of a ``(rows, columns)`` matrix and its labels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch  # noqa: E402

from divekit.plots import save_figure  # noqa: E402


def heatmap_plot(path: Path, values: torch.Tensor, *, row_labels: Sequence[str], col_labels: Sequence[str],
                 xlabel: str, colorbar_label: str, title: str = "", cmap: str = "coolwarm",
                 center: float | None = None) -> Path:
    """Colour each cell of ``values`` ``(rows, columns)``; non-finite cells are shown grey.

    ``center`` puts that value at the middle of a diverging colour map (e.g. 0 for log10 ratios),
    with the range symmetric around it.
    """
    v = values.double()
    if v.dim() != 2 or v.shape != (len(row_labels), len(col_labels)):
        raise ValueError(f"values {tuple(v.shape)} do not match {len(row_labels)} rows x {len(col_labels)} columns")
    finite = v[torch.isfinite(v)]
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.numel() else (0.0, 1.0)
    if center is not None:
        half = max(abs(vmax - center), abs(center - vmin), 1e-12)
        vmin, vmax = center - half, center + half
    colours = plt.get_cmap(cmap).with_extremes(bad="0.75")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.16 * len(col_labels) + 3), 0.34 * len(row_labels) + 1.6))
    masked = v.masked_fill(~torch.isfinite(v), float("nan")).numpy()
    im = ax.imshow(masked, aspect="auto", cmap=colours, vmin=vmin, vmax=vmax, interpolation="nearest")
    step = max(1, len(col_labels) // 25)  # at most about 25 tick labels along x
    ax.set_xticks(range(0, len(col_labels), step), [col_labels[k] for k in range(0, len(col_labels), step)],
                  fontsize=7)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
    ax.set(xlabel=xlabel, title=title)
    fig.colorbar(im, ax=ax, fraction=0.035, label=colorbar_label)
    return save_figure(fig, path)
